"""ChEES-HMC: many chains as one batch, against exact answers, reproducible, refusing what it cannot vectorise."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyebm
from pyebm.examples import gp_pois_regr
from pyebm.inference.chees import _restart_stuck, halton, mass_windows

from conftest import assert_within_mc_error


def correlated_gaussian(dim=10, seed=0):
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.normal(size=(dim, dim)))
    precision = torch.tensor((q * np.logspace(-1, 1, dim)) @ q.T)
    return pyebm.energies.Gaussian(torch.tensor(g.normal(size=dim)), precision)


FAST = dict(num_chains=16, warmup_steps=200, num_samples=300)


def test_chees_matches_a_correlated_gaussian_within_mc_error(float64):
    e = correlated_gaussian()
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 10}), method=pyebm.ChEES(**FAST), seed=0, progress=False)
    # 4 Monte Carlo standard errors from each element's own bulk ESS (10 elements x 2 tests: a false alarm
    # has probability < 1e-3)
    assert_within_mc_error(post, e.mu, e.covariance().diagonal().sqrt())
    assert post.approximation.draws["x"].shape == (16, 300, 10)
    d = post.diagnostics
    assert d["num_divergences"] == 0 and max(d["r_hat"].values()) < 1.01
    # the adapted trajectory is of the order of the widest scale (sd up to sqrt(10)) and the step below the
    # narrowest (sd 1/sqrt(10)): ChEES found the geometry, not a fixed guess
    assert 1.0 < d["trajectory_length"] < 20.0 and 0.05 < d["step_size"] < 0.7
    assert d["num_gradient_evaluations"] > 16 * 500


def test_chees_on_the_banana_against_its_exact_moments(float64):
    e = pyebm.energies.Banana(s=1.0, b=0.5)
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=pyebm.ChEES(num_chains=32, num_samples=400),
                       seed=1, progress=False)
    ess = torch.tensor(list(post.diagnostics["ess_bulk"].values()))
    sd = e.covariance().diagonal().sqrt()
    # means within 4 Monte Carlo se; x2 is skewed, so its sd gets a relative tolerance (its se is not Gaussian)
    assert ((post.mean()["x"] - e.mean()).abs() <= 4 * sd / ess.sqrt()).all()
    assert abs(float(post.std()["x"][0] - sd[0])) <= 4 * sd[0] / math.sqrt(2 * ess[0])
    assert abs(float(post.std()["x"][1] / sd[1] - 1)) <= 0.05


@pytest.mark.slow
def test_chees_on_a_funnel_against_its_exact_moments(float64):
    e = pyebm.energies.Funnel(dim=2, scale=1.0)  # v ~ N(0, 1), x | v ~ N(0, e^v)
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}),
                       method=pyebm.ChEES(num_chains=64, num_samples=500, target_accept=0.9), seed=0, progress=False)
    v, x = post.approximation.draws["x"][..., 0], post.approximation.draws["x"][..., 1]
    ess = post.diagnostics["ess_bulk"]
    assert abs(float(v.mean())) <= 4 / math.sqrt(ess["x[0]"])
    assert abs(float(v.std()) - 1) <= 4 / math.sqrt(2 * ess["x[0]"])
    # x's variance is E[e^v] = e^(1/2); x is heavy-tailed, so 10% on its variance
    assert abs(float(x.var()) / math.exp(0.5) - 1) <= 0.1


def test_chees_is_reproducible_under_a_seed(float64):
    model = pyebm.model_from_energy(correlated_gaussian(4), {"x": 4})
    method = pyebm.ChEES(num_chains=8, warmup_steps=50, num_samples=20)
    a, b, c = (pyebm.infer(model, method=method, seed=s, progress=False).approximation.draws["x"] for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_chees_with_one_chain_still_adapts(float64):
    e = correlated_gaussian(4)
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 4}),
                       method=pyebm.ChEES(num_chains=1, warmup_steps=300, num_samples=1500), seed=0, progress=False)
    assert post.diagnostics["trajectory_length"] > 3 * post.diagnostics["step_size"]
    assert_within_mc_error(post, e.mu, e.covariance().diagonal().sqrt())


def regression(x, y=None):
    """A Pyro model as the docs write it: plate, obs=, a deterministic site, a positive site, indexing w[0]."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("data", len(x)):
        mean = pyro.deterministic("mean", w[0] + w[1] * x)
        pyro.sample("y", dist.Normal(mean, 0.5), obs=y)
        pyro.sample("k", dist.Poisson(rate), obs=torch.tensor([1.0, 3.0, 2.0, 0.0, 2.0, 4.0]))


def test_chees_vectorises_a_pyro_model_and_matches_its_conjugate_posterior(float64):
    x = torch.linspace(-1, 1, 6)
    y = torch.tensor([-0.9, -0.2, 0.4, 0.3, 1.1, 1.6])
    post = pyebm.infer(regression, x, y, method=pyebm.ChEES(**FAST), seed=0, progress=False)
    # w: Gaussian linear regression with known noise, exact; rate: Gamma(2 + 12, 1 + 6)
    design = torch.stack([torch.ones(6), x], -1)
    precision = torch.eye(2) + design.T @ design / 0.25
    cov = torch.linalg.inv(precision)
    assert_within_mc_error(post, cov @ design.T @ y / 0.25, cov.diagonal().sqrt(), name="w")
    assert_within_mc_error(post, torch.tensor(14 / 7), torch.tensor(math.sqrt(14) / 7), name="rate")
    assert post.approximation.draws["mean"].shape == (16, 300, 6)  # the deterministic site, completed


@pytest.mark.slow
def test_jit_compiled_chees_matches_eight_schools_uncompiled(float64):
    """jit_compile on a hierarchical energy model written for one point (vmapped): the compiled potential's chains
    agree with the uncompiled ones' within their joint Monte Carlo error (the draws differ only by rounding)."""
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    model = pyebm.model_from_energy(
        lambda mu, tau, theta: -dist.Normal(mu + tau * theta, sigma).log_prob(y).sum(),
        {"mu": (), "tau": (), "theta": 8},
        prior={"mu": dist.Normal(0.0, 5.0), "tau": dist.HalfCauchy(5.0), "theta": dist.Normal(0.0, 1.0).expand([8])})
    posts = [pyebm.infer(model, method=pyebm.ChEES(jit_compile=jit, **FAST), seed=0, progress=False)
             for jit in (False, True)]
    for name in ("mu", "tau"):
        draws = [p.approximation.draws[name].reshape(-1) for p in posts]
        ess = [p.diagnostics["ess_bulk"][name] for p in posts]
        se = math.sqrt(sum(float(d.var()) / e for d, e in zip(draws, ess)))
        # 4 joint Monte Carlo standard errors (tau is skewed: its mean's error is still close to Gaussian at this ESS)
        assert abs(float(draws[0].mean() - draws[1].mean())) < 4 * se
    assert posts[1].diagnostics["num_divergences"] < 0.01 * 16 * 300


@pytest.mark.slow
def test_jit_compile_says_so_where_it_cannot_capture_a_pyro_model(float64):
    x = torch.linspace(-1, 1, 6)
    y = torch.tensor([-0.9, -0.2, 0.4, 0.3, 1.1, 1.6])
    with pytest.warns(UserWarning, match="captured no part of this potential.*uncompiled"):
        post = pyebm.infer(regression, x, y, method=pyebm.ChEES(jit_compile=True, num_chains=16, warmup_steps=50,
                                                                num_samples=50), seed=0, progress=False)
    assert post.approximation.draws["w"].shape == (16, 50, 2)


def test_chees_refuses_what_it_cannot_vectorise():
    def mixture(data):
        locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)

    # `locs[z]` indexes the points' dimension once the model runs for many points: refused, with the fix
    with pytest.raises(ValueError, match="vectorising it failed.*method='nuts'.*Vindex"):
        pyebm.infer(mixture, torch.randn(10), method="chees", progress=False)

    def branching():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        if x.item() > 0:  # Python control flow on a tensor's value
            pyro.factor("f", -x)

    with pytest.raises(ValueError, match="vectorising it failed"):
        pyebm.infer(branching, method="chees", progress=False)


def test_chees_refuses_draws_that_do_not_fit_and_a_non_finite_start(float64):
    model = pyebm.model_from_energy(correlated_gaussian(4), {"x": 4})
    with pytest.raises(ValueError, match="GiB of draws"):
        pyebm.infer(model, method=pyebm.ChEES(num_chains=10**5, num_samples=10**4), progress=False)
    bad = pyebm.model_from_energy(lambda x: torch.log(-x.abs()).sum(-1), {"x": 2})
    with pytest.raises(ValueError, match="not finite"):
        pyebm.infer(bad, method=pyebm.ChEES(num_chains=4), progress=False)


def test_chees_settings_are_validated_and_spelled_as_numpyro_does():
    assert pyebm.ChEES(num_warmup=10, target_accept_prob=0.7).warmup_steps == 10
    for bad in [dict(num_chains=0), dict(target_accept=1.5), dict(step_size=-1.0), dict(max_leapfrog=0)]:
        with pytest.raises(ValueError):
            pyebm.ChEES(**bad)


def test_mass_windows_follow_stan_and_halton_fills_the_unit_interval():
    assert mass_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert mass_windows(100) == [(15, 90)] and mass_windows(10) == []
    points = sorted(halton(i) for i in range(1, 16))
    assert points == [k / 16 for k in range(1, 16)]


def test_a_chain_that_never_moves_restarts_at_a_moving_one():
    x, energy, g = torch.arange(8.0).reshape(4, 2), torch.arange(4.0), -torch.arange(8.0).reshape(4, 2)
    moved = torch.tensor([True, False, True, False])
    n = _restart_stuck(x, energy, g, moved, torch.Generator().manual_seed(0))
    assert n == 2
    for i in (1, 3):  # each stuck chain is now a copy of chain 0 or chain 2, all three parts together
        j = int(energy[i])
        assert j in (0, 2) and torch.equal(x[i], x[j]) and torch.equal(g[i], g[j])
    assert _restart_stuck(x, energy, g, torch.zeros(4, dtype=torch.bool), torch.Generator()) == 0


@pytest.mark.slow
def test_chees_gets_every_chain_out_of_a_start_a_million_nats_up(float64):
    # uniform starts put a chain of this model at energy 1.2e6 (rate exp(14)), where one shared step size rejects
    # every proposal; restarting it at a moving chain in the first half of warm-up leaves every chain sampling
    x, k = torch.tensor(gp_pois_regr.X), torch.tensor(gp_pois_regr.K)
    post = pyebm.infer(gp_pois_regr.model, x, k, method=pyebm.ChEES(num_samples=200, warmup_steps=200, num_chains=16),
                       seed=0, progress=False)
    assert post.diagnostics["num_restarted_chains"] >= 1
    assert max(post.diagnostics["r_hat"].values()) < 1.05
