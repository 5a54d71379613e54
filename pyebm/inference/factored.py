r"""Factored precisions for the generalised Gauss-Newton of large models: Kronecker-factored blocks (K-FAC) and a
diagonal plus low rank. Neither builds a ``D x D`` matrix; both are :class:`~pyebm.inference.curvature.Structure`\ s, so
a :class:`~pyebm.inference.approximations.Gaussian` samples, solves and reports marginal variances through them as
through a dense precision. Torch only: the GGN reads a Pyro trace.
"""

from __future__ import annotations

import torch

from ..diagnostics import InferenceError
from ..ops import ArrayOps
from .curvature import Structure, check_dense_size

__all__ = ["LowRank", "Kronecker"]


class LowRank(Structure):
    r"""A diagonal plus a low-rank positive semi-definite precision, :math:`H = D + U S U^\top` (``U`` orthonormal,
    ``D x k``), held as :math:`H = D^{1/2}(I + W\Lambda W^\top)D^{1/2}` with :math:`W` orthonormal: every operation
    costs :math:`O(Dk)` and no ``D x D`` matrix is built (:math:`\Sigma^{1/2} = D^{-1/2}(I + W((1+\Lambda)^{-1/2} -
    1)W^\top)`, :math:`\log\det H = \sum\log D_i + \sum\log(1+\Lambda_j)`)."""

    def __init__(self, diag, U, s, ops: ArrayOps):
        self.diag, self.U, self.s, self.ops = diag, U, s, ops
        M = U * s.clamp_min(0).sqrt() / diag.sqrt()[:, None]  # D^{-1/2} U S^{1/2}
        Q, R = torch.linalg.qr(M)
        lam, V = torch.linalg.eigh(R @ R.T)
        self.W, self.lam = Q @ V, lam.clamp_min(0)

    def _apply(self, v, power: float):
        """``(I + W((1 + Λ)^power - 1) W^T) v``: a power of the bracket above, applied to ``v`` ``(..., D)``."""
        return v + ((v @ self.W) * ((1 + self.lam) ** power - 1)) @ self.W.T

    def logdet_precision(self):
        return self.diag.log().sum() + (1 + self.lam).log().sum()

    def solve(self, v):
        r = self.diag.rsqrt()
        return r * self._apply(r * v, -1.0)

    def sample(self, eps):
        return self.diag.rsqrt() * self._apply(eps, -0.5)

    def variance(self):
        return (1 + (self.W**2 * ((1 + self.lam) ** -1 - 1)).sum(-1)) / self.diag

    def covariance(self):
        check_dense_size(self.diag.shape[-1], 1, self.diag.element_size(), "the low-rank Laplace's covariance")
        return self.solve(self.ops.eye(self.diag.shape[-1], self.diag))

    def index(self, i) -> LowRank:
        return self

    def precision_form(self):
        return {"diagonal": self.diag, "eigenvectors": self.U, "eigenvalues": self.s}


class Kronecker(Structure):
    r"""A block-diagonal precision whose blocks are Kronecker factored, :math:`B \otimes A + \delta I` (a layer's
    weight, row-major ``(out, in)``; K-FAC), or dense, :math:`P` (a bias, or coordinates outside any layer).

    Each block is eigendecomposed once: :math:`B \otimes A + \delta I = (Q_B \otimes Q_A)(\Lambda_B \otimes \Lambda_A +
    \delta)(Q_B \otimes Q_A)^\top`, so the log-determinant, solves, draws and marginal variances cost
    :math:`O(\mathrm{out}^3 + \mathrm{in}^3 + \mathrm{out}\cdot\mathrm{in}\cdot(\mathrm{out}+\mathrm{in}))` per layer and
    no ``D x D`` matrix is built. ``blocks``: a list of ``(name, index, B, A, delta)`` (``A`` None for a dense block
    ``B``), ``index`` the block's coordinates in ``u``.
    """

    def __init__(self, blocks: list, dim: int, ops: ArrayOps, what: str = "Laplace"):
        self.blocks, self.dim, self.ops = blocks, dim, ops
        self._eig = []
        for name, _, B, A, delta in blocks:
            if A is None and torch.is_tensor(delta):  # a dense block with its own diagonal prior
                eig = (*torch.linalg.eigh(B + torch.diag(delta)), None)
            elif A is None:
                lb, Qb = torch.linalg.eigh(B)
                eig = (lb + delta, Qb, None)
            else:
                (lb, Qb), (la, Qa) = torch.linalg.eigh(B), torch.linalg.eigh(A)  # PSD: round-off below 0 clipped
                eig = (lb.clamp_min(0)[:, None] * la.clamp_min(0)[None, :] + delta, Qb, Qa)
            values = eig[0]
            top = float(values.abs().max())
            if not bool((values > 10 * values.numel() * ops.eps(values) * max(top, 1e-300)).all()):
                raise InferenceError(
                    f"{what}: the curvature block of {name} is not positive definite (smallest eigenvalue "
                    f"{float(values.min()):.3g}, largest {top:.3g}): its prior adds no curvature where the data add "
                    "none. Give its weights a proper prior.")
            self._eig.append(eig)

    def _blockwise(self, v, fn):
        out = torch.zeros_like(v)
        for (_, index, *_), eig in zip(self.blocks, self._eig):
            out[..., index] = fn(v[..., index], eig)
        return out

    @staticmethod
    def _rotate(x, eig, scale):
        values, Qb, Qa = eig
        if Qa is None:
            return ((x @ Qb) * scale(values)) @ Qb.T
        X = x.reshape(*x.shape[:-1], Qb.shape[0], Qa.shape[0])
        Y = Qb.T @ X @ Qa * scale(values)
        return (Qb @ Y @ Qa.T).reshape(x.shape)

    def logdet_precision(self):
        return sum(eig[0].log().sum() for eig in self._eig)

    def solve(self, v):
        return self._blockwise(v, lambda x, eig: self._rotate(x, eig, lambda val: 1 / val))

    def sample(self, eps):
        return self._blockwise(eps, lambda x, eig: self._rotate(x, eig, lambda val: val.rsqrt()))

    def variance(self):
        out = self.ops.zeros((self.dim,), self._eig[0][0])
        for (_, index, *_), (values, Qb, Qa) in zip(self.blocks, self._eig):
            out[index] = (Qb**2 @ (1 / values)) if Qa is None else ((Qb**2) @ (1 / values) @ (Qa**2).T).reshape(-1)
        return out

    def covariance(self):
        check_dense_size(self.dim, 1, self._eig[0][0].element_size(), "the Kronecker Laplace's covariance")
        return self.solve(self.ops.eye(self.dim, self._eig[0][0]))

    def index(self, i) -> Kronecker:
        return self

    def precision_form(self):
        return {name: (B, A, delta) for name, _, B, A, delta in self.blocks}

