"""Joint embeddings: positive pairs alone collapse; InfoNCE and the variance-covariance regulariser do not."""

import pytest
import torch

from pyebm.train import JointEmbedding, embedding_collapse, fit


@pytest.fixture
def views(float64):
    # two noisy non-linear views of a 4-D latent s
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2000, 4, generator=g)
    A, B = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    x = torch.tanh(s @ A) + 0.1 * torch.randn(2000, 16, generator=g)
    y = torch.tanh(s @ B) + 0.1 * torch.randn(2000, 16, generator=g)
    return s, x, y


def _probe_r2(z, s):
    """R² of the best linear prediction of the latent s from embeddings z."""
    Z = torch.cat([z, torch.ones(len(z), 1)], 1)
    coef = torch.linalg.lstsq(Z, s).solution
    return 1 - float(((Z @ coef - s) ** 2).sum() / ((s - s.mean(0)) ** 2).sum())


@pytest.mark.parametrize("method, options, collapses", [
    ("variance_covariance", dict(variance=0.0, covariance=0.0), True),  # the bare energy of positive pairs
    ("infonce", dict(temperature=0.1), False),
    ("variance_covariance", {}, False),
])
def test_collapse_and_its_two_cures(views, method, options, collapses):
    s, x, y = views
    torch.manual_seed(0)
    energy = JointEmbedding(16, 16, embed=8)
    fit(energy, (x, y), method, steps=300, lr=3e-3, seed=0, progress=False, **options)
    with torch.no_grad():
        _, sy = energy.embed(x[:1000], y[:1000])
    metric = embedding_collapse(sy)
    if collapses:  # embeddings shrink to a point: nothing of s survives (measured std 0.006, R² 0.24)
        assert metric["std"] < 0.05
    else:  # measured std ≈ 1, effective rank ≈ 4 (the latent's dimension), R² ≈ 0.9
        assert metric["std"] > 0.5 and metric["effective_rank"] > 3.0
        assert _probe_r2(sy, s[:1000]) > 0.75


def test_collapse_metric_extremes():
    g = torch.Generator().manual_seed(0)
    assert embedding_collapse(torch.zeros(100, 4))["effective_rank"] == 0.0
    line = torch.randn(500, 1, generator=g) * torch.ones(1, 4)
    assert embedding_collapse(line)["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert embedding_collapse(torch.randn(5000, 4, generator=g))["effective_rank"] > 3.9
