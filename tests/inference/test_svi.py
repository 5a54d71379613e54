import pyro
import pyro.distributions as dist
import pytest
import torch

import pyebm

from conftest import gaussian_2d

# Tolerance: with the learning rate decayed to 1% of its start, the final iterates jitter at the
# stochastic-gradient noise floor; over 5 seeds the worst error seen was 0.034 sd, so 0.1 sd is
# three times that, while a wrong scale or a missed correlation is off by far more.
TOL_SD = 0.1


def test_full_rank_svi_recovers_the_gaussian(float64):
    e = gaussian_2d()
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method="svi", seed=0, progress=False)
    sd = e.covariance().diagonal().sqrt()
    assert ((post.mean()["x"] - e.mu).abs() <= TOL_SD * sd).all()
    assert ((post.std()["x"] / sd - 1).abs() <= TOL_SD).all()
    # the correlation is captured by the full-rank guide
    cov = post.approximation.covariance
    exact = e.covariance()
    corr = lambda c: c[0, 1] / (c[0, 0] * c[1, 1]).sqrt()  # noqa: E731
    assert abs(float(corr(cov) - corr(exact))) <= TOL_SD
    assert post.log_evidence is None
    # the ELBO is a lower bound on log Z (up to its Monte Carlo noise, averaged over the last 10% of steps)
    assert post.diagnostics["final_elbo"] <= e.log_normalizer() + 0.05
    assert post.diagnostics["guide"] == "multivariate_normal"


def test_auto_guide_is_diagonal_above_the_threshold(float64):
    from pyebm.inference.svi import FULL_RANK_MAX_DIM

    D = FULL_RANK_MAX_DIM + 1
    e = pyebm.energies.Gaussian(torch.zeros(D), torch.eye(D))
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": D}), method=pyebm.SVI(steps=5), seed=0, progress=False)
    assert post.diagnostics["guide"] == "normal"


def test_diagonal_guide_on_an_independent_gaussian(float64):
    e = pyebm.energies.Gaussian(torch.tensor([0.5, -1.0]), torch.diag(torch.tensor([4.0, 0.25])))
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=pyebm.SVI(guide="normal"), seed=1,
                       progress=False)
    sd = torch.tensor([0.5, 2.0])
    assert ((post.mean()["x"] - e.mu).abs() <= TOL_SD * sd).all()
    assert ((post.std()["x"] / sd - 1).abs() <= TOL_SD).all()


def test_user_guide_is_used_and_sampled(float64):
    def guide():
        loc = pyro.param("loc", torch.zeros(2))
        pyro.sample("x", dist.Normal(loc, 0.5).to_event(1))

    e = pyebm.energies.Gaussian(torch.tensor([1.0, 2.0]), torch.eye(2) * 4.0)  # sd 0.5: the guide is exact
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=pyebm.SVI(guide=guide, steps=1500),
                       seed=0, progress=False)
    # means are averages of 4000 guide draws of sd 0.5: standard error 0.008; plus the optimiser's jitter
    torch.testing.assert_close(post.mean()["x"], e.mu, atol=0.05, rtol=0)
    assert post.sample(3, seed=0)["x"].shape == (3, 2)


def test_unknown_guide_is_an_error():
    with pytest.raises(ValueError, match="unknown guide"):
        pyebm.infer(pyebm.model_from_energy(gaussian_2d(), {"x": 2}), method=pyebm.SVI(guide="flow"),
                    progress=False)
