"""Pyro-docs-style models through every method, each against its exact answer (reference_models.py).

Tolerances: MAP and Laplace are deterministic, so they meet the optimiser's tolerance (1e-6 posterior sds in float64,
1e-4 in float32, where the default stopping rule is 1e-8 and 1e-4) or, where the posterior is Gaussian, Laplace's
mean, sd and log evidence to float precision. NUTS draws are held to 4 Monte Carlo standard errors from their own
ESS: sd/sqrt(ESS) for means, and sd*sqrt((kurtosis - 1)/(4 ESS)) for sds (the kurtosis exact where known). SVI starts
at the Laplace solution; on Gaussian posteriors it must stay within its stochastic-gradient noise: 0.1 sd, 2.5 times the
0.02-0.04 measured over four seeds with 8 particles (a guide that did not start at the exact Gaussian, or a wrong
ELBO, misses by far more).
"""

import functools
import math

import numpy as np
import pytest
import torch

import pyebm

import reference_models as R

NAMES = list(R.BUILDERS)


@functools.cache
def case(name: str) -> R.Case:
    return R.BUILDERS[name]()


def case_has_data(name: str) -> bool:
    return name != "ising"  # the lattice has no data arguments; its dtype is its own


def _args(c: R.Case, dtype):
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) else a for a in c.args)


def _np(x):
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)


WITH_MODE = [n for n in NAMES if n not in ("eight_schools", "mixture")]
DTYPES = [(n, d) for n in WITH_MODE for d in ("float64", "float32") if d == "float64" or case_has_data(n)]


@pytest.mark.parametrize("name,dtype", [(n, getattr(torch, d)) for n, d in DTYPES], ids=[f"{n}-{d}" for n, d in DTYPES])
def test_map_is_the_exact_mode(name, dtype):
    c = case(name)
    post = pyebm.infer(c.model, *_args(c, dtype), method="map", seed=0, progress=False, **c.kwargs)
    tol = 1e-6 if dtype == torch.float64 else 1e-4
    for site, mode in c.mode.items():
        err = np.abs(_np(post.mode[site]) - mode) / np.asarray(c.sd[site])
        assert err.max() <= tol, (site, err.max())
        assert post.mode[site].dtype == dtype or not post.mode[site].is_floating_point()


GAUSSIAN = [n for n in NAMES if n in ("linear_regression", "random_intercepts", "smooth_regression")]


@pytest.mark.parametrize("name", GAUSSIAN)
def test_laplace_is_exact_on_gaussian_posteriors(name):
    c = case(name)
    post = pyebm.infer(c.model, *c.args, method="laplace", seed=0, progress=False, **c.kwargs)
    for site in c.mean:
        np.testing.assert_allclose(_np(post.mean()[site]), c.mean[site], atol=1e-8 * np.max(c.sd[site]), rtol=0)
        np.testing.assert_allclose(_np(post.std()[site]), c.sd[site], rtol=1e-8, atol=0)
    if c.log_evidence is not None:
        assert post.log_evidence == pytest.approx(c.log_evidence, abs=1e-8)


def test_laplace_mode_of_constrained_sites_is_the_unconstrained_density_mode():
    # Laplace fits at the mode of the density of log(rate) (Jacobian included): a / b for Gamma(a, b), not (a - 1) / b
    c = case("gamma_poisson")
    post = pyebm.infer(c.model, *c.args, method="laplace", seed=0, progress=False)
    assert float(post.mode["rate"]) == pytest.approx(c.mean["rate"], rel=1e-10)
    a = (c.mean["rate"] / c.sd["rate"]) ** 2  # Gamma shape: the curvature of -log p(log rate) at its mode is a
    assert float(post.approximation.covariance[0, 0]) == pytest.approx(1 / a, rel=1e-8)


def test_enumerated_and_hand_marginalised_mixtures_are_the_same_model():
    x = case("mixture").args[0]
    init = {"locs": torch.tensor([-1.0, 1.0], dtype=x.dtype)}  # the same start: the labels do not swap
    for method in (pyebm.MAP(init=init), pyebm.Laplace(init=init)):
        a = pyebm.infer(R.mixture, x, method=method, seed=0, progress=False)
        b = pyebm.infer(R.mixture_by_hand, x, method=method, seed=0, progress=False)
        torch.testing.assert_close(a.mode["locs"], b.mode["locs"], atol=1e-9, rtol=0)
        if method.name == "laplace":
            assert a.log_evidence == pytest.approx(b.log_evidence, abs=1e-9)
            torch.testing.assert_close(a.std()["locs"], b.std()["locs"], atol=1e-9, rtol=0)
    # the mode sets each assignment to its most probable value given the continuous mode
    locs = a.mode["locs"]
    log_w = torch.log(torch.tensor(R.MIX_WEIGHTS, dtype=x.dtype)) - 0.5 * (x[:, None] - locs) ** 2
    assert torch.equal(a.mode["z"], log_w.argmax(1))


def assert_within_mc_error(post, c: R.Case, sites=None):
    from pyebm.diagnostics import ess_bulk

    for site in sites or c.mean:
        draws = _np(post.draws(group_by_chain=True)[site])
        draws = draws.reshape(draws.shape[0], draws.shape[1], -1)
        mean, sd = np.ravel(c.mean[site]), np.ravel(c.sd[site])
        ess = np.atleast_1d(ess_bulk(draws))
        got_mean, got_sd = draws.mean((0, 1)), draws.std((0, 1), ddof=1)
        # a column that never changed (an assignment always 0): its probability must be below 10 / draws, else
        # that run of identical draws would have had chance below e^-10
        constant = np.isnan(ess)
        n = draws.shape[0] * draws.shape[1]
        assert (np.abs(got_mean - mean)[constant] <= 10 / n).all(), (site, got_mean[constant], mean[constant])
        # a proportion near 0 or 1 has a skewed sampling distribution: its variance gets 1/ESS added (as the
        # "plus four" interval for proportions does), which covers a few rare draws but not a wrong probability
        var = sd**2 + (1 / ess if c.discrete.get(site) else 0.0)
        close = (np.abs(got_mean - mean) <= 4 * np.sqrt(var / ess) + 1e-12) | constant
        assert close.all(), (site, got_mean, mean, ess)
        if c.discrete.get(site):  # a 0/1 site's sd is sqrt(p (1 - p)): its mean says it all
            continue
        dev2 = (draws - draws.mean((0, 1))) ** 2
        kurt = c.kurtosis.get(site, (dev2**2).mean((0, 1)) / np.maximum(dev2.mean((0, 1)) ** 2, 1e-300))
        ess2 = np.atleast_1d(ess_bulk(dev2))
        se = sd * np.sqrt((np.asarray(kurt) - 1) / (4 * ess2))
        ok = (np.abs(got_sd - sd) <= 4 * se + 1e-12) | constant
        assert ok.all(), (site, got_sd, sd, ess2)


SAMPLED = [n for n in NAMES if n != "mixture"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SAMPLED + ["mixture"])
def test_nuts_matches_the_exact_posterior(name):
    c = case(name)
    # the mixture's swapped labels are a local mode (1e-6 of the mass) where a chain can stick: start both near the
    # main one
    init = {"locs": torch.tensor([-1.0, 1.0], dtype=torch.float64)} if name == "mixture" else None
    method = pyebm.NUTS(num_samples=600, warmup_steps=400, num_chains=2, target_accept=0.9, init=init)
    post = pyebm.infer(c.model, *c.args, method=method, seed=1, progress=False, **c.kwargs)
    assert_within_mc_error(post, c)


@pytest.mark.slow
@pytest.mark.parametrize("name", GAUSSIAN)
def test_svi_from_laplace_stays_at_the_exact_gaussian(name):
    c = case(name)
    # stochastic-gradient noise shrinks with the learning rate and the particles: measured 0.01-0.04 sd here
    post = pyebm.infer(c.model, *c.args, method=pyebm.SVI(steps=500, lr=0.005, num_particles=8), seed=0,
                       progress=False)
    assert post.diagnostics["start"] == "laplace"
    for site in c.mean:
        sd = np.asarray(c.sd[site])
        assert (np.abs(_np(post.mean()[site]) - c.mean[site]) <= 0.1 * sd).all()
        assert (np.abs(_np(post.std()[site]) / sd - 1) <= 0.1).all()


@pytest.mark.slow
def test_svi_sums_enumerated_sites_out_and_recovers_them():
    c = case("mixture")
    post = pyebm.infer(c.model, *c.args, method=pyebm.SVI(steps=300), seed=0, progress=False)
    sd = c.sd["locs"]
    assert (np.abs(_np(post.mean()["locs"]) - c.mean["locs"]) <= 0.1 * sd).all()
    z = _np(post.mean()["z"])
    assert np.abs(z - c.mean["z"]).max() < 0.05  # from 1000 draws of the Gaussian guide: 3 standard errors at most


def test_centred_eight_schools_has_no_mode_and_says_why():
    sigma, y = torch.tensor(R.SCHOOLS_SIGMA), torch.tensor(R.SCHOOLS_Y)
    for model, method in [(R.eight_schools_centred, "map"), (R.eight_schools_centred, "laplace"),
                          (R.eight_schools, "map")]:
        with pytest.raises(pyebm.InferenceError, match="no interior mode: site 'tau'.*nuts"):
            pyebm.infer(model, sigma, y, method=method, seed=0, progress=False)


def test_summary_statistics_of_a_deterministic_site_follow_the_draws():
    c = case("linear_regression")
    post = pyebm.infer(c.model, *c.args, method="laplace", seed=0, progress=False)
    draws = post.sample(500, seed=3)
    torch.testing.assert_close(draws["mean"], draws["w"] @ c.args[0].T)
    assert list(draws) == ["w", "mean"]  # the model's order
    m = post.mean()["mean"]  # moments of deterministic sites come from draws: within their MC error
    exact = c.args[0] @ torch.tensor(c.mean["w"])
    assert (m - exact).abs().max() < 4 * post.std()["mean"].max() / math.sqrt(post.extra_moment_draws)
