"""Latents-on training learns through the inner adaptation; the cache reuses posteriors within its radius."""

import pytest
import torch

from pyebm.ttt import AdaptationCache, adapt, fit, supervised


def _data(n, shift, g):
    """Two Gaussian classes in 2-D, the whole set shifted by `shift` (a domain)."""
    y = torch.randint(2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) * 0.5 + torch.stack([2.0 * y - 1, torch.zeros(n)], 1) + shift
    return x, y


def test_latents_on_training_learns_and_tunes_the_prior_scale(float64):
    g = torch.Generator().manual_seed(0)
    x, y = _data(2000, 0.0, g)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def domain(xb, gen):  # each batch is a domain: shifted as a whole
        return xb + 0.5 * torch.randn(1, 2, generator=gen, dtype=xb.dtype)

    result = fit(net, (x, y), "0.bias", "entropy", prior_scale=0.1, domain=domain, steps=200, lr=1e-2, seed=0,
                 progress=False)
    assert sum(result.loss[-20:]) / 20 < 0.5 * sum(result.loss[:20]) / 20  # it learned (measured 0.49 -> 0.16)
    assert result.prior_scale != pytest.approx(0.1, rel=1e-3)  # the prior scale moved through the inner loop
    frozen = fit(net, (x, y), "0.bias", prior_scale=0.1, learn_prior_scale=False, steps=5, seed=0, progress=False)
    assert frozen.prior_scale == pytest.approx(0.1)


def test_cache_reuses_within_the_radius_and_matches_fresh_adaptation(float64):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 3, generator=g)
    y = torch.randn(10, generator=g)
    energy = supervised("squared", 0.5)

    def run(idx):
        return adapt(net, (x[idx], y[idx]), "weight", energy, "laplace", prior_scale=0.3, independent=True)

    cache = AdaptationCache(embed=lambda idx_x: idx_x, radius=0.0)
    first = cache.adapt(x, run)
    fresh = run(torch.arange(10))
    assert torch.allclose(first.mode["weight"], fresh.mode["weight"])
    assert cache.misses == 10 and cache.hits == 0
    again = cache.adapt(x[[2, 5]], lambda idx: pytest.fail("should have been cached"))
    assert torch.allclose(again.mode["weight"], fresh.mode["weight"][[2, 5]])
    assert torch.allclose(again.std()["weight"], fresh.std()["weight"][[2, 5]])
    assert cache.hit_rate == pytest.approx(2 / 12)
    near = AdaptationCache(embed=lambda v: v, radius=10.0)
    near.adapt(x[:1], lambda idx: run(idx))
    out = near.adapt(x[1:4], lambda idx: pytest.fail("within the radius"))
    assert torch.allclose(out.mode["weight"], fresh.mode["weight"][0].expand(3, 1, 3))
