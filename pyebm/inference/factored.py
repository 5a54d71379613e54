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

    A factored block is eigendecomposed once: :math:`B \otimes A + \delta I = (Q_B \otimes Q_A)(\Lambda_B \otimes
    \Lambda_A + \delta)(Q_B \otimes Q_A)^\top`, so the log-determinant, solves, draws and marginal variances cost
    :math:`O(\mathrm{out}^3 + \mathrm{in}^3 + \mathrm{out}\cdot\mathrm{in}\cdot(\mathrm{out}+\mathrm{in}))` per layer
    and no ``D x D`` matrix is built; a dense block, and a factored one with a ``1 x 1`` factor (no larger than its
    other factor), is Cholesky factored. ``blocks``: a list of ``(name, index, B, A, delta)`` (``A`` None for a dense
    block ``B``; ``delta`` a number, or for a dense block a vector), ``index`` the block's coordinates in ``u``.
    """

    def __init__(self, blocks: list, dim: int, ops: ArrayOps, what: str = "Laplace"):
        self.blocks, self.dim, self.ops = blocks, dim, ops
        factored = [A is not None and min(len(B), len(A)) > 1 for _, _, B, A, _ in blocks]  # else dense (a 1x1 factor)
        #: ``(index, part)``: a factored block with its coordinates, or the dense blocks of one size together, the
        #: coordinates of each a row of ``index`` (one batched operation for them all)
        self._parts = [(torch.as_tensor(index), _Factored(B, A, delta, name, what))
                       for (name, index, B, A, delta), f in zip(blocks, factored) if f]
        self._parts += _dense_groups([(name, index, B if A is None else torch.kron(B, A), delta)
                                      for (name, index, B, A, delta), f in zip(blocks, factored) if not f], what)

    def _blockwise(self, v, fn):
        out = torch.zeros_like(v)
        for index, part in self._parts:
            out[..., index] = fn(part, v[..., index])
        return out

    def logdet_precision(self):
        return sum(part.logdet() for _, part in self._parts)

    def solve(self, v):
        return self._blockwise(v, lambda part, x: part.solve(x))

    def quadratic(self, v):
        return sum(part.quadratic(v[..., index]) for index, part in self._parts)

    def sample(self, eps):
        return self._blockwise(eps, lambda part, x: part.sample(x))

    def variance(self):
        ref = self.blocks[0][2]
        out = self.ops.zeros((self.dim,), ref)
        for index, part in self._parts:
            out[index] = part.variance()
        return out

    def covariance(self):
        ref = self.blocks[0][2]
        check_dense_size(self.dim, 1, ref.element_size(), "the Kronecker Laplace's covariance")
        return self.solve(self.ops.eye(self.dim, ref))

    def index(self, i) -> Kronecker:
        return self

    def precision_form(self):
        return {name: (B, A, delta) for name, _, B, A, delta in self.blocks}


def _not_positive_definite(values: torch.Tensor, name: str, what: str) -> InferenceError:
    return InferenceError(
        f"{what}: the curvature block of {name} is not positive definite (smallest eigenvalue "
        f"{float(values.min()):.3g}, largest {float(values.abs().max()):.3g}): its prior adds no curvature where the "
        "data add none. Give its weights a proper prior.")


def _tolerance(n: int, dtype) -> float:
    """The smallest eigenvalue (or Cholesky pivot squared) a block of size ``n`` must exceed, relative to its
    largest."""
    return 10 * n * torch.finfo(dtype).eps


def _dense_groups(blocks: list, what: str) -> list[tuple[torch.Tensor, _Dense]]:
    """The dense blocks ``B + diag(delta)`` (``blocks``: ``(name, index, B, delta)``) Cholesky factored, those of one
    size together: ``[(index (k, n), _Dense)]``. A block that is not positive definite (a failed or a vanishing
    pivot) raises, named."""
    by_size = {}
    for block in blocks:
        by_size.setdefault(len(block[2]), []).append(block)
    out = []
    for n, group in by_size.items():
        P = torch.stack([B for _, _, B, _ in group])
        for k, (_, _, _, delta) in enumerate(group):
            P[k].diagonal().add_(delta)
        L, info = torch.linalg.cholesky_ex(P)
        top = P.diagonal(dim1=-2, dim2=-1).amax(-1).clamp_min(1e-300)
        bad = (info != 0) | (L.diagonal(dim1=-2, dim2=-1).amin(-1) ** 2 <= _tolerance(n, P.dtype) * top)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise _not_positive_definite(torch.linalg.eigvalsh(P[k]), group[k][0], what)
        out.append((torch.stack([torch.as_tensor(index) for _, index, _, _ in group]), _Dense(L)))
    return out


class _Dense:
    r"""Dense blocks of one size, :math:`P_k = B_k + \mathrm{diag}(\delta_k) = L_kL_k^\top`, by their Cholesky factors
    ``L`` ``(k, n, n)``; a vector of them is ``(..., k, n)``."""

    def __init__(self, L):
        self.L = L

    def logdet(self):
        return 2 * torch.diagonal(self.L, dim1=-2, dim2=-1).log().sum()

    def solve(self, x):
        return torch.cholesky_solve(x[..., None], self.L)[..., 0]

    def quadratic(self, x):
        return (torch.linalg.solve_triangular(self.L, x[..., None], upper=False) ** 2).sum((-3, -2, -1))

    def sample(self, x):  # L^{-T} x: covariance (L L^T)^{-1}
        return torch.linalg.solve_triangular(self.L.mT, x[..., None], upper=True)[..., 0]

    def variance(self):
        eye = torch.eye(self.L.shape[-1], dtype=self.L.dtype, device=self.L.device)
        return (torch.linalg.solve_triangular(self.L, eye, upper=False) ** 2).sum(-2)


class _Factored:
    r"""A Kronecker-factored block :math:`B \otimes A + \delta I`, by the eigendecompositions of its factors (PSD:
    round-off below 0 clipped)."""

    def __init__(self, B, A, delta: float, name: str, what: str):
        if B.shape == A.shape:  # one batched call
            (lb, la), (self.Qb, self.Qa) = torch.linalg.eigh(torch.stack([B, A]))
        else:
            (lb, self.Qb), (la, self.Qa) = torch.linalg.eigh(B), torch.linalg.eigh(A)
        self.values = lb.clamp_min(0)[:, None] * la.clamp_min(0)[None, :] + delta
        if bool((self.values <= _tolerance(self.values.numel(), self.values.dtype)
                 * self.values.abs().max().clamp_min(1e-300)).any()):
            raise _not_positive_definite(self.values, name, what)

    def logdet(self):
        return self.values.log().sum()

    def _rotated(self, x):  # Q_B^T X Q_A, with X the (out, in) matrix of each vector x
        X = x.reshape(*x.shape[:-1], *self.values.shape)
        return self.Qb.T @ X @ self.Qa

    def _back(self, Y, shape):
        return (self.Qb @ Y @ self.Qa.T).reshape(shape)

    def solve(self, x):
        return self._back(self._rotated(x) / self.values, x.shape)

    def quadratic(self, x):
        return (self._rotated(x) ** 2 / self.values).flatten(-2).sum(-1)

    def sample(self, x):
        return self._back(self._rotated(x) * self.values.rsqrt(), x.shape)

    def variance(self):
        return ((self.Qb**2) @ (1 / self.values) @ (self.Qa**2).T).reshape(-1)
