"""The NumPyro backend against the exact answers and against the Pyro backend: one contract, two backends."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import pyebm

pytest.importorskip("numpyro")

PRECISION = [[2.0, 0.6], [0.6, 1.0]]
MEAN = [1.0, -2.0]


def gaussian_model(backend):
    if backend == "pyro":
        e = pyebm.energies.Gaussian(torch.tensor(MEAN, dtype=torch.float64), torch.tensor(PRECISION, dtype=torch.float64))
        return pyebm.model_from_energy(e, {"x": 2}), pyebm.infer, e
    import jax.numpy as jnp

    import pyebm.numpyro as pn

    e = pn.energies.Gaussian(jnp.array(MEAN), jnp.array(PRECISION))
    return pn.model_from_energy(e, {"x": 2}), pn.infer, e


def ess_tol(post, sd):
    return 4 * sd / np.sqrt(np.array(list(post.diagnostics["ess_bulk"].values())))


# each method's tolerance, as in tests/infer/test_api.py: optimiser tolerance, SVI noise (0.1 sd), MCMC 4 SE
TOL = {"map": lambda p, sd: 1e-5, "laplace": lambda p, sd: 1e-5, "svi": lambda p, sd: 0.1 * sd,
       "nuts": ess_tol, "hmc": ess_tol}
METHODS = {"map": "map", "laplace": "laplace", "svi": "svi",
           "nuts": pyebm.NUTS(num_samples=500, warmup_steps=300), "hmc": pyebm.HMC(num_samples=500, warmup_steps=300)}


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_contract_backend_by_method(backend, name, x64, float64):
    model, infer, e = gaussian_model(backend)
    post = infer(model, method=METHODS[name], seed=0, progress=False)
    mean, sd = np.array(MEAN), np.sqrt(np.diag(np.linalg.inv(np.array(PRECISION))))
    assert post.method == name and isinstance(post, pyebm.Posterior)
    assert (np.abs(np.asarray(post.mean()["x"]) - mean) <= TOL[name](post, sd)).all()
    assert np.asarray(post.sample(4, seed=0)["x"]).shape == (4, 2)
    assert post.to_arviz(num_samples=20).posterior["x"].dims[:2] == ("chain", "draw")
    assert list(post.summary(num_samples=100).index) == ["x[0]", "x[1]"]
    if name == "laplace":
        assert post.log_evidence == pytest.approx(e.log_normalizer(), abs=1e-8)
        np.testing.assert_allclose(np.asarray(post.std()["x"]), sd, atol=1e-8)


def a_method(module, name):
    return module.MAP if name == "map" else module.Laplace


@pytest.mark.parametrize("method", ["map", "laplace"])
def test_map_and_laplace_agree_across_backends(method, x64, float64):
    import pyebm.numpyro as pn

    banana_t = pyebm.model_from_energy(pyebm.energies.Banana(s=1.2, b=0.7), {"x": 2})
    banana_j = pn.model_from_energy(pn.energies.Banana(s=1.2, b=0.7), {"x": 2})
    # both optimisers to gradient 1e-9: the modes, and the curvature there, then agree to ~1e-7
    a = pyebm.infer(banana_t, method=a_method(pyebm, method)(tol=1e-9),
                    seed=0, progress=False)
    b = pn.infer(banana_j, method=a_method(pn, method)(tol=1e-9), seed=0, progress=False)
    np.testing.assert_allclose(np.asarray(b.mode["x"]), a.mode["x"].numpy(), atol=1e-7)
    if method == "laplace":
        np.testing.assert_allclose(np.asarray(b.approximation.covariance), a.approximation.covariance.numpy(),
                                   atol=1e-7)
        assert b.log_evidence == pytest.approx(a.log_evidence, abs=1e-8)
    table = pyebm.compare(a, b, labels=["pyro", "numpyro"])  # one table holds both backends
    assert table.shape[1] == 2


def test_a_pyro_method_object_configures_the_numpyro_backend(x64):
    import pyebm.numpyro as pn

    model, _, _ = gaussian_model("numpyro")
    post = pn.infer(model, method=pyebm.NUTS(num_samples=50, warmup_steps=50, num_chains=1), seed=0, progress=False)
    assert np.asarray(post.approximation.draws["x"]).shape == (1, 50, 2)
    assert post.diagnostics["num_gradient_evaluations"] > 0


@pytest.mark.parametrize("name", ["Gaussian", "Banana", "DoubleWell", "Ring", "Funnel", "GaussianMixture"])
def test_zoo_energies_agree_across_backends(name, x64):
    import jax.numpy as jnp

    import pyebm.numpyro as pn

    args = {"Gaussian": (MEAN, PRECISION), "GaussianMixture": ([[-1.0, 0.0], [2.0, 1.0]], 0.8)}.get(name, ())
    tz = getattr(pyebm.energies, name)(*[torch.tensor(a, dtype=torch.float64) for a in args])
    jz = getattr(pn.energies, name)(*[jnp.array(a) for a in args])
    x = np.random.default_rng(0).normal(size=(5, 3, 2))
    np.testing.assert_allclose(np.asarray(jz(jnp.array(x))), tz.double()(torch.tensor(x)).numpy(), rtol=1e-12)
    assert jz.log_normalizer(0.7) == tz.log_normalizer(0.7)


def test_nuts_on_the_banana_matches_the_exact_moments(x64):
    import pyebm.numpyro as pn

    e = pn.energies.Banana(s=1.0, b=0.5)
    post = pn.infer(pn.model_from_energy(e, {"x": 2}), method=pn.NUTS(num_samples=1000, warmup_steps=500), seed=1,
                    progress=False)
    ess = np.array(list(post.diagnostics["ess_bulk"].values()))
    sd = np.sqrt(np.diag(np.asarray(e.covariance())))
    assert (np.abs(np.asarray(post.mean()["x"]) - np.asarray(e.mean())) <= 4 * sd / np.sqrt(ess)).all()


def test_temper_scales_only_energy_factors(x64):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer.util import log_density

    import pyebm.numpyro as pn

    def model():
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        pn.energy_factor("energy", z**2 + 1.0, beta=2.0)
        numpyro.factor("plain", -0.25)

    params = {"z": jnp.array(0.7)}
    base = log_density(model, (), {}, params)[0]
    hot = log_density(pn.temper(model, 0.5), (), {}, params)[0]
    prior = float(dist.Normal(0.0, 1.0).log_prob(0.7))
    assert float(base) == pytest.approx(prior - 2.0 * 1.49 - 0.25)
    assert float(hot) == pytest.approx(prior - 1.0 * 1.49 - 0.25)


def test_numpyro_energy_factor_bad_input(x64):
    import jax.numpy as jnp

    import pyebm.numpyro as pn

    with pytest.raises(ValueError, match="scalar is due"):
        pn.energy_factor("e", jnp.ones(3))
    with pytest.raises(ValueError, match="not finite"):
        pn.energy_factor("e", jnp.array(float("nan")))
    with pytest.raises(TypeError, match="floating"):
        pn.energy_factor("e", jnp.array(3))
    with pytest.raises(ValueError, match="negative"):
        pn.energy_factor("e", jnp.array(1.0), beta=-1.0)
    with pytest.raises(ValueError, match="valid methods"):
        pn.infer(pn.model_from_energy(lambda x: (x**2).sum(), {"x": 2}), method="gibbs")
    with pytest.raises(ValueError, match="hessian='ggn' reads the observation sites of a Pyro trace"):
        pn.infer(pn.model_from_energy(lambda x: (x**2).sum(), {"x": 2}), method=pyebm.Laplace(hessian="ggn"))


def test_numpyro_free_energy(x64):
    import jax.numpy as jnp

    import pyebm.numpyro as pn

    x = jnp.array(np.random.default_rng(0).normal(size=(6, 2)) * 3)
    centres = jnp.array([[0.0, 0.0], [2.0, 1.0], [-2.0, 1.5]])
    torch_km = pyebm.energies.KMeans(torch.tensor(np.asarray(centres)))
    for beta in [0.5, 2.0, float("inf")]:
        f = pn.free_energy(lambda c: jnp.sum((x - c[:, None]) ** 2, -1), centres, beta)
        np.testing.assert_allclose(np.asarray(f), torch_km.free_energy(torch.tensor(np.asarray(x)), beta).numpy(),
                                   rtol=1e-12)
    m = jnp.array(np.random.default_rng(1).normal(size=(4, 2)))
    A = jnp.array(PRECISION)
    quad = lambda z: 0.5 * jnp.sum(((z - m) @ A) * (z - m), -1)  # noqa: E731
    beta = 3.0
    exact = -(math.log(2 * math.pi / beta) - 0.5 * math.log(float(jnp.linalg.det(A)))) / beta
    np.testing.assert_allclose(np.asarray(pn.free_energy(quad, {"z": 2}, beta)), exact, atol=1e-9)
    np.testing.assert_allclose(np.asarray(pn.free_energy(quad, {"z": 2}, float("inf"))), 0.0, atol=1e-12)


def test_import_pyebm_does_not_import_jax():
    code = "import sys, pyebm; assert 'jax' not in sys.modules and 'numpyro' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_extra_is_named_in_the_import_error():
    code = ("import sys; sys.modules['jax'] = None\n"
            "try:\n    import pyebm.numpyro\nexcept ImportError as e:\n    assert \"pyro-ebm[numpyro]\" in str(e), e\n"
            "else:\n    raise SystemExit('imported without jax')")
    subprocess.run([sys.executable, "-c", code], check=True)


ZOO = {  # mild versions where NUTS is reliable: a funnel of scale 1, overlapping mixture components
    "Gaussian": ((MEAN, PRECISION), {}),
    "Banana": ((), {"s": 1.0, "b": 0.5}),
    "DoubleWell": ((), {"dim": 1, "height": 1.0}),
    "Ring": ((), {"radius": 2.0, "width": 0.3}),
    "Funnel": ((), {"dim": 2, "scale": 1.0}),
    "GaussianMixture": (([[-1.0, 0.0], [1.0, 0.5]],), {"scale": 0.8}),
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_energy_by_nuts_on_both_backends(name, backend, x64, float64):
    # means within 4 Monte Carlo standard errors sd/sqrt(bulk ESS); sds within 4 standard errors of a sample sd,
    # sd*sqrt((kurtosis - 1) / (4 ESS)), with the sample kurtosis and the ESS of the squared deviations (heavy
    # tails, as the funnel's x, make the sd far noisier than a Gaussian's)
    import jax.numpy as jnp

    import pyebm.numpyro as pn
    from pyebm.diagnostics import ess_bulk

    args, kwargs = ZOO[name]
    if backend == "pyro":
        e = getattr(pyebm.energies, name)(*[torch.tensor(a) for a in args], **kwargs)
        post = pyebm.infer(pyebm.model_from_energy(e, {"x": e.dim}),
                           method=pyebm.NUTS(num_samples=1000, warmup_steps=400), seed=0, progress=False)
    else:
        e = getattr(pn.energies, name)(*[jnp.array(a) for a in args], **kwargs)
        post = pn.infer(pn.model_from_energy(e, {"x": e.dim}), method=pn.NUTS(num_samples=1000, warmup_steps=400),
                        seed=0, progress=False)
    mean, sd = np.asarray(e.mean()), np.sqrt(np.diag(np.asarray(e.covariance())))
    ess = np.array(list(post.diagnostics["ess_bulk"].values()))
    assert (np.abs(np.asarray(post.mean()["x"]) - mean) <= 4 * sd / np.sqrt(ess)).all()
    draws = np.asarray(post.approximation.draws["x"])  # (chain, draw, dim)
    dev2 = (draws - draws.mean((0, 1))) ** 2
    kurtosis = (dev2**2).mean((0, 1)) / dev2.mean((0, 1)) ** 2
    se_sd = sd * np.sqrt((kurtosis - 1) / (4 * ess_bulk(dev2)))
    assert (np.abs(np.asarray(post.std()["x"]) - sd) <= 4 * se_sd).all()
