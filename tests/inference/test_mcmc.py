import math
import sys
import warnings

import pyro.distributions as dist
import pytest
import torch

import pyebm

from conftest import assert_within_mc_error, gaussian_2d

mcmc = sys.modules["pyebm.inference.mcmc"]


@pytest.mark.parametrize("method", [pyebm.NUTS(num_samples=500, warmup_steps=300),
                                    pyebm.HMC(num_samples=500, warmup_steps=300)])
def test_mcmc_matches_the_gaussian_within_mc_error(method, float64):
    e = gaussian_2d()
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=method, seed=0, progress=False)
    assert_within_mc_error(post, e.mu, e.covariance().diagonal().sqrt())
    assert post.mode is None and post.log_evidence is None
    assert post.approximation.draws["x"].shape == (2, 500, 2)
    assert set(post.diagnostics) >= {"r_hat", "ess_bulk", "divergences", "acceptance_rate"}


@pytest.mark.slow
def test_nuts_on_the_banana_against_its_exact_moments(float64):
    e = pyebm.energies.Banana(s=1.0, b=0.5)
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=pyebm.NUTS(num_samples=800, warmup_steps=400),
                       seed=1, progress=False)
    # x2's sd check uses the Gaussian formula for the sd's standard error: the banana's x2 is skewed
    # (excess kurtosis), so only the means and x1's sd are held to 4 standard errors here.
    ess = torch.tensor(list(post.diagnostics["ess_bulk"].values()))
    sd = e.covariance().diagonal().sqrt()
    assert ((post.mean()["x"] - e.mean()).abs() <= 4 * sd / ess.sqrt()).all()
    assert abs(float(post.std()["x"][0] - sd[0])) <= 4 * sd[0] / math.sqrt(2 * ess[0])
    assert abs(float(post.std()["x"][1] / sd[1] - 1)) <= 0.15


@pytest.mark.parametrize("wrap", [False, True], ids=["direct-potential", "traced-model"])
def test_positive_site_through_its_transform(wrap, float64):
    # prior Gamma(3, 2), energy s: posterior Gamma(3, 3), mean 1, sd sqrt(3)/3
    model = pyebm.model_from_energy(lambda s: s, {"s": ()}, prior={"s": dist.Gamma(3.0, 2.0)})
    if wrap:  # temper(β=1) leaves the density alone but forces Pyro's traced path
        model = pyebm.temper(model, 1.0)
    post = pyebm.infer(model, method=pyebm.NUTS(num_samples=600, warmup_steps=300), seed=2, progress=False)
    assert (post.approximation.draws["s"] > 0).all()
    assert_within_mc_error(post, torch.tensor(1.0), torch.tensor(math.sqrt(3) / 3), name="s")


def test_tempered_nuts_samples_the_tempered_density(float64):
    e = gaussian_2d()
    beta = 4.0
    model = pyebm.temper(pyebm.model_from_energy(e, {"x": 2}), beta)
    post = pyebm.infer(model, method=pyebm.NUTS(num_samples=500, warmup_steps=300), seed=3, progress=False)
    assert_within_mc_error(post, e.mu, e.covariance(beta).diagonal().sqrt())


def _fake_posterior(draws, divergences=None):
    return mcmc.posterior_from_draws("nuts", {"x": draws}, divergences or [[] for _ in range(draws.shape[0])],
                                     [0.8] * draws.shape[0])


def test_disagreeing_chains_warn_with_r_hat():
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([torch.randn(400, 1, generator=g), torch.randn(400, 1, generator=g) + 3.0])
    with pytest.warns(pyebm.ConvergenceWarning, match="r_hat"):
        post = _fake_posterior(draws)
    assert post.diagnostics["r_hat"]["x[0]"] > 1.5


def test_divergences_warn_and_are_recorded():
    g = torch.Generator().manual_seed(0)
    draws = torch.randn(2, 400, 1, generator=g)
    with pytest.warns(pyebm.ConvergenceWarning, match="3 divergent"):
        post = _fake_posterior(draws, [[5, 17], [100]])
    assert post.diagnostics["sample_stats"]["diverging"].sum() == 3
    assert post.diagnostics["sample_stats"]["diverging"][0, 17]


def test_mixed_chains_do_not_warn():
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fake_posterior(torch.randn(2, 400, 1, generator=g))


def test_stuck_chain_is_an_inference_error():
    draws = torch.stack([torch.randn(100, 1), torch.full((100, 1), 0.3)])
    with pytest.raises(pyebm.InferenceError, match="chain 1 never moved"):
        _fake_posterior(draws)


def test_non_finite_energy_during_sampling_is_a_divergence_not_a_nan(float64):
    # finite where NUTS starts (|x| < 2) but NaN beyond |x| = 3: proposals there are rejected and counted
    def energy(x):
        return torch.where(x.abs().max() < 3, 0.01 * (x**2).sum(), torch.tensor(float("nan")))

    model = pyebm.model_from_energy(energy, {"x": 2})
    with pytest.warns(pyebm.ConvergenceWarning, match="divergent"):
        post = pyebm.infer(model, method=pyebm.NUTS(num_samples=200, warmup_steps=200, num_chains=1), seed=0,
                           progress=False)
    x = post.approximation.draws["x"]
    assert torch.isfinite(x).all() and (x.abs() < 3).all()
    assert post.diagnostics["num_divergences"] > 0


def test_non_finite_energy_at_the_start_is_a_value_error():
    model = pyebm.model_from_energy(lambda x: torch.log(-(x**2).sum()), {"x": 2})
    with pytest.raises(ValueError, match="NaN"):
        pyebm.infer(model, method=pyebm.NUTS(num_samples=10, warmup_steps=10, num_chains=1), seed=0, progress=False)
