"""Tempered SMC: log Z against exact answers within its own standard error, the modes of multimodal targets weighed
right, the path's log Z(beta) against closed forms, and clear refusals.

Tolerances: an estimate within 3 of its own standard errors. The standard error comes from 8 independent runs
(a t statistic with 7 degrees of freedom: |t| > 3 with probability 0.02), and a slow test checks that it is
calibrated over 20 seeds."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyebm
from pyebm.energies import Banana, DoubleWell, Funnel, Gaussian, GaussianMixture
from pyebm.inference.smc import next_beta

MU = torch.tensor([1.0, -0.5])
PRECISION = torch.tensor([[2.0, 0.6], [0.6, 1.0]])


def assert_within_se(post, exact, k=3.0):
    se = post.diagnostics["log_evidence_se"]
    assert 0 < se < 0.2
    assert abs(post.log_evidence - exact) <= k * se, (post.log_evidence, exact, se)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_log_z_of_a_gaussian_energy_at_several_temperatures(beta, float64):
    e = Gaussian(MU.double(), PRECISION.double())
    model = pyebm.temper(pyebm.model_from_energy(e, {"x": 2}), beta)
    post = pyebm.infer(model, method=pyebm.SMC(reference=5.0), seed=0, progress=False)
    assert_within_se(post, e.log_normalizer(beta))
    assert post.method == "smc" and post.diagnostics["beta"][0] == 0.0 and post.diagnostics["beta"][-1] == 1.0


@pytest.mark.parametrize("energy", [Banana(), Funnel()], ids=["banana", "funnel"])
def test_log_z_of_the_banana_and_the_funnel(energy, float64):
    post = pyebm.infer(pyebm.model_from_energy(energy, {"x": energy.dim}), method=pyebm.SMC(reference=5.0), seed=0,
                       progress=False)
    assert_within_se(post, energy.log_normalizer(1.0))


def gaussian_with_prior():
    e = Gaussian(MU.double(), PRECISION.double())

    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(2, dtype=torch.float64), 2.0).to_event(1))
        pyebm.energy_factor("e", e(x))

    return model


def exact_log_z_with_prior(s):
    """log of the integral of N(x; 0, 4 I) exp(-s E(x)), E the Gaussian energy: a Gaussian convolution."""
    A = s * PRECISION.double()
    if s == 0:
        return 0.0
    marginal = dist.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                       4 * torch.eye(2, dtype=torch.float64) + torch.linalg.inv(A))
    return float(marginal.log_prob(MU.double()) + math.log(2 * math.pi) - 0.5 * torch.logdet(A))


def test_the_path_from_the_prior_gives_log_z_at_every_beta_of_the_schedule(float64):
    post = pyebm.infer(gaussian_with_prior(), method="smc", seed=0, progress=False)
    d = post.diagnostics
    assert len(d["beta"]) == len(d["log_Z"]) == len(d["log_Z_se"]) == d["num_stages"] + 1
    for s, lz, se in zip(d["beta"][1:], d["log_Z"][1:], d["log_Z_se"][1:]):
        assert abs(lz - exact_log_z_with_prior(s)) <= 3 * se
    assert post.log_evidence == d["log_Z"][-1]
    assert len(d["mean_energy"]) == len(d["heat_capacity"]) == d["num_stages"]
    assert all(0.3 < a < 0.95 for a in d["acceptance_rate"])  # the step size follows the target acceptance


def test_evidence_of_a_conjugate_regression_written_as_pyro_writes_it(float64):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 3, generator=g)
    y = X @ torch.tensor([1.0, -2.0, 0.5]) + 0.5 * torch.randn(50, generator=g)

    def regression(X, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Normal(X @ w, 0.5), obs=y)

    exact = float(dist.MultivariateNormal(torch.zeros(50), 0.25 * torch.eye(50) + X @ X.T).log_prob(y))
    post = pyebm.infer(regression, X, y, method=pyebm.SMC(num_particles=256), seed=0, progress=False)
    assert_within_se(post, exact)
    posterior_cov = torch.linalg.inv(torch.eye(3) + X.T @ X / 0.25)
    posterior_mean = posterior_cov @ X.T @ y / 0.25
    # 2048 particles, correlated by resampling: 0.1 posterior sd is several Monte Carlo errors
    assert ((post.mean()["w"] - posterior_mean).abs() <= 0.1 * posterior_cov.diagonal().sqrt()).all()


def test_a_mixture_with_unequal_weights_keeps_both_modes_in_proportion(float64):
    mix = GaussianMixture(torch.tensor([[-3.0, 0.0], [3.0, 1.0]]), 0.7, torch.tensor([0.3, 0.7]))
    post = pyebm.infer(pyebm.model_from_energy(mix, {"x": 2}), method=pyebm.SMC(reference=6.0), seed=0,
                       progress=False)
    assert_within_se(post, 0.0)
    right = (post.draws()["x"].reshape(-1, 2)[:, 0] > 0).double()
    # a single NUTS chain stays in one mode; the particles split 0.7 / 0.3 (0.05: ~7 binomial se of 4096 particles,
    # which resampling correlates)
    assert abs(float(right.mean()) - 0.7) < 0.05
    by_run = right.reshape(8, -1).mean(1)
    assert (by_run > 0.5).all() and (by_run < 0.9).all()  # every run holds both modes


def test_the_double_well_is_covered_on_both_sides(float64):
    well = DoubleWell()
    post = pyebm.infer(pyebm.model_from_energy(well, {"x": 1}), method=pyebm.SMC(reference=4.0), seed=0,
                       progress=False)
    assert_within_se(post, well.log_normalizer(1.0))
    x = post.draws()["x"].reshape(-1)
    assert abs(float((x > 0).double().mean()) - 0.5) < 0.05
    assert abs(float(x.std()) - float(well.covariance().sqrt())) < 0.05 * float(well.covariance().sqrt())


def test_smc_is_reproducible_under_a_seed(float64):
    model = pyebm.model_from_energy(Banana(), {"x": 2})
    a, b, c = (pyebm.infer(model, method=pyebm.SMC(reference=5.0, num_particles=64), seed=s, progress=False)
               for s in (1, 1, 2))
    assert a.log_evidence == b.log_evidence and torch.equal(a.draws()["x"], b.draws()["x"])
    assert a.log_evidence != c.log_evidence


def test_compare_shows_log_z_with_its_standard_error(float64):
    model = pyebm.model_from_energy(DoubleWell(), {"x": 1})
    smc = pyebm.infer(model, method=pyebm.SMC(reference=4.0, num_particles=128), seed=0, progress=False)
    lap = pyebm.infer(model, method=pyebm.Laplace(init={"x": torch.tensor([0.8])}), seed=0, progress=False)
    table = pyebm.compare(smc, lap)
    assert table.loc[("log_evidence", "se"), "smc"] == smc.diagnostics["log_evidence_se"] > 0
    assert table.loc[("log_evidence", "se"), "laplace"] == 0.0
    # Laplace sees one of the two wells: about log 2 short
    assert table.loc[("log_evidence", ""), "smc"] - table.loc[("log_evidence", ""), "laplace"] > 0.5


def test_smc_refuses_what_it_cannot_start_or_run():
    flat = pyebm.model_from_energy(Banana(), {"x": 2})
    with pytest.raises(ValueError, match=r"improper \(flat\) prior.*reference"):
        pyebm.infer(flat, method="smc", progress=False)

    def mixture():
        z = pyro.sample("z", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Normal(torch.tensor([-1.0, 1.0])[z], 1.0))

    # x depends on an enumerated z outside any plate, so enumeration gives x z's dimension: not vectorisable
    with pytest.raises(ValueError, match="vectorising it failed.*method='nuts'"):
        pyebm.infer(mixture, method="smc", progress=False)
    for bad in [dict(num_particles=1), dict(num_runs=1), dict(target_ess=0.0), dict(reference=-1.0)]:
        with pytest.raises(ValueError):
            pyebm.SMC(**bad)


def test_numpyro_backend_refuses_smc_by_name():
    pytest.importorskip("numpyro")
    from pyebm.numpyro import infer as numpyro_infer

    with pytest.raises(ValueError, match="Pyro backend"):
        numpyro_infer(lambda: None, method="smc")


def test_next_beta_keeps_the_target_ess():
    delta = torch.tensor([[0.0, 10.0, 20.0, 30.0] * 25], dtype=torch.float64)
    new = next_beta(delta, 0.0, 0.5)
    w = torch.exp(-new * delta)
    assert float(w.sum() ** 2 / (w**2).sum() / w.shape[-1]) == pytest.approx(0.5, abs=1e-6)
    assert next_beta(torch.zeros(1, 10), 0.3, 0.5) == 1.0  # flat increments: straight to the end


@pytest.mark.slow
def test_the_standard_error_is_calibrated_over_twenty_seeds(float64):
    # 20 runs of the whole sampler on the banana: the z-scores (estimate - exact) / se should scatter like a t with
    # 7 degrees of freedom (sd 1.18). An se ten times too small gives |z| ~ 10; ten times too large, sd ~ 0.1.
    energy = Banana()
    model = pyebm.model_from_energy(energy, {"x": 2})
    z = []
    for seed in range(20):
        post = pyebm.infer(model, method=pyebm.SMC(reference=5.0, num_particles=128), seed=seed, progress=False)
        z.append((post.log_evidence - energy.log_normalizer(1.0)) / post.diagnostics["log_evidence_se"])
    z = np.array(z)
    assert (np.abs(z) > 3).sum() <= 2, z
    assert 0.5 < z.std() < 1.8, z


def test_plot_draws_the_path_with_its_band_and_refuses_a_reference_path(float64):
    pytest.importorskip("matplotlib")
    post = pyebm.infer(gaussian_with_prior(), method=pyebm.SMC(num_particles=64), seed=0, progress=False)
    exact = {b: exact_log_z_with_prior(b) for b in np.linspace(0, 1, 11)}
    ax = pyebm.plot.log_z_path(post, exact=exact, laplace={1.0: exact[1.0]})
    assert [line.get_label() for line in ax.get_lines()] == ["SMC", "exact", "Laplace"]
    assert len(ax.collections) == 1  # the band of two standard errors
    other = pyebm.infer(pyebm.model_from_energy(Banana(), {"x": 2}), method=pyebm.SMC(reference=5.0, num_particles=64),
                        seed=0, progress=False)
    with pytest.raises(ValueError, match="starts at the prior"):
        pyebm.plot.log_z_path(other)


@pytest.mark.slow
def test_log_z_of_a_3x3_ising_lattice_with_its_spins_enumerated(float64):
    # the nine spins are summed out exactly inside every particle's potential (one run of the model under a plate
    # over the particles); SMC carries the continuous field h. Exact: sum over the 512 configurations, quadrature in h
    from models import reference_models as R
    from scipy import special, stats

    configs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 9, indexing="ij")).reshape(9, -1).T
    coupling = sum(configs[:, i] * configs[:, j] for i, j in R.ISING_EDGES)
    h = np.linspace(-10, 10, 20001)
    E = -R.ISING_J * coupling[None, :] - 0.2 * configs.sum(1)[None, :] - h[:, None] * configs[None, :, 0]
    log_f = special.logsumexp(-E, axis=1) + stats.norm.logpdf(h) - 9 * math.log(2)  # spins ~ Bernoulli(1/2)
    exact = special.logsumexp(log_f) + math.log(h[1] - h[0])
    post = pyebm.infer(R.ising, method=pyebm.SMC(num_particles=32, num_mcmc_steps=4, num_leapfrog=4), seed=0,
                       progress=False)
    assert_within_se(post, exact)
    case = R.ising_case()
    # 256 particles: 0.3 sd of h is about 5 Monte Carlo errors; a spin's mean within 0.15 (binomial se ~0.03)
    assert abs(float(post.mean()["h"]) - case.mean["h"]) < 0.3 * case.sd["h"]
    assert abs(float(post.mean()["s4"]) - case.mean["s4"]) < 0.15


@pytest.mark.slow
def test_a_phi_four_chain_in_its_ordered_phase_keeps_both_modes(float64):
    from pyebm.energies import PhiFour

    field = PhiFour(n=16, coupling=8.0)  # NUTS chains stay in one sign here (r-hat ~1.7; the benchmark)
    post = pyebm.infer(pyebm.model_from_energy(field, {"x": 16}), method=pyebm.SMC(reference=2.0), seed=0,
                       progress=False)
    assert_within_se(post, field.log_normalizer())
    up = (post.draws()["x"].mean(-1) > 0).double().reshape(8, -1)  # (runs, particles): the sign of the field
    assert abs(float(up.mean()) - 0.5) < 0.1  # symmetric modes, equal weights (8 runs, correlated by resampling)
    assert ((up.mean(1) > 0.2) & (up.mean(1) < 0.8)).all()  # every run holds both


def test_evidence_of_an_enumerated_mixture_in_a_plate(float64):
    # the assignment of each of 12 points is summed out inside every particle's potential; exact: the two
    # component means on a 2-D grid (the prior N(0, 3^2) per mean, unit noise)
    from pyro.ops.indexing import Vindex

    def mixture(data):
        locs = pyro.sample("locs", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Categorical(torch.tensor([0.3, 0.7])), infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Normal(Vindex(locs)[..., z], 1.0), obs=data)

    data = torch.cat([torch.randn(4, generator=torch.Generator().manual_seed(0)) - 2,
                      torch.randn(8, generator=torch.Generator().manual_seed(1)) + 2])
    grid = torch.linspace(-12, 12, 1201)
    a, b = grid[:, None, None], grid[None, :, None]
    lik = torch.logaddexp(math.log(0.3) + dist.Normal(a, 1.0).log_prob(data),
                          math.log(0.7) + dist.Normal(b, 1.0).log_prob(data)).sum(-1)
    log_f = lik + dist.Normal(0.0, 3.0).log_prob(a[..., 0]) + dist.Normal(0.0, 3.0).log_prob(b[..., 0])
    exact = float(torch.logsumexp(log_f.reshape(-1), 0) + 2 * math.log(float(grid[1] - grid[0])))
    post = pyebm.infer(mixture, data, method=pyebm.SMC(num_particles=128), seed=0, progress=False)
    assert_within_se(post, exact)
    assert post.approximation.draws["z"].shape == (8, 128, 12)
