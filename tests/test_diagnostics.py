import warnings

import numpy as np
import pytest
import torch

from pyebm.diagnostics import check_beta, ess_bulk, split_rhat


def ar1(n_chains, n, rho, seed, shift=None):
    g = np.random.default_rng(seed)
    x = np.zeros((n_chains, n))
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + g.normal(size=n_chains)
    if shift is not None:
        x += np.asarray(shift)[:, None]
    return x


@pytest.mark.parametrize("rho, shift", [(0.0, None), (0.9, None), (0.5, [0.0, 0.0, 2.0, 0.0])])
def test_ess_and_rhat_agree_with_arviz(rho, shift):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    x = ar1(4, 500, rho, seed=0, shift=shift)
    assert ess_bulk(torch.from_numpy(x)) == pytest.approx(float(az.ess(x, method="bulk")), rel=1e-6)
    assert split_rhat(torch.from_numpy(x)) == pytest.approx(float(az.rhat(x, method="rank")), rel=1e-6)


@pytest.mark.parametrize("beta, ok", [(0.0, True), (2.5, True), (torch.tensor(1.0), True), (-1, False)])
def test_check_beta(beta, ok):
    if ok:
        assert check_beta(beta) == float(beta)
    else:
        with pytest.raises(ValueError, match="negative"):
            check_beta(beta)


def test_check_beta_zero_and_inf_where_meaningless():
    with pytest.raises(ValueError, match="beta > 0"):
        check_beta(0.0, allow_zero=False)
    assert check_beta(float("inf"), allow_inf=True) == float("inf")
    with pytest.raises(TypeError):
        check_beta("hot")


def test_normal_scores_match_scipy_ranks_with_ties():
    from scipy.special import ndtri
    from scipy.stats import rankdata

    from pyebm.diagnostics import _normal_scores

    g = np.random.default_rng(0)
    x = g.normal(size=(500, 3))
    x[10:20] = x[9]  # a run of rejected proposals: every column tied
    x[:, 2] = g.integers(0, 4, size=500)  # heavy ties
    expected = ndtri((rankdata(x, axis=0, method="average") - 0.375) / 500.25)
    scores, ordered = _normal_scores(np.ascontiguousarray(x.T))
    np.testing.assert_allclose(scores.T, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ordered, np.sort(x.T, axis=1))


def test_rhat_and_ess_split_over_threads_equal_arviz(monkeypatch):
    """The column-parallel path (many draws) gives ArviZ's numbers column by column, ties from rejections included."""
    import arviz as az

    from pyebm import diagnostics

    g = np.random.default_rng(1)
    x = g.normal(size=(4, 200, 5)).cumsum(1)  # autocorrelated chains
    x[:, 50:60] = x[:, 49:50]  # rejections: ties
    monkeypatch.setattr(diagnostics, "PARALLEL_SIZE", 100)
    monkeypatch.setattr(diagnostics, "_cores", lambda: 2)
    rhat, ess = diagnostics.rhat_and_ess(x)
    for j in range(5):
        assert ess[j] == pytest.approx(float(az.ess(x[..., j], method="bulk")), rel=1e-6)
        assert rhat[j] == pytest.approx(float(az.rhat(x[..., j], method="rank")), rel=1e-6)
