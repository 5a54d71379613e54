r"""Curvature apart from structure: providers compute a Hessian in the structure asked for; a structure owns
``logdet``, ``solve``, ``sample`` and the marginal variances of the Gaussian it defines.

A structure describes a Gaussian :math:`\mathcal N(0, \Sigma)` over the last axis, batched over leading axes (one
Gaussian per independent problem): :class:`DensePrecision` (Laplace's :math:`\Sigma = H^{-1}`, factorised once),
:class:`DenseCovariance` (a Cholesky factor of :math:`\Sigma`, as SVI's full-rank guide has) and :class:`Diagonal`
(mean field). Nothing here builds a ``D x D`` matrix it does not need: the diagonal provider uses Hessian-vector
products. :func:`positive_definite` is the one positive-definiteness check of the library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property

import numpy as np

from ..diagnostics import InferenceError
from ..ops import ArrayOps

__all__ = ["Structure", "DensePrecision", "DenseCovariance", "Diagonal", "positive_definite", "positive_diagonal",
           "PROVIDERS", "MAX_DENSE_BYTES"]

#: a dense D x D curvature above this many bytes is refused before it is allocated
MAX_DENSE_BYTES = 4 * 2**30


class Structure:
    """A Gaussian's covariance in some structure, over the last axis (batched over leading axes)."""

    ops: ArrayOps

    def logdet_precision(self):
        r""":math:`\log\det\Sigma^{-1}` per batch element."""
        raise NotImplementedError

    def solve(self, v):
        r""":math:`\Sigma v` for ``v`` of shape ``(*batch, D)``: the precision's inverse applied."""
        raise NotImplementedError

    def quadratic(self, v):
        r""":math:`v^\top\Sigma v` for ``v`` of shape ``(*batch, D)`` (e.g. a Newton decrement's square)."""
        return self.ops.sum(v * self.solve(v), -1)

    def sample(self, eps):
        r"""Draws :math:`\Sigma^{1/2}\varepsilon` from standard normal ``eps`` of shape ``(n, *batch, D)``."""
        raise NotImplementedError

    def variance(self):
        """Marginal variances ``(*batch, D)``."""
        raise NotImplementedError

    def covariance(self):
        """The dense covariance ``(*batch, D, D)`` (built on request only)."""
        raise NotImplementedError

    def index(self, i) -> Structure:
        """The structure of batch element(s) ``i`` (an index into the leading axis)."""
        raise NotImplementedError

    def precision_form(self):
        """The precision in its own form: a dense matrix, or a vector of diagonal precisions."""
        raise NotImplementedError


class DensePrecision(Structure):
    r"""A dense precision :math:`H = LL^\top`, factorised once; :math:`\Sigma = H^{-1}`."""

    def __init__(self, precision, chol, ops: ArrayOps):
        self.precision, self.chol, self.ops = precision, chol, ops

    def logdet_precision(self):
        return 2 * self.ops.sum(self.ops.log(self.ops.diagonal(self.chol)), -1)

    def solve(self, v):
        if self.chol.ndim == 2 and v.ndim > 1 and math.prod(v.shape[:-1]) >= v.shape[-1]:
            # at least D vectors: the covariance (formed once, kept) times each beats two triangular solves each
            return (v.reshape(-1, v.shape[-1]) @ self._covariance).reshape(v.shape)
        if self.chol.ndim == 2 and v.ndim > 1:  # one factor, many vectors: one solve with many right-hand sides
            flat = self.ops.permute(v.reshape(-1, v.shape[-1]), (1, 0))
            return self.ops.permute(self.ops.cho_solve(self.chol, flat), (1, 0)).reshape(v.shape)
        return self.ops.cho_solve(self.chol, v[..., None])[..., 0]

    def sample(self, eps):
        ops = self.ops
        moved = ops.permute(eps, (*range(1, eps.ndim), 0))  # (*batch, D, n)
        chol = ops.broadcast_to(self.chol, tuple(moved.shape[:-2]) + tuple(self.chol.shape[-2:]))
        x = ops.solve_triangular(chol, moved, upper=False, transpose=True)
        return ops.permute(x, (x.ndim - 1, *range(x.ndim - 1)))

    @cached_property
    def _covariance(self):
        return self.ops.cholesky_inverse(self.chol)

    def variance(self):
        return self.ops.diagonal(self._covariance)

    def covariance(self):
        return self._covariance

    def index(self, i) -> DensePrecision:
        return DensePrecision(self.precision[i], self.chol[i], self.ops)

    def precision_form(self):
        return self.precision


class DenseCovariance(Structure):
    r"""A Cholesky factor :math:`L` of the covariance, :math:`\Sigma = LL^\top`."""

    def __init__(self, scale_tril, ops: ArrayOps):
        self.scale_tril, self.ops = scale_tril, ops

    def logdet_precision(self):
        return -2 * self.ops.sum(self.ops.log(self.ops.diagonal(self.scale_tril)), -1)

    def solve(self, v):
        return (self.covariance() @ v[..., None])[..., 0]

    def sample(self, eps):
        return (self.scale_tril @ eps[..., None])[..., 0]

    def variance(self):
        return self.ops.sum(self.scale_tril * self.scale_tril, -1)

    @cached_property
    def _covariance(self):
        L = self.scale_tril
        return L @ self.ops.permute(L, (*range(L.ndim - 2), L.ndim - 1, L.ndim - 2))

    def covariance(self):
        return self._covariance

    def index(self, i) -> DenseCovariance:
        return DenseCovariance(self.scale_tril[i], self.ops)

    def precision_form(self):
        return self.ops.cholesky_inverse(self.scale_tril)


class Diagonal(Structure):
    """Independent coordinates: a vector of variances."""

    def __init__(self, variance, ops: ArrayOps):
        self._variance, self.ops = variance, ops

    @classmethod
    def from_precision(cls, precision, ops: ArrayOps) -> Diagonal:
        return cls(1.0 / precision, ops)

    def logdet_precision(self):
        return -self.ops.sum(self.ops.log(self._variance), -1)

    def solve(self, v):
        return self._variance * v

    def sample(self, eps):
        return eps * self._variance**0.5

    def variance(self):
        return self._variance

    def covariance(self):
        return self.ops.eye(self._variance.shape[-1], self._variance) * self._variance[..., None, :]

    def index(self, i) -> Diagonal:
        return Diagonal(self._variance[i], self.ops)

    def precision_form(self):
        return 1.0 / self._variance


# --- the positive-definiteness check ------------------------------------------------------------------------------
def factor(H, ops: ArrayOps):
    """Cholesky factors of a batch of symmetric matrices and whether each is positive definite beyond round-off.

    A factorisation can succeed on a singular matrix by round-off (a pivot of ~1e-8 where 0 is due), so each pivot
    must also keep more than round-off of its diagonal entry: :math:`L_{jj}^2 > 10 D \varepsilon H_{jj}`. The test
    is relative per coordinate, so a badly scaled but well-determined matrix (``diag(1e10, 1)``) passes. A single
    precision matrix that fails is factorised again in float64: the matrix as given is then judged, not float32's
    factorisation of it (a network's float32 GGN with condition number 1e5 is positive definite, but its float32
    pivots fall under the round-off bound).
    """
    L, ok = _factor(H, ops)
    ok = np.asarray(ops.to_numpy(ok), dtype=bool)
    if ops.eps(H) > 1e-10 and not ok.all():
        H64 = np.asarray(ops.to_numpy(H), dtype=np.float64)
        try:
            L64 = np.linalg.cholesky(H64)
            ok64 = _kept(np.diagonal(L64, axis1=-2, axis2=-1) ** 2, np.diagonal(H64, axis1=-2, axis2=-1),
                         np.finfo(np.float64).eps)
        except np.linalg.LinAlgError:
            ok64 = np.zeros_like(ok)
        if np.all(ok64):
            L, ok = ops.asarray(L64.astype(np.float32), like=H), ok64
    return L, ok


def _factor(H, ops: ArrayOps):
    L, ok = ops.cholesky(H)
    pivots = ops.to_numpy(ops.diagonal(L)).astype(np.float64) ** 2
    kept = _kept(pivots, ops.to_numpy(ops.diagonal(H)).astype(np.float64), ops.eps(H))
    return L, np.asarray(ops.to_numpy(ok), dtype=bool) & kept


def _kept(pivots: np.ndarray, diag: np.ndarray, eps: float) -> np.ndarray:
    """Whether every pivot keeps more than round-off of its diagonal entry (per matrix of a batch)."""
    with np.errstate(invalid="ignore"):
        return (pivots > 10 * diag.shape[-1] * eps * np.abs(diag)).all(-1)


def positive_definite(H, ops: ArrayOps, *, what: str = "Laplace", labels: list[str] | None = None) -> DensePrecision:
    """Factorise a (batch of) symmetric matrices, or raise :class:`pyebm.InferenceError` saying why not.

    A Cholesky factorisation that succeeds beyond round-off (:func:`factor`) is positive definite, however
    ill-conditioned (a Gaussian with a standard deviation of 7071 is fine). Where it fails, the eigenvalues tell a saddle (a negative curvature) from a flat
    direction (zero to round-off relative to the largest curvature); ``labels`` name the coordinates.
    """
    L, ok = factor(H, ops)
    if bool(np.all(ok)):
        return DensePrecision(H, L, ops)
    Hn = np.asarray(ops.to_numpy(H), dtype=np.float64).reshape((-1,) + tuple(H.shape[-2:]))
    bad = int(np.flatnonzero(~np.asarray(ok).reshape(-1))[0])
    evals, evecs = np.linalg.eigh(Hn[bad])
    top = max(float(np.abs(evals).max()), np.finfo(np.float64).tiny)
    floor = 10 * H.shape[-1] * ops.eps(H) * top
    lowest, direction = float(evals[0]), evecs[:, 0]
    where = f" for problem {bad} of the batch" if Hn.shape[0] > 1 else ""
    along = _direction(direction, labels)
    if not np.isfinite(Hn[bad]).all():
        raise InferenceError(f"{what}: the Hessian{where} has non-finite entries: the energy is not twice "
                             "differentiable at the minimum.")
    if lowest < -floor:
        raise InferenceError(
            f"{what}: the Hessian at the 'minimum'{where} is not positive definite: curvature {lowest:.3g} "
            f"(largest {top:.3g}) along {along}. The optimiser stopped at a saddle point, where no Gaussian fits. "
            "Start elsewhere (`init`), or sample with method='nuts'."
        )
    single = (" In single precision round-off is large: compute in float64 (torch.set_default_dtype(torch.float64), "
              "net.double()) to tell a flat direction from a saddle or a small curvature.") if ops.eps(H) > 1e-10 else ""
    raise InferenceError(
        f"{what}: the Hessian at the minimum{where} is not positive definite but singular: curvature {lowest:.3g} "
        f"along {along} is zero to round-off ({floor:.3g}; largest curvature {top:.3g}): a flat direction, where the "
        "energy does not confine the latent. Add a prior that curves it, fix the redundant parameter, or sample with "
        "method='nuts'." + single
    )


def _direction(v: np.ndarray, labels: list[str] | None) -> str:
    order = np.argsort(-np.abs(v))[:4]
    names = labels or [f"u[{i}]" for i in range(len(v))]
    return "(" + ", ".join(f"{names[i]}: {v[i]:+.2f}" for i in order if abs(v[i]) > 1e-3) + ")"


def check_dense_size(dim: int, batch: int, itemsize: int, what: str) -> None:
    """Refuse a dense ``dim x dim`` curvature (per problem) larger than :data:`MAX_DENSE_BYTES`, before allocating."""
    need = batch * dim * dim * itemsize
    if need > MAX_DENSE_BYTES:
        raise MemoryError(
            f"{what}: a dense {dim} x {dim} Hessian{' per problem' if batch > 1 else ''} needs "
            f"{need / 2**30:.1f} GiB (limit {MAX_DENSE_BYTES / 2**30:.0f} GiB). Use hessian='diag', or fewer latents."
        )


# --- providers ------------------------------------------------------------------------------------------------
def full_hessian(potential: Callable, u, ops: ArrayOps, what: str, labels=None, hessian=None) -> DensePrecision:
    """The exact dense Hessian of ``potential`` at ``u`` (``(B, D)``), checked positive definite."""
    if hessian is None:
        check_dense_size(u.shape[-1], u.shape[0], u.itemsize, what)
        hessian = ops.hessian(potential, u)
    return positive_definite(hessian, ops, what=what, labels=labels)


def diagonal_hessian(potential: Callable, u, ops: ArrayOps, what: str, labels=None, hessian=None) -> Diagonal:
    """The exact Hessian's diagonal by Hessian-vector products (memory O(D) per chunk), checked positive."""
    h = ops.diagonal(hessian) if hessian is not None else ops.hessian_diagonal(potential, u)
    return positive_diagonal(h, ops, what, labels)


def positive_diagonal(h, ops: ArrayOps, what: str, labels=None, part: str = "the Hessian diagonal") -> Diagonal:
    """A (batch of) diagonal precision(s) ``h`` as a :class:`Diagonal`, or :class:`pyebm.InferenceError` naming the
    first coordinate where it is not positive."""
    hn = np.asarray(ops.to_numpy(h), dtype=np.float64)
    if not np.isfinite(hn).all():
        raise InferenceError(f"{what}: {part} has non-finite entries: the energy is not twice "
                             "differentiable at the minimum.")
    if (hn <= 0).any():
        i = np.unravel_index(int(np.argmin(hn)), hn.shape)[-1]
        name = labels[i] if labels else f"u[{i}]"
        kind = "a saddle (negative curvature)" if hn.reshape(-1).min() < 0 else "a flat direction (zero curvature)"
        raise InferenceError(f"{what}: {part} is not positive at {name} ({hn.reshape(-1).min():.3g}): "
                             f"{kind}, where no Gaussian fits. Add a prior that curves it, or sample with method='nuts'.")
    return Diagonal.from_precision(h, ops)


#: hessian structure name -> provider ``(potential, u, ops, what, labels, hessian) -> Structure``
PROVIDERS: dict[str, Callable] = {"full": full_hessian, "diag": diagonal_hessian}


def gaussian_log_evidence(energy_at_mode, structure: Structure, dim: int):
    r"""Laplace's :math:`\log Z \approx -U(\hat u) + \tfrac D2\log 2\pi - \tfrac12\log\det H` per problem."""
    return -energy_at_mode + 0.5 * dim * math.log(2 * math.pi) - 0.5 * structure.logdet_precision()
