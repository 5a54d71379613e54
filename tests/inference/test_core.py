"""The core under every method: the minimiser, the curvature structures and their one positive-definiteness check,
the method table shared by both backends, and the array seam that lets one algorithm serve torch and JAX."""

import math
import subprocess
import sys

import numpy as np
import pyro
import pytest
import torch

import pyebm
from pyebm.inference.curvature import DenseCovariance, Diagonal, positive_definite
from pyebm.inference.minimize import minimize
from pyebm.ops import TORCH

from conftest import gaussian_2d

PRECISION = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)


def quadratic(offset=0.0, scale=1.0, mu=None):
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) if mu is None else mu
    return lambda u: scale * 0.5 * (((u - mu) @ PRECISION) * (u - mu)).sum(-1) + offset


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e8])
def test_the_minimum_does_not_depend_on_an_additive_constant(offset, float64):
    f = quadratic(offset)
    res = minimize(TORCH.value_and_grad(f), torch.zeros(1, 3), ops=TORCH, hessian=lambda u: TORCH.hessian(f, u))
    assert res.converged
    torch.testing.assert_close(res.u[0], torch.tensor([1.0, -2.0, 0.5]), atol=1e-9, rtol=0)
    # the stopping rule is the Newton decrement, in posterior standard deviations: exact here
    assert res.distance[0] <= 1e-8


def test_float32_with_a_large_constant_still_reaches_the_mode():
    # at 1e5 the energy has ~2 decimals of float32 resolution left: the line search must decide on derivatives
    mu = torch.tensor([1.0, -2.0, 0.5])
    f = lambda u: 0.5 * (((u - mu) @ PRECISION.float()) * (u - mu)).sum(-1) + 1e5  # noqa: E731
    res = minimize(TORCH.value_and_grad(f), torch.zeros(1, 3), ops=TORCH, hessian=lambda u: TORCH.hessian(f, u))
    assert res.converged
    sd = torch.linalg.inv(PRECISION).diagonal().sqrt().float()
    assert ((res.u[0] - mu).abs() / sd).max() < 1e-4


def test_rows_converge_on_their_own():
    # 50 independent quadratics with curvatures over six decades, one batch: each row meets its own tolerance
    torch.manual_seed(0)
    curv = 10 ** torch.linspace(-3, 3, 50, dtype=torch.float64)
    target = torch.randn(50, 2, dtype=torch.float64)
    f = lambda u: 0.5 * (curv[:, None] * (u - target) ** 2).sum(-1)  # noqa: E731
    res = minimize(TORCH.value_and_grad(f), torch.zeros(50, 2, dtype=torch.float64), ops=TORCH,
                   hessian=lambda u: TORCH.hessian(f, u))
    assert (res.status == "converged").all()
    assert (((res.u - target) * curv[:, None].sqrt()).abs() < 1e-8).all()  # in each row's own sds


def test_statuses_name_what_went_wrong(float64):
    vg = TORCH.value_and_grad(lambda u: -u.sum(-1))  # linear: unbounded below
    assert minimize(vg, torch.zeros(1, 2), ops=TORCH).status[0] == "unbounded"
    nan = TORCH.value_and_grad(lambda u: (u.sum(-1) * float("nan")))
    assert minimize(nan, torch.zeros(1, 2), ops=TORCH).status[0] == "nonfinite"
    saddle = lambda u: u[:, 0] ** 2 - u[:, 1] ** 2  # noqa: E731 - started on the saddle point
    res = minimize(TORCH.value_and_grad(saddle), torch.zeros(1, 2), ops=TORCH,
                   hessian=lambda u: TORCH.hessian(saddle, u))
    assert res.status[0] == "indefinite"


def _structures(ops, array):
    L = np.linalg.cholesky(np.linalg.inv(PRECISION.numpy()))
    return {"dense precision": positive_definite(array(PRECISION.numpy()), ops),
            "dense covariance": DenseCovariance(array(L), ops),
            "diagonal": Diagonal(array(1.0 / PRECISION.numpy().diagonal()), ops)}


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_structures_agree_with_their_dense_formulas(backend, float64, x64):
    if backend == "torch":
        ops, array = TORCH, lambda a: torch.as_tensor(a, dtype=torch.float64)
    else:
        import jax.numpy as jnp

        from pyebm.numpyro.ops import JAX as ops
        array = jnp.asarray  # noqa: E731
    v = array(np.array([0.3, -1.0, 2.0]))
    for name, s in _structures(ops, array).items():
        cov = np.asarray(ops.to_numpy(s.covariance()))
        want = np.linalg.inv(PRECISION.numpy()) if name != "diagonal" else np.diag(1.0 / PRECISION.numpy().diagonal())
        np.testing.assert_allclose(cov, want, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(ops.to_numpy(s.variance()), np.diag(want), atol=1e-12, err_msg=name)
        np.testing.assert_allclose(float(ops.to_numpy(s.logdet_precision())), -np.linalg.slogdet(want)[1], atol=1e-10)
        np.testing.assert_allclose(ops.to_numpy(s.solve(v)), want @ ops.to_numpy(v), atol=1e-12, err_msg=name)
        eps = ops.normal(0, (200_000, 3), v)
        draws = ops.to_numpy(s.sample(eps))
        # sample covariance of 2e5 draws: standard error of each entry below 0.004 here; 5 of them
        np.testing.assert_allclose(np.cov(draws.T), want, atol=0.02, err_msg=name)


def test_one_positive_definite_check_names_the_cause(float64):
    with pytest.raises(pyebm.InferenceError, match="saddle"):
        positive_definite(torch.tensor([[1.0, 0.0], [0.0, -2.0]]), TORCH)
    with pytest.raises(pyebm.InferenceError, match="zero to round-off.*flat direction"):
        positive_definite(torch.tensor([[2.0, -2.0], [-2.0, 2.0]]), TORCH)  # Cholesky succeeds by round-off
    # badly scaled or with a tiny curvature, yet well determined: accepted, in float32 too
    for H in (torch.diag(torch.tensor([1e10, 1.0])), torch.tensor([[1e-8]])):
        s = positive_definite(H.float(), TORCH)
        torch.testing.assert_close(s.variance(), 1 / H.diagonal().float(), rtol=1e-5, atol=0)


def test_laplace_of_a_tiny_curvature_in_float32():
    # E = 1e-8 x^2 / 2: sd 1e4, condition number 1; float32 must not call it flat
    model = pyebm.model_from_energy(lambda x: 0.5e-8 * (x**2).sum(), {"x": 1})
    post = pyebm.infer(model, method="laplace", seed=0, progress=False)
    assert float(post.std()["x"][0]) == pytest.approx(1e4, rel=1e-4)


def test_diagonal_laplace_never_builds_the_dense_hessian():
    # D = 20,000: a dense float64 Hessian would take 3.2 GB; the diagonal one stays far below (peak RSS in a fresh
    # process, before and after). The exact diagonal is the energy's curvature 1/scale^2.
    code = """
import resource, torch, pyebm
torch.set_default_dtype(torch.float64)
D = 20_000
scale = torch.linspace(0.5, 2.0, D)
model = pyebm.model_from_energy(lambda x: 0.5 * ((x - 1.0) ** 2 / scale**2).sum(-1), {"x": D})
pyebm.infer(pyebm.model_from_energy(lambda x: (x**2).sum(), {"x": 2}), method="laplace", progress=False)  # warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
post = pyebm.infer(model, method=pyebm.Laplace(hessian="diag"), seed=0, progress=False)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
assert float((post.std()["x"] - scale).abs().max()) < 1e-12
print(grown)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 1000  # MB; the dense Hessian alone is 3052 MB


@pytest.mark.slow
def test_diagonal_laplace_at_a_hundred_thousand_dimensions():
    torch.set_default_dtype(torch.float64)
    try:
        D = 100_000
        scale = torch.linspace(0.5, 2.0, D)
        model = pyebm.model_from_energy(lambda x: 0.5 * ((x - 1.0) ** 2 / scale**2).sum(-1), {"x": D})
        post = pyebm.infer(model, method=pyebm.Laplace(hessian="diag"), seed=0, progress=False)
        torch.testing.assert_close(post.std()["x"], scale, atol=1e-12, rtol=0)
        exact = 0.5 * D * math.log(2 * math.pi) + float(torch.log(scale).sum())
        assert post.log_evidence == pytest.approx(exact, rel=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_a_method_object_serves_both_backends_or_refuses_by_name(x64):
    import pyebm.numpyro as pn

    assert pn.MAP is pyebm.MAP and pn.NUTS is pyebm.NUTS  # one class per method, both backends
    model = pn.model_from_energy(lambda x: (x**2).sum(), {"x": 2})
    with pytest.raises(ValueError, match="optimizer is a Pyro optimiser"):
        pn.infer(model, method=pyebm.SVI(optimizer=pyro.optim.Adam({"lr": 0.1})), progress=False)
    with pytest.raises(ValueError, match="vectorize_particles"):
        pn.infer(model, method=pyebm.SVI(vectorize_particles=True), progress=False)
    with pytest.raises(ValueError, match="init must be a dict"):
        pn.infer(model, method=pyebm.MAP(init=pyro.infer.autoguide.init_to_median), progress=False)
    with pytest.raises(ValueError, match="chain_method='vectorized'"):
        pyebm.infer(pyebm.model_from_energy(lambda x: (x**2).sum(), {"x": 2}),
                    method=pyebm.NUTS(chain_method="vectorized"), progress=False)
    # a setting both honour is kept, not dropped: Adam reaches the same mode on both
    post = pn.infer(model, method=pyebm.MAP(optimizer="adam", lr=0.1, steps=300), seed=0, progress=False)
    assert post.diagnostics["status"] == "converged"
    np.testing.assert_allclose(np.asarray(post.mode["x"]), 0.0, atol=1e-7)


def test_settings_are_validated_where_declared():
    for bad in [dict(steps=0), dict(tol=-1.0), dict(lr=0.0), dict(optimizer="sgd")]:
        with pytest.raises(ValueError, match="MAP"):
            pyebm.MAP(**bad)
    for bad in [dict(num_samples=0), dict(num_chains=0), dict(target_accept=1.0), dict(max_tree_depth=0),
                dict(warmup_steps=-1)]:
        with pytest.raises(ValueError, match="NUTS"):
            pyebm.NUTS(**bad)
    for bad in [dict(step_size=0.0), dict(step_size=-1.0), dict(step_size=1e-300)]:
        with pytest.raises(ValueError, match="HMC"):
            pyebm.HMC(**bad)
    for bad in [dict(lr=-0.1), dict(lr_decay=0.0), dict(num_particles=0), dict(steps=0)]:
        with pytest.raises(ValueError, match="SVI"):
            pyebm.SVI(**bad)
    with pytest.raises(TypeError, match="has no setting.*'num_sample'"):
        pyebm.NUTS(num_sample=10)


def test_pyro_and_numpyro_spellings_are_accepted():
    nuts = pyebm.NUTS(num_warmup=123, target_accept_prob=0.9, dense_mass=True)
    assert (nuts.warmup_steps, nuts.target_accept, nuts.full_mass) == (123, 0.9, True)
    svi = pyebm.SVI(num_steps=17, optim=None)
    assert svi.steps == 17
    with pytest.raises(TypeError, match="same setting"):
        pyebm.NUTS(num_warmup=10, warmup_steps=20)


def test_one_minimiser_serves_both_backends(float64, x64):
    import jax.numpy as jnp

    from pyebm.numpyro.ops import JAX

    mu = jnp.array([1.0, -2.0, 0.5])
    A = jnp.asarray(PRECISION.numpy())
    f = lambda u: 0.5 * jnp.sum(((u - mu) @ A) * (u - mu), -1)  # noqa: E731
    res = minimize(JAX.value_and_grad(f), jnp.zeros((1, 3)), ops=JAX, hessian=lambda u: JAX.hessian(f, u))
    t = minimize(TORCH.value_and_grad(quadratic()), torch.zeros(1, 3), ops=TORCH,
                 hessian=lambda u: TORCH.hessian(quadratic(), u))
    assert res.converged and t.converged
    np.testing.assert_allclose(np.asarray(res.u), t.u.numpy(), atol=1e-10)
    np.testing.assert_allclose(np.asarray(res.hessian[0]), PRECISION.numpy(), atol=1e-10)


def test_the_direct_potential_equals_the_traced_one(float64):
    # the energy model's closed form (no Pyro trace) and Pyro's initialize_model agree on U, its gradient, and the
    # Jacobian term of a constrained site
    from pyebm.inference.pyro_backend import energy_potential, traced_potential

    e = gaussian_2d()
    model = pyebm.model_from_energy(lambda x, s: e(x) + s, {"x": 2, "s": ()},
                                    prior={"s": pyro.distributions.Gamma(3.0, 2.0)})
    direct = energy_potential(model.direct, {}, None)
    traced = traced_potential(model, (), {}, None, False, "test")
    u = torch.tensor([[0.3, -0.7, 0.2], [1.0, 2.0, -1.5]])
    for jac in (True, False):
        fd, gd = direct.value_and_grad(jac)(u)
        ft, gt = traced.value_and_grad(jac)(u)
        torch.testing.assert_close(fd, ft)
        torch.testing.assert_close(gd, gt)
    assert direct.batched and not traced.batched


def test_dense_precision_solves_many_vectors_as_one_matrix_solve(float64):
    from pyebm.inference.curvature import DensePrecision, factor
    from pyebm.ops import TORCH

    a = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    H = a @ a.T + 5 * torch.eye(5)
    structure = DensePrecision(H, factor(H[None], TORCH)[0][0], TORCH)
    v = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(structure.solve(v), torch.linalg.solve(H, v[..., None])[..., 0])
    torch.testing.assert_close(structure.solve(v[0, 0]), torch.linalg.solve(H, v[0, 0]))


def _masked_model(y):
    scale = pyro.sample("scale", pyro.distributions.LogNormal(0.0, 1.0))
    loc = pyro.sample("loc", pyro.distributions.Normal(torch.zeros(3), 2.0).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", pyro.distributions.Normal(loc[0] + loc[1], scale), obs=y)
    with pyro.poutine.mask(mask=torch.tensor([True, False])):
        pyro.sample("w", pyro.distributions.Normal(torch.zeros(2), 1.0))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_a_given_point_builds_the_potential_pyro_initialize_model_builds(float64):
    # init giving every latent site takes one trace of the model there instead of initialize_model's search for a
    # valid point: the same layout (a constrained site, a masked element held out), point, energies and gradients
    from pyebm.inference.pyro_backend import traced_potential

    y = torch.tensor([0.3, -1.2, 0.8])
    point = {"scale": torch.tensor(0.7), "loc": torch.tensor([0.1, -0.4, 2.0]), "w": torch.tensor([0.5, 9.0])}
    given = traced_potential(_masked_model, (y,), {}, point, False, "test")
    general = traced_potential(_masked_model, (y,), {}, point, True, "test")  # jit: initialize_model's path
    assert given.names() == general.names() == ["scale", "loc", "w"] and given.dim == general.dim == 5
    torch.testing.assert_close(given.init, general.init)
    u = given.init[None] + torch.tensor([[0.2, -0.1, 0.3, 0.0, 0.5]])
    for jac in (True, False):
        for a, b in zip(given.value_and_grad(jac)(u), general.value_and_grad(jac)(u)):
            torch.testing.assert_close(a, b)
    torch.testing.assert_close(given.constrain(given.init)["w"], torch.tensor([0.5, 9.0]))  # the masked one held


def test_a_given_point_where_the_energy_is_not_finite_says_which_site(float64):
    from pyebm.inference.pyro_backend import traced_potential

    point = {"scale": torch.tensor(-1.0), "loc": torch.zeros(3), "w": torch.zeros(2)}
    with pytest.raises(ValueError, match="not finite at the given point.*'scale'"):
        traced_potential(_masked_model, (torch.zeros(3),), {}, point, False, "test")


def test_a_given_point_of_the_wrong_shape_says_so(float64):
    # a whole point whose value breaks the model (x @ w with w of 4 elements) and one the model would broadcast
    point = {"scale": torch.tensor(0.7), "loc": torch.zeros(3), "w": torch.zeros(2)}
    for site, wrong in (("loc", torch.zeros(4)), ("w", torch.zeros(1))):
        with pytest.raises(ValueError, match=rf"init\['{site}'\] has shape \({wrong.numel()},\)"):
            pyebm.infer(_masked_model, torch.zeros(3), method=pyebm.Laplace(at={**point, site: wrong}), progress=False)
