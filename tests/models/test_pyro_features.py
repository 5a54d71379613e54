"""Every ordinary Pyro feature through pyebm.infer, or refused clearly: the reproducers of the Pyro-models issue."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import config_enumerate

import pyebm

import reference_models as R


# --- 1. float32 (Pyro's default) ------------------------------------------------------------------------------------
def line(x, y, noise):
    a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 5.0))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 5.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(a + b * x, noise), obs=y)


@pytest.mark.parametrize("method", ["map", "laplace"])
def test_float32_regression_grid_matches_float64(method):
    # the 27 runs: N in {20, 100, 1000}, noise in {0.05, 0.2, 1}, 3 seeds; 4 of them used to fail in float32
    worst = 0.0
    for n in (20, 100, 1000):
        for noise in (0.05, 0.2, 1.0):
            for seed in range(3):
                g = torch.Generator().manual_seed(seed)
                x = torch.linspace(-1, 1, n, dtype=torch.float64)
                y = 1.0 + 2.0 * x + noise * torch.randn(n, generator=g, dtype=torch.float64)
                ref = pyebm.infer(line, x, y, noise, method="laplace", seed=0, progress=False)
                post = pyebm.infer(line, x.float(), y.float(), noise, method=method, seed=0, progress=False)
                exact = pyebm.infer(line, x, y, noise, method=method, seed=0, progress=False)
                for k in "ab":
                    worst = max(worst, abs(float(post.mode[k]) - float(exact.mode[k])) / float(ref.std()[k]))
    assert worst <= 1e-4  # posterior sds


def uncentred(x, y):
    a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 100.0))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 10.0))
    s = pyro.sample("s", dist.HalfCauchy(torch.tensor(5.0, dtype=x.dtype)))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(a + b * x, s), obs=y)


def test_uncentred_predictor_in_float32_is_not_silently_wrong():
    # values around 100: the intercept and slope are correlated at 0.999; float32 used to report `converged` 28
    # posterior sds from the intercept's mode, and Laplace leaked Pyro's validation error
    g = torch.Generator().manual_seed(0)
    x = 100 + 10 * torch.randn(300, generator=g, dtype=torch.float64)
    y = 3.0 + 0.5 * x + 2.0 * torch.randn(300, generator=g, dtype=torch.float64)
    for method in ("map", "laplace"):
        exact = pyebm.infer(uncentred, x, y, method=method, seed=0, progress=False)
        sd = pyebm.infer(uncentred, x, y, method="laplace", seed=0, progress=False).std()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pyebm.ConvergenceWarning)  # a round-off stop within 1e-2 sd may warn
            post = pyebm.infer(uncentred, x.float(), y.float(), method=method, seed=0, progress=False)
        for k in "abs":
            assert abs(float(post.mode[k]) - float(exact.mode[k])) / float(sd[k]) < 1e-2, (method, k)


def test_a_wide_proper_prior_does_not_loosen_the_stopping_rule(float64):
    # the normaliser of N(0, 1000) used to inflate the |E|-relative tolerance: MAP stopped 0.009 from the mode
    A = torch.diag(torch.tensor([1.0, 5.0, 10.0, 20.0]))
    model = pyebm.model_from_energy(lambda x: 0.5 * (x - 1) @ A @ (x - 1), {"x": 4},
                                    prior={"x": dist.Normal(torch.zeros(4), 1000.0)})
    post = pyebm.infer(model, method="map", seed=0, progress=False)
    mode = torch.linalg.solve(A + torch.eye(4) / 1e6, A @ torch.ones(4))
    assert ((post.mode["x"] - mode).abs() * A.diagonal().sqrt()).max() < 1e-6


def radon(county, x, y, n_counties):
    mu_a = pyro.sample("mu_a", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 5.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(torch.tensor(1.0, dtype=x.dtype)))
    sigma_y = pyro.sample("sigma_y", dist.LogNormal(torch.tensor(0.0, dtype=x.dtype), 0.5))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 2.0))
    with pyro.plate("counties", n_counties):
        a = pyro.sample("a", dist.Normal(mu_a, sigma_a))
    with pyro.plate("houses", len(x)):
        pyro.sample("y", dist.Normal(a[county] + b * x, sigma_y), obs=y)


def test_radon_style_hierarchical_scales_in_float32():
    g = np.random.default_rng(0)
    county = torch.tensor(g.integers(0, 6, 120))
    a = 1.5 + 0.8 * g.normal(size=6)
    x = torch.tensor(g.integers(0, 2, 120), dtype=torch.float64)
    y = torch.tensor(a[county.numpy()] - 0.7 * x.numpy() + 0.5 * g.normal(size=120))
    for method in ("map", "laplace"):
        exact = pyebm.infer(radon, county, x, y, 6, method=method, seed=0, progress=False)
        sd = pyebm.infer(radon, county, x, y, 6, method="laplace", seed=0, progress=False).std()
        post = pyebm.infer(radon, county, x.float(), y.float(), 6, method=method, seed=0, progress=False)
        for k, v in exact.mode.items():
            assert ((post.mode[k].double() - v).abs() / sd[k]).max() < 1e-3, (method, k)


def test_scaled_likelihood_is_the_tempered_conjugate_posterior(float64):
    # poutine.scale(0.5) on the likelihood halves its precision: w ~ N(0, 1), y ~ N(w, 1) x 10 scaled by 1/2
    y = torch.linspace(-0.5, 1.5, 10)

    def model():
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 10), poutine.scale(scale=0.5):
            pyro.sample("y", dist.Normal(w, 1.0), obs=y)

    post = pyebm.infer(model, method="laplace", seed=0, progress=False)
    precision = 1 + 0.5 * 10
    assert float(post.mean()["w"]) == pytest.approx(0.5 * float(y.sum()) / precision, abs=1e-10)
    assert float(post.std()["w"]) == pytest.approx(precision**-0.5, abs=1e-10)


def test_a_mixture_marginalised_by_free_energy_is_the_mixture(float64):
    x = R.mixture_data()
    xt = torch.tensor(x)
    log_w = torch.log(torch.tensor(R.MIX_WEIGHTS))

    def by_free_energy(x):  # -log sum_k w_k N(x | loc_k, 1) as the beta = 1 free energy over the two components
        locs = pyro.sample("locs", dist.Normal(torch.zeros(2), 10.0).to_event(1))
        energy = lambda k: -(log_w[k, None] + dist.Normal(locs[k, None], 1.0).log_prob(x))  # noqa: E731
        pyebm.energy_factor("mixture", pyebm.free_energy(energy, torch.arange(2), beta=1.0).sum())

    init = {"locs": torch.tensor([-1.0, 1.0])}
    a = pyebm.infer(by_free_energy, xt, method=pyebm.Laplace(init=init), seed=0, progress=False)
    b = pyebm.infer(R.mixture_by_hand, xt, method=pyebm.Laplace(init=init), seed=0, progress=False)
    torch.testing.assert_close(a.mode["locs"], b.mode["locs"], atol=1e-9, rtol=0)
    assert a.log_evidence == pytest.approx(b.log_evidence, abs=1e-8)


# --- 2. pyro.param -----------------------------------------------------------------------------------------------
def noisy_line(x, y):
    noise = pyro.param("noise", torch.tensor(1.0, dtype=x.dtype), constraint=dist.constraints.positive)
    w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, noise), obs=y)


def test_params_are_the_callers_and_svi_returns_what_it_learned(float64):
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 50)
    y = 0.7 * x + 0.1 * torch.randn(50, generator=g)
    pyro.param("noise", torch.tensor(0.1), constraint=dist.constraints.positive)  # an empirical-Bayes fit
    for method in ("map", "laplace", pyebm.NUTS(num_samples=50, warmup_steps=50, num_chains=1)):
        post = pyebm.infer(noisy_line, x, y, method=method, seed=0, progress=False)
        assert float(post.params["noise"]) == pytest.approx(0.1)
    lap = pyebm.infer(noisy_line, x, y, method="laplace", seed=0, progress=False)
    assert float(lap.std()["w"]) == pytest.approx(1 / math.sqrt(1 + float((x**2).sum()) / 0.01), rel=1e-9)
    # SVI learns the noise (type-II maximum likelihood here: the marginal's maximiser, by a fine grid) and returns
    # it; the caller's store keeps its 0.1
    svi = pyebm.infer(noisy_line, x, y, method=pyebm.SVI(steps=1500, lr=0.02), seed=0, progress=False)
    grid = torch.linspace(0.05, 0.2, 3001)
    sxx, sxy, syy = float((x**2).sum()), float((x * y).sum()), float((y**2).sum())
    log_ml = torch.stack([torch.distributions.MultivariateNormal(torch.zeros(50), torch.outer(x, x)
                                                                 + s**2 * torch.eye(50)).log_prob(y) for s in grid[::50]])
    ml = float(grid[::50][log_ml.argmax()])
    assert abs(float(svi.params["noise"]) - ml) < 0.01, (svi.params, ml, sxx, sxy, syy)
    assert float(pyro.param("noise")) == pytest.approx(0.1)


# --- 3-5. enumeration ------------------------------------------------------------------------------------------
@config_enumerate
def potts():
    z1 = pyro.sample("z1", dist.Categorical(torch.ones(3) / 3))
    z2 = pyro.sample("z2", dist.Categorical(torch.ones(3) / 3))
    h = pyro.sample("h", dist.Normal(0.0, 1.0))
    pyebm.energy_factor("potts", 1.5 * (z1 != z2).float() + h * z1.float())


def potts_exact():
    h = torch.linspace(-8, 8, 8001, dtype=torch.float64)
    z = torch.arange(3.0, dtype=torch.float64)
    E = 1.5 * (z[:, None, None] != z[None, :, None]).double() + h * z[:, None, None]
    logp = -E + dist.Normal(0.0, 1.0).log_prob(h)
    w = torch.softmax(logp.reshape(-1), 0).reshape(3, 3, -1)
    wh = w.sum((0, 1))
    mean = float((wh * h).sum())
    return {"h": mean, "h_sd": float(((wh * h**2).sum() - mean**2).sqrt()),
            "z1": float((w.sum((1, 2)) * z).sum()), "z2": float((w.sum((0, 2)) * z).sum())}


def test_energy_factors_under_enumeration_work_as_pyro_factor():
    # a Potts coupling between two enumerated labels: raw TraceEnum_ELBO, raw NUTS and pyebm.infer all run
    from pyro.infer import SVI, TraceEnum_ELBO
    from pyro.infer.autoguide import AutoNormal

    guide = AutoNormal(poutine.block(potts, hide=["z1", "z2"]))
    svi = SVI(potts, guide, pyro.optim.Adam({"lr": 0.01}), TraceEnum_ELBO(max_plate_nesting=0))
    assert math.isfinite(svi.step())
    mcmc = pyro.infer.MCMC(pyro.infer.NUTS(potts), num_samples=20, warmup_steps=20, disable_progbar=True)
    mcmc.run()
    lap = pyebm.infer(potts, method="laplace", seed=0, progress=False)
    assert set(lap.sample(5)) == {"z1", "z2", "h"}
    # Laplace's mode is that of the exact marginal density of h (a Gaussian fitted there): compare the mode
    h = torch.linspace(-4, 2, 60001, dtype=torch.float64)
    z = torch.arange(3.0, dtype=torch.float64)
    marginal = torch.logsumexp((-(1.5 * (z[:, None, None] != z[None, :, None]).double() + h * z[:, None, None]))
                               .reshape(9, -1), 0) + dist.Normal(0.0, 1.0).log_prob(h)
    assert float(lap.mode["h"]) == pytest.approx(float(h[marginal.argmax()]), abs=2e-4)


@pytest.mark.slow
def test_nuts_on_an_enumerated_model_recovers_the_discrete_sites():
    exact = potts_exact()
    post = pyebm.infer(potts, method=pyebm.NUTS(num_samples=1000, warmup_steps=400), seed=0, progress=False)
    ess = post.diagnostics["ess_bulk"]
    assert abs(float(post.mean()["h"]) - exact["h"]) <= 4 * exact["h_sd"] / math.sqrt(ess["h"])
    for k in ("z1", "z2"):  # label sd at most 1 (values 0..2): 4 / sqrt(ESS) bounds the error of the mean
        assert abs(float(post.mean()[k]) - exact[k]) <= 4 / math.sqrt(ess[k])


def test_raw_pyro_nuts_treats_a_non_finite_energy_as_zero_density():
    # exp(3z) overflows during Pyro's step-size search; it used to raise NonFiniteEnergyError there
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 10.0))
        pyebm.energy_factor("e", torch.exp(3 * z) + torch.exp(-3 * z))

    mcmc = pyro.infer.MCMC(pyro.infer.NUTS(model), num_samples=50, warmup_steps=50, disable_progbar=True)
    mcmc.run()
    assert torch.isfinite(mcmc.get_samples()["z"]).all()
    with pytest.raises(ValueError, match="not finite|infinite|NaN"):  # called directly, outside any handler
        pyebm.energy_factor("e", torch.tensor(float("inf")))


# --- 6. profile with plates ----------------------------------------------------------------------------------
def test_profile_handles_plates_and_gives_the_exact_marginal(float64):
    from scipy import optimize, stats

    sigma, y = torch.tensor(R.SCHOOLS_SIGMA), torch.tensor(R.SCHOOLS_Y)
    profiled = pyebm.profile(R.eight_schools_centred, "theta", beta=1.0)  # theta enters quadratically: exact
    post = pyebm.infer(profiled, sigma, y, method="laplace", seed=0, progress=False)

    def neg_log_marginal(v):  # theta integrated out in closed form; density of (mu, log tau), Jacobian included
        mu, log_tau = v
        s2 = R.SCHOOLS_SIGMA**2 + np.exp(2 * log_tau)
        return -(stats.norm.logpdf(mu, 0, 5) + stats.halfcauchy.logpdf(np.exp(log_tau), scale=5) + log_tau
                 - 0.5 * (((R.SCHOOLS_Y - mu) ** 2) / s2 + np.log(2 * np.pi * s2)).sum())

    mode = optimize.minimize(neg_log_marginal, [1.0, 1.0], method="Nelder-Mead",
                             options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10000}).x
    assert float(post.mode["mu"]) == pytest.approx(mode[0], abs=1e-5)
    assert math.log(float(post.mode["tau"])) == pytest.approx(mode[1], abs=1e-5)


@pytest.mark.slow
def test_profiled_nuts_matches_the_exact_marginal_posterior(float64):
    c = R.eight_schools_case()
    sigma, y = torch.tensor(R.SCHOOLS_SIGMA), torch.tensor(R.SCHOOLS_Y)
    post = pyebm.infer(pyebm.profile(R.eight_schools_centred, "theta", beta=1.0), sigma, y,
                       method=pyebm.NUTS(num_samples=150, warmup_steps=100, num_chains=2), seed=0, progress=False)
    ess = post.diagnostics["ess_bulk"]  # 4 Monte Carlo sds from the exact marginal moments: fails if NUTS is biased
    for k in ("mu", "tau"):
        assert abs(float(post.mean()[k]) - c.mean[k]) <= 4 * c.sd[k] / math.sqrt(ess[k])


# --- 7-8. deterministic sites, the predictive, ArviZ ----------------------------------------------------------
@pytest.mark.parametrize("method", ["map", "laplace", pyebm.SVI(steps=100),
                                    pyebm.NUTS(num_samples=60, warmup_steps=60, num_chains=2)])
def test_every_method_has_deterministic_sites_a_predictive_and_arviz_groups(method, float64):
    import arviz as az

    c = R.linear_regression_case()
    X, y = c.args
    post = pyebm.infer(c.model, X, y, method=method, seed=0, progress=False)
    assert list(post.site_shapes) == ["w", "mean"] and post.site_shapes["mean"] == (40,)
    pred = post.predictive(num_samples=30, seed=1)
    assert set(pred) == {"mean", "y"} and pred["y"].shape == (30, 40)
    torch.testing.assert_close(pred["mean"], post.sample(30, seed=1)["w"] @ X.T) if post.method != "nuts" else None
    new = post.predictive(c.model, X[:5], num_samples=30, seed=1)  # new inputs, y=None: predictions there
    assert new["y"].shape == (30, 5)
    idata = post.to_arviz(num_samples=40, predictive=True)
    groups = set(idata.groups() if hasattr(idata, "groups") else idata.children)
    assert {"posterior", "log_likelihood", "observed_data", "posterior_predictive"} <= groups
    chains, draws = idata.posterior["w"].shape[:2]
    assert (chains, draws) == {"map": (1, 1), "nuts": (2, 60)}.get(post.method, (1, 40))
    assert idata.log_likelihood["y"].shape == (chains, draws, 40)
    # the pointwise log-likelihood is log N(y_i | x_i w, 0.5) at each draw
    w = torch.as_tensor(idata.posterior["w"].values[0, 0])
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0, 0],
                               dist.Normal(X @ w, 0.5).log_prob(y).numpy(), rtol=1e-10)
    if post.method == "nuts":
        assert "sample_stats" in groups
        az.loo(idata)
        az.waic(idata)


# --- 10. SVI that knows whether it converged -----------------------------------------------------------------
def test_default_svi_starts_at_laplace_and_gets_the_conjugate_answer(float64):
    c = R.nig_case()
    post = pyebm.infer(c.model, *c.args, method="svi", seed=0, progress=False)
    assert post.diagnostics["start"] == "laplace"
    # a Gaussian in (w, log sigma2) for a Student-t / inverse-gamma posterior: within 0.1 sd of the exact means
    for k in ("w", "sigma2"):
        assert (np.abs(post.mean()[k].numpy() - c.mean[k]) <= 0.1 * np.asarray(c.sd[k])).all(), k


def test_svi_warns_when_the_elbo_is_still_rising(float64):
    c = R.linear_regression_case()
    with pytest.warns(pyebm.ConvergenceWarning, match="not converged: the guide.s mean is .* of its sds"):
        pyebm.infer(c.model, *c.args, method=pyebm.SVI(steps=150, lr=0.01, laplace_init=False), seed=0,
                    progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pyebm.ConvergenceWarning)
        pyebm.infer(c.model, *c.args, method=pyebm.SVI(steps=300), seed=0, progress=False)


# --- 11. clear refusals and names ----------------------------------------------------------------------------
def subsampled(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("data", len(x), subsample_size=10) as idx:
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])


def test_subsampled_plates_are_refused_by_map_laplace_and_mcmc_and_fit_by_svi():
    x = torch.linspace(2.0, 4.0, 100)
    for method in ("map", "laplace", "nuts"):
        with pytest.raises(ValueError, match="subsamples plate.*'data'.*method='svi'"):
            pyebm.infer(subsampled, x, method=method, seed=0, progress=False)
    post = pyebm.infer(subsampled, x, method=pyebm.SVI(steps=1000), seed=0, progress=False)
    exact = float(x.sum()) / (100 + 1 / 25)
    assert abs(float(post.mean()["mu"]) - exact) < 0.1  # within the subsampling noise of the gradient


def test_misplaced_settings_and_learnable_temperatures_are_refused():
    c = R.linear_regression_case()
    with pytest.raises(TypeError, match=r"\['num_samples'\].*pyebm.NUTS\(num_samples=...\)"):
        pyebm.infer(c.model, *c.args, method="nuts", num_samples=200)
    lam = torch.tensor(2.0, requires_grad=True)

    def model():
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        pyebm.energy_factor("e", w**2, beta=lam)

    with pytest.raises(TypeError, match="requires grad.*energy_factor\\(name, lam \\* E\\)"):
        pyebm.infer(model, method="map", progress=False)


def test_warnings_point_at_the_callers_line(float64):
    c = R.linear_regression_case()
    with pytest.warns(pyebm.ConvergenceWarning) as record:
        pyebm.infer(c.model, *c.args, method=pyebm.SVI(steps=150, lr=0.01, laplace_init=False), seed=0,
                    progress=False)
    assert record[0].filename == __file__


# --- 12. draws ----------------------------------------------------------------------------------------------
def test_draws_are_ordered_never_resampled_and_shaped_alike(float64):
    c = R.linear_regression_case()
    nuts = pyebm.infer(c.model, *c.args, method=pyebm.NUTS(num_samples=30, warmup_steps=30, num_chains=2), seed=0,
                       progress=False)
    by_chain = nuts.draws(group_by_chain=True)
    assert by_chain["w"].shape == (2, 30, 3) and nuts.draws()["w"].shape == (60, 3)
    torch.testing.assert_close(nuts.draws()["w"][30:], by_chain["w"][1])
    with pytest.raises(ValueError, match="holds 60 draws"):
        nuts.sample(61)
    assert nuts.sample(60)["w"].shape == (60, 3)
    map_post = pyebm.infer(c.model, *c.args, method="map", seed=0, progress=False)
    assert map_post.draws(group_by_chain=True)["w"].shape == (1, 1, 3)
    lap = pyebm.infer(c.model, *c.args, method="laplace", seed=0, progress=False)
    with pytest.raises(ValueError, match="stores no draws.*sample"):
        lap.draws()
    for post in (nuts, map_post, lap):
        draws = post.sample(4, seed=0)
        assert list(draws) == ["w", "mean"] and all(isinstance(v, torch.Tensor) for v in draws.values())
        assert {k: tuple(v.shape) for k, v in draws.items()} == {"w": (4, 3), "mean": (4, 40)}


# --- the NumPyro backend in float32 --------------------------------------------------------------------------
def test_numpyro_noncentred_eight_schools_laplace_in_float32():
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    import pyebm.numpyro as pn

    def model(sigma, y=None):
        mu = numpyro.sample("mu", nd.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", nd.HalfCauchy(5.0))
        with numpyro.plate("J", len(sigma)):
            eta = numpyro.sample("eta", nd.Normal(0.0, 1.0))
            numpyro.sample("obs", nd.Normal(mu + tau * eta, sigma), obs=y)

    post = pn.infer(model, jnp.asarray(R.SCHOOLS_SIGMA, dtype=jnp.float32), jnp.asarray(R.SCHOOLS_Y, dtype=jnp.float32),
                    method="laplace", seed=0, progress=False)
    assert post.diagnostics["status"] in ("converged", "stalled") and np.isfinite(post.log_evidence)
    assert np.isfinite(np.asarray(post.std()["tau"])).all()


def test_numpyro_tempered_gaussian_map_and_laplace_converge(x64):
    import jax.numpy as jnp

    import pyebm.numpyro as pn

    A = jnp.diag(jnp.array([1.0, 2.0, 5.0, 10.0, 20.0]))
    model = pn.temper(pn.model_from_energy(lambda x: 0.5 * (x - 1) @ A @ (x - 1), {"x": 5}), beta=2.0)
    for method in ("map", "laplace"):
        post = pn.infer(model, method=method, seed=0, progress=False)
        np.testing.assert_allclose(np.asarray(post.mode["x"]), 1.0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(post.std()["x"]), 1 / np.sqrt(2 * np.diag(A)), rtol=1e-8)


# --- masked latent elements (obs_mask imputation) and densities without a gradient path ------------------------
def imputation(y, mask):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=torch.nan_to_num(y), obs_mask=mask)


def test_obs_mask_imputes_missing_values(float64):
    # obs_mask makes a latent 'y_unobserved' over the whole plate, masked where y is observed: those elements are
    # not in the density (flat), so they are held at their value; the missing ones are the predictive N(mu, 1)
    y = torch.tensor([0.5, 1.0, float("nan"), 2.0, float("nan")])
    mask = ~torch.isnan(y)
    precision = 1 + int(mask.sum())
    post = pyebm.infer(imputation, y, mask, method="laplace", seed=0, progress=False)
    assert float(post.mean()["mu"]) == pytest.approx(float(y[mask].sum()) / precision, abs=1e-10)
    assert float(post.std()["mu"]) == pytest.approx(precision**-0.5, abs=1e-10)
    sd = post.approximation.structure.variance() ** 0.5  # (mu, two missing values): Gaussian in the free coordinates
    torch.testing.assert_close(sd[1:], torch.full((2,), math.sqrt(1 + 1 / precision)))
    assert post.std()["y_unobserved"][mask].abs().max() == 0  # held elements do not spread
    mp = pyebm.infer(imputation, y, mask, method="map", seed=0, progress=False)
    assert torch.allclose(mp.mode["y"][~mask], mp.mode["mu"].expand(2))


def test_a_density_without_a_gradient_path_is_named():
    model = pyebm.model_from_energy(lambda x: torch.tensor(1.0) + 0 * x.detach().sum(), {"x": 2})
    for method in ("map", "laplace", "nuts"):
        with pytest.raises(ValueError, match="does not depend on the latent variables"):
            pyebm.infer(model, method=method, seed=0, progress=False)


def test_enumerated_models_evaluate_many_points_in_one_call(float64):
    # ChEES and SMC need the potential of a batch of points; with discrete sites enumerated it comes from one run of
    # the model under a plate over the points, and must equal Pyro's own potential point by point
    from pyebm.inference.pyro_backend import PYRO

    pot = PYRO.potential(R.ising, (), {}, what="test", seed=0)
    assert pot.many_points is not None and not pot.batched
    batched = pot.vectorized("test")
    u = pot.init + torch.randn(5, pot.dim, generator=torch.Generator().manual_seed(0), dtype=pot.dtype)
    for jacobian in (True, False):
        one_by_one = torch.cat([pot(u[i : i + 1], jacobian) for i in range(5)])
        torch.testing.assert_close(batched(u, jacobian), one_by_one, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(batched(u[:1], jacobian), one_by_one[:1], rtol=1e-10, atol=1e-10)
    _, grad = batched.value_and_grad(True)(u)
    for i in range(2):
        _, g = pot.value_and_grad(True)(u[i : i + 1])
        torch.testing.assert_close(grad[i], g[0], rtol=1e-8, atol=1e-10)


def test_an_enumerated_model_that_does_not_broadcast_is_refused_by_name(float64):
    # the mixture indexes `locs[z]` (dim 0), which an extra leading dimension of points breaks: caught, not wrong
    from pyebm.inference.pyro_backend import PYRO

    pot = PYRO.potential(R.mixture, (torch.tensor(R.mixture_data()),), {}, what="SMC", seed=0)
    with pytest.raises(ValueError, match="SMC needs the potential of many points.*Shape mismatch"):
        pot.vectorized("SMC")
