import math

import pyro.distributions as dist
import pytest
import torch

import pyebm

from conftest import gaussian_2d


@pytest.mark.parametrize("beta", [1.0, 0.3, 4.0])
def test_laplace_is_exact_on_a_tempered_gaussian(beta, float64):
    e = gaussian_2d()
    model = pyebm.temper(pyebm.model_from_energy(e, {"x": 2}), beta)
    post = pyebm.infer(model, method="laplace", seed=0, progress=False)
    # constant Hessian: mean, covariance and log Z are exact up to optimiser tolerance / float precision
    torch.testing.assert_close(post.mean()["x"], e.mu, atol=1e-7, rtol=0)
    torch.testing.assert_close(post.approximation.covariance, e.covariance(beta), atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(post.std()["x"], e.covariance(beta).diagonal().sqrt(), atol=1e-10, rtol=1e-8)
    assert post.log_evidence == pytest.approx(e.log_normalizer(beta), abs=1e-9)


def test_laplace_under_temper_context_manager(float64):
    e = gaussian_2d()
    with pyebm.temper(beta=2.0):
        post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method="laplace", seed=0, progress=False)
    assert post.log_evidence == pytest.approx(e.log_normalizer(2.0), abs=1e-9)


def test_laplace_draws_match_its_gaussian(float64):
    e = gaussian_2d()
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method="laplace", seed=0, progress=False)
    n = 40000
    x = post.sample(n, seed=1)["x"]
    sd = e.covariance().diagonal().sqrt()
    # independent draws: the sample mean's error is sd/sqrt(n); 4 standard errors
    assert ((x.mean(0) - e.mu).abs() <= 4 * sd / math.sqrt(n)).all()
    # sample variance's standard error is var*sqrt(2/n) for a Gaussian
    assert ((x.var(0) - sd**2).abs() <= 4 * sd**2 * math.sqrt(2 / n)).all()


def test_diag_hessian_is_the_diagonal_of_the_full_one(float64):
    e = gaussian_2d()
    model = pyebm.model_from_energy(e, {"x": 2})
    full = pyebm.infer(model, method="laplace", seed=0, progress=False)
    diag = pyebm.infer(model, method=pyebm.Laplace(hessian="diag"), seed=0, progress=False)
    # a diagonal Laplace keeps its precision as the diagonal vector (never a D x D matrix)
    torch.testing.assert_close(diag.diagnostics["hessian"], full.diagnostics["hessian"].diagonal())
    torch.testing.assert_close(full.diagnostics["hessian"], e.precision, atol=1e-10, rtol=0)
    torch.testing.assert_close(diag.std()["x"], e.precision.diagonal().rsqrt(), atol=1e-10, rtol=0)


def test_unknown_hessian_is_an_error():
    with pytest.raises(ValueError, match="unknown hessian"):
        pyebm.infer(pyebm.model_from_energy(gaussian_2d(), {"x": 2}), method=pyebm.Laplace(hessian="kfac"),
                    progress=False)


def test_laplace_on_a_positive_site_works_in_log_space(float64):
    # prior Gamma(a, b), energy c*s. In u = log s the potential is U(u) = -a u + (b+c) e^u (+ const):
    # minimum at s = a/(b+c), curvature U'' = a there, so Var(u) = 1/a.
    a, b, c = 3.0, 2.0, 1.0
    model = pyebm.model_from_energy(lambda s: c * s, {"s": ()}, prior={"s": dist.Gamma(a, b)})
    post = pyebm.infer(model, method="laplace", seed=0, progress=False)
    torch.testing.assert_close(post.mode["s"], torch.tensor(a / (b + c)), atol=1e-7, rtol=0)
    torch.testing.assert_close(post.approximation.covariance, torch.tensor([[1 / a]]), atol=1e-8, rtol=0)
    assert (post.sample(1000, seed=0)["s"] > 0).all()


def test_saddle_point_raises():
    # E = (x0^2 - 1)^2 + x1^2 has a saddle at the origin; started there, the gradient is zero
    energy = lambda x: (x[0] ** 2 - 1) ** 2 + x[1] ** 2  # noqa: E731
    model = pyebm.model_from_energy(energy, {"x": 2})
    method = pyebm.Laplace(init={"x": torch.zeros(2)})
    with pytest.raises(pyebm.InferenceError, match="not positive definite"):
        pyebm.infer(model, method=method, seed=0, progress=False)


def test_flat_direction_raises(float64):
    model = pyebm.model_from_energy(lambda x: (x[0] - x[1]) ** 2, {"x": 2})
    with pytest.raises(pyebm.InferenceError, match="not positive definite|did not converge"):
        pyebm.infer(model, method="laplace", seed=0, progress=False)


def test_a_float32_hessian_is_judged_as_given_not_by_float32_pivots():
    """Pairs of strongly coupled coordinates (as a network's weights are), eigenvalues 1 and 1e3 to 1e5 along their
    sum and difference: positive definite, but some float32 Cholesky pivots keep less than the 10 D eps round-off
    bound of their diagonal. The matrix is accepted, its variances within 1e-2 of float64's (float32's eps times the
    condition number, 1.2e-2, bounds the error; the entries' own round-off, 3e-3, is what remains). A singular
    float32 matrix is still refused, and the message points to float64."""
    from pyebm.inference.curvature import factor, positive_definite
    from pyebm.ops import TORCH

    big = torch.logspace(3, 5, 100, dtype=torch.float64)
    a, b = (big + 1) / 2, (big - 1) / 2
    H64 = torch.block_diag(*[torch.stack([torch.stack([p, q]), torch.stack([q, p])]) for p, q in zip(a, b)])
    H = H64.float()
    L, ok = TORCH.cholesky(H)
    assert bool(ok) and bool((torch.diagonal(L) ** 2 < 10 * 200 * torch.finfo(torch.float32).eps
                              * torch.diagonal(H)).any())
    assert factor(H, TORCH)[1].all()
    precision = positive_definite(H, TORCH)
    torch.testing.assert_close(precision.variance().double(), torch.diagonal(torch.linalg.inv(H64)), rtol=1e-2,
                               atol=0)
    singular = H64.clone()
    singular[:2, :2] = 5e4
    with pytest.raises(pyebm.InferenceError, match="singular.*compute in float64"):
        positive_definite(singular.float(), TORCH)


@pytest.mark.parametrize("hessian", ["full", "diag"])
def test_post_hoc_laplace_takes_the_curvature_where_it_is_told(hessian, float64):
    e = gaussian_2d()
    model = pyebm.model_from_energy(e, {"x": 2})
    fitted = pyebm.infer(model, method=pyebm.Laplace(hessian=hessian), seed=0, progress=False)
    post = pyebm.infer(model, method=pyebm.Laplace(at={"x": e.mu}, hessian=hessian), seed=0, progress=False)
    assert post.diagnostics["iterations"] == 0 and post.diagnostics["distance"] < 1e-12
    torch.testing.assert_close(post.mean()["x"], e.mu, atol=0, rtol=0)
    torch.testing.assert_close(post.std()["x"], fitted.std()["x"], atol=1e-12, rtol=1e-10)
    assert post.log_evidence == pytest.approx(fitted.log_evidence, abs=1e-9)


def test_post_hoc_laplace_off_the_mode_warns_with_the_newton_decrement(float64):
    # for a quadratic energy the decrement at x is exactly the Mahalanobis distance to the mode, and the evidence
    # is low by exactly half its square
    e = gaussian_2d()
    x = e.mu + torch.tensor([0.3, -0.2])
    with pytest.warns(pyebm.ConvergenceWarning, match="posterior sds from stationary"):
        post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=pyebm.Laplace(at={"x": x}), seed=0,
                           progress=False)
    d = x - e.mu
    distance = float((d @ e.precision @ d).sqrt())
    assert post.diagnostics["distance"] == pytest.approx(distance, rel=1e-10)
    assert post.log_evidence == pytest.approx(e.log_normalizer(1.0) - 0.5 * distance**2, abs=1e-9)
    torch.testing.assert_close(post.mean()["x"], x, atol=0, rtol=0)


def test_post_hoc_laplace_needs_the_whole_point():
    model = pyebm.model_from_energy(gaussian_2d(torch.float32), {"x": 2, "y": 1})
    with pytest.raises(ValueError, match=r"no value for site\(s\) \['y'\]"):
        pyebm.infer(model, method=pyebm.Laplace(at={"x": torch.zeros(2)}), seed=0, progress=False)
    with pytest.raises(ValueError, match="either at= .* or init="):
        pyebm.Laplace(at={"x": torch.zeros(2)}, init={"x": torch.zeros(2)})
