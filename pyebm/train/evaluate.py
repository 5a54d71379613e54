r"""Honest evaluation of a learned 2-D energy: normalise it exactly on a grid and score it against the truth.

For a target density :math:`p` and the learned :math:`q_\theta = e^{-E_\theta}/Z_\theta` (normalised over the
target's box by the trapezoid rule), the test negative log-likelihood satisfies
:math:`\mathbb E_p[-\log q_\theta] = \mathbb H[p] + \mathrm{KL}(p\,\|\,q_\theta) \ge \mathbb H[p]`; its excess
over the entropy is the KL, estimated from test points (with Monte Carlo error) and computed on the grid (without).
"""

from __future__ import annotations

import math

import torch

from ..energies.reference import _to64, grid_density
from ..state import resolve_seed

__all__ = ["evaluate_2d", "mmd", "grid_samples"]


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    r"""Unbiased squared maximum mean discrepancy with a Gaussian kernel
    :math:`k(a, b) = e^{-\|a-b\|^2/2h^2}`; ``bandwidth`` :math:`h` defaults to the median distance within ``y``."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    if bandwidth is None:
        bandwidth = float(torch.cdist(y, y).median())

    def k(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * bandwidth**2))

    n, m = len(x), len(y)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return float((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
                 - 2 * kxy.mean())


def grid_samples(grid, n: int, seed: int | None = None) -> torch.Tensor:
    """``n`` draws from a 2-D grid density: a cell by its mass, then uniformly within the cell."""
    g = torch.Generator().manual_seed(resolve_seed(seed))
    w = (grid.density * grid._weights()).reshape(-1)
    idx = torch.multinomial(w / w.sum(), n, replacement=True, generator=g)
    points = grid.points().reshape(-1, len(grid.axes))[idx]
    step = torch.tensor([float(a[1] - a[0]) for a in grid.axes], dtype=points.dtype)
    return points + (torch.rand(points.shape, dtype=points.dtype, generator=g) - 0.5) * step


def evaluate_2d(energy, target, test: torch.Tensor, num: int = 401, samples: int = 2000,
                seed: int | None = 0) -> dict:
    r"""Score a learned 2-D energy against a :class:`pyebm.energies.Target2D`.

    Returns a dict: ``nll`` (test NLL under the grid-normalised energy), ``entropy`` (of the target, on its grid),
    ``excess_nll`` (``nll - entropy``: a Monte Carlo estimate of the KL, standard error ``nll_se``), ``kl`` (the
    KL on the grid, no sampling error) and ``mmd`` (squared MMD between ``samples`` draws from the learned density
    and as many test points).
    """
    if test.dim() != 2 or test.shape[1] != 2:
        raise ValueError(f"test points must have shape (n, 2), got {tuple(test.shape)}.")
    grid = grid_density(energy, target.bounds, num)
    with torch.no_grad():
        e_test = _to64(energy)(test.double())
    log_q = -e_test - grid.log_normalizer
    nll = float(-log_q.mean())
    entropy = target.entropy()
    truth = target.grid(num=num)
    p = truth.density
    log_p = torch.where(p > 0, p.log(), torch.zeros_like(p))
    log_qg = torch.where(grid.density > 0, grid.density.log(), torch.full_like(p, -math.inf))
    kl = float((truth._weights() * p * torch.where(p > 0, log_p - log_qg, torch.zeros_like(p))).sum())
    draws = grid_samples(grid, samples, seed)
    return {
        "nll": nll, "nll_se": float(log_q.std() / math.sqrt(len(log_q))), "entropy": entropy,
        "excess_nll": nll - entropy, "kl": kl, "mmd": mmd(draws, test[:samples]),
    }

