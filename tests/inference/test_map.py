import pyro.distributions as dist
import pytest
import torch

import pyebm

from conftest import gaussian_2d


def test_map_mode_is_the_gaussian_mean(float64):
    e = gaussian_2d()
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method="map", seed=0, progress=False)
    torch.testing.assert_close(post.mode["x"], e.mu, atol=1e-7, rtol=0)
    assert post.diagnostics["converged"]
    assert post.diagnostics["iterations"] < 20  # L-BFGS on a quadratic: a handful of iterations
    torch.testing.assert_close(post.std()["x"], torch.zeros(2))
    assert post.log_evidence is None
    assert post.sample(5)["x"].shape == (5, 2)


def test_map_with_adam_reaches_the_same_mode(float64):
    e = gaussian_2d()
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=pyebm.MAP(optimizer="adam", steps=5000, lr=0.05),
                       seed=0, progress=False)
    torch.testing.assert_close(post.mode["x"], e.mu, atol=1e-5, rtol=0)


def gamma_model(a=3.0, b=2.0, c=1.0):
    """Prior Gamma(a, b), energy c*s: posterior Gamma(a, b + c), constrained mode (a-1)/(b+c)."""
    return pyebm.model_from_energy(lambda s: c * s, {"s": ()}, prior={"s": dist.Gamma(a, b)})


def test_map_on_a_positive_site_is_the_constrained_mode(float64):
    post = pyebm.infer(gamma_model(), method="map", seed=0, progress=False)
    torch.testing.assert_close(post.mode["s"], torch.tensor(2.0 / 3.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("energy", [lambda x: -x.sum(), lambda x: -(x**2).sum() - 0.1 * x.sum()])
@pytest.mark.parametrize("method", ["map", "laplace"])
def test_energy_unbounded_below_raises(energy, method, float64):
    model = pyebm.model_from_energy(energy, {"x": 2})
    with pytest.raises(pyebm.InferenceError, match="unbounded below"):
        pyebm.infer(model, method=method, seed=0, progress=False)


def test_non_convergence_raises_with_advice(float64):
    model = pyebm.model_from_energy(pyebm.energies.Banana(b=2.0), {"x": 2})
    # one iteration from the origin reaches x2 = -1, a unit away from the mode (0, -2)
    with pytest.raises(pyebm.InferenceError, match="did not converge in 1 iteration .*Raise `steps`"):
        pyebm.infer(model, method=pyebm.MAP(steps=1), seed=0, progress=False)


def test_non_finite_energy_at_start_is_a_value_error():
    model = pyebm.model_from_energy(lambda x: torch.log(-x.abs() - 1).sum(), {"x": 2})
    with pytest.raises(ValueError, match="NaN"):
        pyebm.infer(model, method="map", seed=0, progress=False)
