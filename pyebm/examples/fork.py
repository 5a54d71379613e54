r"""Multimodal prediction through a latent: a car at a fork.

A car's position :math:`x \in [0, 1]` says how far into the prediction horizon the fork in the road lies; its
future lateral positions :math:`y \in \mathbb R^T` at times :math:`t_k = k/T` follow one of two branches,

.. math:: y_k = b \cdot s\,\max(0,\, t_k - x) + \text{noise}, \qquad b \in \{-1, +1\}\ \text{equally likely},

so the futures coincide before the fork and diverge after it. A predictor without a latent,
:math:`E(x, y) = \tfrac12\lVert y - f(x)\rVert^2`, learns the conditional mean: the blurry average of the two
branches, which is neither. With a latent, :math:`E(x, y, z) = \tfrac12\lVert y - m(x) - G(x)z\rVert^2 +
\tfrac\lambda2\lVert z\rVert^2` (:class:`LatentPredictor`), trained by the free energy over :math:`z` at
:math:`\beta=\infty` (``fit(..., "free_energy", latent=...)``), each value of :math:`z` predicts one future: with
:math:`z` a choice of two (one-hot), one branch each. The latent's capacity decides what can have low energy: a
continuous :math:`z` of the horizon's dimension without a penalty reconstructs every :math:`y`, and the energy is
flat (collapsed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..energies.networks import mlp
from ..energy import Energy

__all__ = ["sample", "branches", "nearest_branch_distance", "LatentPredictor"]


def _times(horizon: int, dtype) -> torch.Tensor:
    return torch.arange(1, horizon + 1, dtype=dtype) / horizon


def branches(x: torch.Tensor, horizon: int = 8, spread: float = 2.0) -> torch.Tensor:
    """The two noise-free futures for positions ``x`` (``(n, 1)``): shape ``(2, n, horizon)``, the ``+1`` branch
    first."""
    up = spread * (_times(horizon, x.dtype) - x).clamp(min=0)
    return torch.stack([up, -up])


def sample(n: int, horizon: int = 8, spread: float = 2.0, noise: float = 0.05,
           seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs ``(x (n, 1), y (n, horizon))``: ``x`` uniform on [0, 1], a branch chosen by a fair coin, Gaussian
    noise of sd ``noise`` on every future position; default dtype."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.get_default_dtype()
    x = torch.rand(n, 1, generator=g, dtype=dtype)
    sign = torch.randint(2, (n, 1), generator=g).to(dtype) * 2 - 1
    noise = noise * torch.randn(n, horizon, generator=g, dtype=dtype)
    return x, sign * branches(x, horizon, spread)[0] + noise


def nearest_branch_distance(x: torch.Tensor, prediction: torch.Tensor, spread: float = 2.0) -> torch.Tensor:
    """Euclidean distance of each predicted future (``(n, horizon)``) to the nearer of its two true branches."""
    true = branches(x, prediction.shape[-1], spread)
    return (prediction - true).norm(dim=-1).min(0).values


class LatentPredictor(Energy):
    r"""A conditional energy with a latent that enters linearly,
    :math:`E(x, y, z) = \tfrac12\lVert y - m(x) - G(x)z\rVert^2 + \tfrac\lambda2\lVert z\rVert^2`.

    :math:`m` and :math:`G` (``horizon × latent_dim``) are heads of one MLP of ``x``. With ``latent_dim=0`` there is
    no latent (``z`` is ignored): a plain regression. Pass ``z`` one-hot (support ``torch.eye(K)``) for a choice of
    ``K`` futures, :math:`m(x) + G_k(x)`, or real for a continuous latent, for which the minimum over :math:`z` is a
    (ridge) least-squares problem.

    Parameters
    ----------
    horizon : int
        Dimension of :math:`y`.
    latent_dim : int
        Dimension of :math:`z` (0: none).
    hidden : sequence of int
        Widths of the MLP (SiLU).
    penalty : float
        :math:`\lambda \ge 0`, an information penalty on continuous latents (a one-hot choice pays the same for
        every value).
    """

    def __init__(self, horizon: int = 8, latent_dim: int = 0, hidden: Sequence[int] = (64, 64), penalty: float = 0.0):
        super().__init__()
        if penalty < 0:
            raise ValueError(f"penalty must be >= 0, got {penalty}.")
        self.net = mlp(1, horizon * (1 + latent_dim), hidden)
        self.horizon, self.latent_dim, self.penalty = horizon, latent_dim, float(penalty)

    def predict(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The future :math:`m(x) + G(x)z` (:math:`m(x)` when ``z`` is None or there is no latent)."""
        out = self.net(x)
        mean = out[..., :self.horizon]
        if z is None or self.latent_dim == 0:
            return mean
        G = out[..., self.horizon:].unflatten(-1, (self.horizon, self.latent_dim))
        return mean + (G @ z.expand(*x.shape[:-1], self.latent_dim)[..., None])[..., 0]

    def forward(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        e = 0.5 * ((y - self.predict(x, z)) ** 2).sum(-1)
        if z is not None and self.penalty:
            e = e + 0.5 * self.penalty * (z**2).sum(-1)
        return e
