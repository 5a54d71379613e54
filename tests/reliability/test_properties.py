"""Properties that must hold for any input of a family (hypothesis): a few examples in the default run, many more in
the slow tier (same properties, larger budgets)."""

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyebm

FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def quadratics(draw):
    """A random Gaussian energy: dimension 1-6, condition number up to 1e4, mean of any sign."""
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    log_cond = draw(st.floats(0.0, 4.0))
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    eig = torch.logspace(0, log_cond, d, dtype=torch.float64) * 10 ** draw(st.floats(-2.0, 2.0))
    mu = 3 * torch.randn(d, generator=g, dtype=torch.float64)
    return (q * eig) @ q.T, mu


def _quadratic_posts(A, mu, offset, scale, dtype, method):
    A_, mu_ = (scale * A).to(dtype), mu.to(dtype)
    energy = lambda x: 0.5 * ((x - mu_) @ A_ * (x - mu_)).sum(-1) + offset  # noqa: E731
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # a plain function's flat prior takes the default dtype
    try:
        model = pyebm.model_from_energy(energy, {"x": len(mu)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pyebm.ConvergenceWarning)  # float32 may stop by round-off, and say so
            return pyebm.infer(model, method=method, seed=0, progress=False)
    finally:
        torch.set_default_dtype(old)


def check_invariance(problem, offset, scale, dtype):
    # the mode, in posterior sds, does not move with a constant added or with the data count (E -> scale * E);
    # Laplace's covariance times the scale does not change. Tolerance: the default stopping rule (1e-8 sds in
    # float64) plus round-off, 1e-3 sds in float32 (the issue saw 0.05 sd and more at an offset of 1e5)
    A, mu = problem
    sd = torch.linalg.inv(scale * A).diagonal().sqrt()
    tol = 1e-6 if dtype == torch.float64 else 1e-3
    base = _quadratic_posts(A, mu, 0.0, scale, torch.float64, "laplace")
    for method in ("map", "laplace"):
        post = _quadratic_posts(A, mu, offset, scale, dtype, method)
        assert ((post.mode["x"].double() - mu).abs() / sd).max() < tol, (method, offset, scale, dtype)
    cov = post.approximation.covariance.double() * scale
    ref = base.approximation.covariance * scale
    assert ((cov - ref).abs() / ref.diagonal().sqrt().outer(ref.diagonal().sqrt())).max() < 10 * tol


OFFSETS = st.sampled_from([0.0, 100.0, 1e5])
SCALES = st.sampled_from([1.0, 10.0, 1e4])
DTYPES = st.sampled_from([torch.float64, torch.float32])


@FAST
@given(quadratics(), OFFSETS, SCALES, DTYPES)
def test_map_and_laplace_are_invariant_to_constants_and_data_count(problem, offset, scale, dtype):
    check_invariance(problem, offset, scale, dtype)


@pytest.mark.slow
@SLOW
@given(quadratics(), OFFSETS, SCALES, DTYPES)
def test_map_and_laplace_are_invariant_to_constants_and_data_count_many(problem, offset, scale, dtype):
    check_invariance(problem, offset, scale, dtype)


def check_discrete_bounds(energies, beta):
    # F_inf - log K / beta <= F_beta <= F_inf, and F_beta -> F_inf as beta grows (finite for any finite beta)
    e = torch.tensor(energies, dtype=torch.float64)[:, None]
    f = pyebm.free_energy(lambda z: e, torch.arange(len(energies)), beta)
    f_inf = pyebm.free_energy(lambda z: e, torch.arange(len(energies)), math.inf)
    assert torch.isfinite(f).all()
    slack = 1e-12 * (1 + e.abs().max())
    assert (f <= f_inf + slack).all() and (f_inf - f <= math.log(len(energies)) / beta + slack).all()


ENERGIES = st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8)
BETAS = st.floats(1e-3, 1e308)


@FAST
@given(ENERGIES, BETAS)
def test_discrete_free_energy_bounds_for_any_beta(energies, beta):
    check_discrete_bounds(energies, beta)


@pytest.mark.slow
@SLOW
@given(ENERGIES, BETAS)
def test_discrete_free_energy_bounds_for_any_beta_many(energies, beta):
    check_discrete_bounds(energies, beta)


@FAST
@given(quadratics(), st.floats(1e-2, 1e300), st.floats(-1e3, 1e3))
def test_continuous_free_energy_of_a_quadratic_is_exact_for_any_beta(problem, beta, offset):
    A, mu = problem
    energy = lambda z: 0.5 * ((z - mu) @ A * (z - mu)).sum(-1) + offset  # noqa: E731
    d = len(mu)
    exact = offset - (0.5 * d * math.log(2 * math.pi / beta) - 0.5 * float(torch.logdet(A))) / beta
    f = pyebm.free_energy(energy, {"z": d}, beta)
    assert float(f.detach()) == pytest.approx(exact, rel=1e-9, abs=1e-8 * max(1.0, abs(exact)))
