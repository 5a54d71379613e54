r"""Joint-embedding energies (JEPA-style) and the two ways to keep them from collapsing.

:math:`E(x, y) = \|\mathrm{pred}(\mathrm{enc}_x(x)) - \mathrm{enc}_y(y)\|^2` is zero for compatible pairs. Trained
on positive pairs alone it has a trivial minimiser: constant embeddings make every pair compatible (collapse).
Contrastive training (``"infonce"``) pushes the other pairs of the batch up; the regularized alternative
(``"variance_covariance"``, after VICReg, Bardes et al. 2022) uses no negatives: it keeps each embedding coordinate's
standard deviation above a floor and decorrelates the coordinates, which limits the volume of low energy from the
representation side. :func:`embedding_collapse` measures the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..energy import Energy
from ..inference.registry import positive_float
from .base import Objective, register_objective

__all__ = ["JointEmbedding", "variance_covariance_loss", "VarianceCovariance", "embedding_collapse"]


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers[:-1])


class JointEmbedding(Energy):
    r"""Joint-embedding energy :math:`E(x, y) = \|\mathrm{pred}(\mathrm{enc}_x(x)) - \mathrm{enc}_y(y)\|^2`.

    ``x`` and ``y`` broadcast over their leading dimensions (``energy(x[:, None], y[None, :])`` is the matrix of
    pair energies InfoNCE uses). Encoders are MLPs ``dim -> hidden -> embed``, the predictor a linear map.
    """

    def __init__(self, dim_x: int, dim_y: int, embed: int = 8, hidden: Sequence[int] = (64,)):
        super().__init__()
        self.enc_x = _mlp([dim_x, *hidden, embed])
        self.enc_y = _mlp([dim_y, *hidden, embed])
        self.predictor = nn.Linear(embed, embed)

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted embedding of ``y`` from ``x``, and ``y``'s own embedding."""
        return self.predictor(self.enc_x(x)), self.enc_y(y)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sx, sy = self.embed(x, y)
        return ((sx - sy) ** 2).sum(-1)


def variance_covariance_loss(sx: torch.Tensor, sy: torch.Tensor, invariance: float = 25.0, variance: float = 25.0,
                             covariance: float = 1.0, floor: float = 1.0) -> torch.Tensor:
    r"""VICReg's loss on two batches of embeddings ``(batch, d)``:

    .. math:: \lambda\,\overline{\|s_x - s_y\|^2}/d
              + \mu\sum_{s\in\{s_x,s_y\}}\tfrac1d\sum_j \max(0, \gamma - \sqrt{\mathrm{Var}(s_{\cdot j}) + 10^{-4}})
              + \nu\sum_{s}\tfrac1d\sum_{i\ne j} C(s)_{ij}^2 ,

    energy of the positive pairs (invariance) plus a variance floor γ and decorrelation: no negatives needed.
    """
    d = sx.shape[1]
    loss = invariance * F.mse_loss(sx, sy)
    for s in (sx, sy):
        std = torch.sqrt(s.var(0) + 1e-4)
        loss = loss + variance * F.relu(floor - std).mean()
        c = torch.cov(s.T)
        loss = loss + covariance * (c.pow(2).sum() - c.diagonal().pow(2).sum()) / d
    return loss


@register_objective("variance_covariance")
@dataclasses.dataclass
class VarianceCovariance(Objective):
    """Regularized joint-embedding training (:func:`variance_covariance_loss`) on pairs ``(x, y)``; the energy must
    have ``embed(x, y)`` (:class:`JointEmbedding`). ``variance=0, covariance=0`` leaves the bare energy of positive
    pairs, which collapses."""

    invariance: float = 25.0
    variance: float = 25.0
    covariance: float = 1.0
    floor: float = 1.0


    def check(self) -> None:
        for name in ("invariance", "variance", "covariance"):
            positive_float("VarianceCovariance", name, getattr(self, name), allow_zero=True)
        positive_float("VarianceCovariance", "floor", self.floor)
        super().check()

    def loss(self, energy, batch, state, generator):
        if isinstance(batch, torch.Tensor) or len(batch) != 2 or not hasattr(energy, "embed"):
            raise TypeError("method 'variance_covariance' trains a joint embedding (an energy with embed(x, y)) on "
                            "pairs: pass data=(x, y).")
        sx, sy = energy.embed(*batch)
        return variance_covariance_loss(sx, sy, self.invariance, self.variance, self.covariance, self.floor), len(sx)


def embedding_collapse(z: torch.Tensor) -> dict:
    r"""How collapsed a batch of embeddings ``(n, d)`` is: the mean coordinate standard deviation, and the effective
    rank :math:`\exp(-\sum_i p_i\log p_i)` of the normalised covariance eigenvalues :math:`p_i` (d when the
    embedding uses every direction evenly, 1 when it lies on a line, near 0 std when it is a point)."""
    z = z.detach().double()
    std = float(z.std(0).mean())
    eig = torch.linalg.eigvalsh(torch.cov(z.T)).clamp_min(0)
    if float(eig.sum()) == 0:
        return {"std": std, "effective_rank": 0.0}
    p = eig / eig.sum()
    p = p[p > 0]
    return {"std": std, "effective_rank": float(torch.exp(-(p * p.log()).sum()))}
