r"""The array seam: the few array, linear-algebra, autodiff and random operations that pyebm's algorithms use.

The minimiser, the curvature structures, the Gaussian approximations and the free energy are written once against
an :class:`ArrayOps`; :data:`TORCH` serves torch tensors and :class:`pyebm.numpyro.ops.JaxOps` serves JAX arrays.
Arrays keep the dtype and device of the array they are made ``like``, so an algorithm runs where its input lives.

Conventions: ``fn`` in the autodiff helpers maps a batch of points ``u`` of shape ``(B, D)`` to values ``(B,)``,
each value depending on its own row only (independent problems, or one problem with ``B = 1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["ArrayOps", "TorchOps", "TORCH", "ops_for"]

Array = Any


class ArrayOps:
    """The operations an algorithm may use; one subclass per array library. Everything else is operators."""

    name = ""

    # --- creation and host conversion ------------------------------------------------------------------------
    def zeros(self, shape, like: Array) -> Array: ...
    def full(self, shape, value: float, like: Array) -> Array: ...
    def eye(self, n: int, like: Array) -> Array: ...
    def asarray(self, x, like: Array) -> Array: ...
    def to_numpy(self, x: Array) -> np.ndarray: ...
    def eps(self, like: Array) -> float: ...

    # --- elementwise, reductions, shapes -------------------------------------------------------------------
    def where(self, cond: Array, a: Array, b: Array) -> Array: ...
    def logsumexp(self, x: Array, axis: int) -> Array: ...
    def amin(self, x: Array, axis=None) -> Array: ...
    def isfinite(self, x: Array) -> Array: ...
    def sum(self, x: Array, axis=None) -> Array: ...
    def amax(self, x: Array, axis=None) -> Array: ...
    def concat(self, xs, axis: int = 0) -> Array: ...
    def stack(self, xs, axis: int = 0) -> Array: ...
    def diagonal(self, x: Array) -> Array: ...
    def log(self, x: Array) -> Array: ...
    def exp(self, x: Array) -> Array: ...
    def permute(self, x: Array, axes) -> Array: ...
    def broadcast_to(self, x: Array, shape) -> Array: ...
    def detach(self, x: Array) -> Array: ...
    def scatter(self, base: Array, index, values: Array) -> Array:
        """``base`` (last axis D) broadcast to ``values``' leading shape, with ``values`` at positions ``index``."""

    # --- linear algebra (batched over leading dimensions) --------------------------------------------------
    def cholesky(self, H: Array) -> tuple[Array, Array]:
        """Lower Cholesky factor and a boolean per matrix: whether the factorisation succeeded (H positive definite)."""
    def cho_solve(self, L: Array, b: Array) -> Array: ...
    def solve_triangular(self, L: Array, b: Array, *, upper: bool, transpose: bool = False) -> Array: ...
    def cholesky_inverse(self, L: Array) -> Array: ...
    def eigvalsh(self, H: Array) -> Array: ...

    # --- autodiff --------------------------------------------------------------------------------------------
    def value_and_grad(self, fn: Callable) -> Callable:
        """``u (B, D) -> (fn(u) (B,), d fn / du (B, D))``."""
    def hessian(self, fn: Callable, u: Array, chunk: int | None = None) -> Array:
        """Per-row Hessian blocks ``(B, D, D)`` of ``fn`` at ``u`` (``chunk`` directions at a time)."""
    def hessian_diagonal(self, fn: Callable, u: Array, chunk: int | None = None) -> Array:
        """The diagonals ``(B, D)`` of the per-row Hessians, by Hessian-vector products, never a D x D matrix."""
    def grad_and_hessian(self, fn: Callable, u: Array) -> tuple[Array, Array]:
        """Per-row gradients ``(B, D)`` and Hessians ``(B, D, D)`` at ``u``, differentiable with respect to what ``fn``
        closes over and to ``u`` (for implicit derivatives; stop ``u``'s gradient first to make it a constant)."""

    def vmap(self, fn: Callable) -> Callable:
        """``fn`` of one point mapped over the leading dimension of its array arguments."""

    # --- randomness --------------------------------------------------------------------------------------------
    def normal(self, seed: int, shape, like: Array) -> Array:
        """Standard normal draws from their own stream (the global RNG is left alone)."""


NO_GRADIENT = ("the energy does not depend on the latent variables (it has no gradient path to them: a constant, a "
               "detached tensor, or a density masked out entirely), so there is nothing to infer. Check that the "
               "energy is computed from the values the model samples, without .detach() or .item().")

#: elements of a chunk of Hessian-vector products held at once (chunk = budget // D directions)
HVP_BUDGET = 2**22


def _chunk(dim: int, chunk: int | None) -> int:
    return max(1, min(dim, chunk if chunk is not None else HVP_BUDGET // max(dim, 1)))


class TorchOps(ArrayOps):
    """:class:`ArrayOps` for torch tensors."""

    name = "torch"

    def zeros(self, shape, like):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def full(self, shape, value, like):
        return torch.full(shape, value, dtype=like.dtype, device=like.device)

    def eye(self, n, like):
        return torch.eye(n, dtype=like.dtype, device=like.device)

    def asarray(self, x, like):
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)

    def to_numpy(self, x):
        return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

    def eps(self, like):
        return float(torch.finfo(like.dtype).eps)

    def where(self, cond, a, b):
        return torch.where(cond, a, b)

    def logsumexp(self, x, axis):
        return torch.logsumexp(x, axis)

    def amin(self, x, axis=None):
        return x.amin() if axis is None else x.amin(axis)

    def isfinite(self, x):
        return torch.isfinite(x)

    def sum(self, x, axis=None):
        return x.sum() if axis is None else x.sum(axis)

    def amax(self, x, axis=None):
        return x.amax() if axis is None else x.amax(axis)

    def concat(self, xs, axis=0):
        return torch.cat(list(xs), axis)

    def stack(self, xs, axis=0):
        return torch.stack(list(xs), axis)

    def diagonal(self, x):
        return x.diagonal(dim1=-2, dim2=-1)

    def log(self, x):
        return torch.log(x)

    def exp(self, x):
        return torch.exp(x)

    def permute(self, x, axes):
        return x.permute(*axes)

    def broadcast_to(self, x, shape):
        return x.expand(shape)

    def detach(self, x):
        return x.detach()

    def scatter(self, base, index, values):
        out = base.expand(tuple(values.shape[:-1]) + tuple(base.shape[-1:])).clone()
        out[..., torch.as_tensor(index, device=base.device)] = values
        return out

    def cholesky(self, H):
        L, info = torch.linalg.cholesky_ex(H)
        return L, info == 0

    def cho_solve(self, L, b):
        return torch.cholesky_solve(b, L)

    def solve_triangular(self, L, b, *, upper, transpose=False):
        return torch.linalg.solve_triangular(L.transpose(-1, -2) if transpose else L, b, upper=upper != transpose)

    def cholesky_inverse(self, L):
        return torch.cholesky_inverse(L)

    def eigvalsh(self, H):
        return torch.linalg.eigvalsh(H)

    def value_and_grad(self, fn):
        def vg(u):
            with torch.enable_grad():
                u = u.detach().requires_grad_(True)
                f = fn(u)
                if not f.requires_grad:
                    raise ValueError(NO_GRADIENT)
                (g,) = torch.autograd.grad(f.sum(), u, allow_unused=True)
            return f.detach(), (torch.zeros_like(u) if g is None else g.detach())

        return vg

    def _hvp(self, fn, u):
        """A function of directions ``(k, B, D)`` giving the Hessian-vector products of every row along each: the
        gradient's graph is built once and reused for every batch of directions."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(u).sum(), u, create_graph=True)

        def products(directions):
            if not g.requires_grad:  # the gradient does not depend on u (an energy linear in it): no curvature
                return torch.zeros_like(directions)
            with torch.enable_grad():
                try:
                    (hv,) = torch.autograd.grad(g, u, grad_outputs=directions, is_grads_batched=True,
                                                retain_graph=True)
                except RuntimeError:  # an operation without a batching rule: one backward pass per direction
                    hv = torch.stack([torch.autograd.grad(g, u, grad_outputs=v, retain_graph=True)[0]
                                      for v in directions])
            return hv.detach()

        return products

    def hessian(self, fn, u, chunk=None):
        B, D = u.shape
        size = _chunk(D, chunk)
        eye = torch.eye(D, dtype=u.dtype, device=u.device)
        products = self._hvp(fn, u)
        cols = [products(eye[start : start + size, None, :].expand(-1, B, D)) for start in range(0, D, size)]
        H = torch.cat(cols).permute(1, 2, 0)  # (B, D, D): column j is H e_j
        return 0.5 * (H + H.transpose(1, 2))

    def hessian_diagonal(self, fn, u, chunk=None):
        B, D = u.shape
        size = _chunk(D, chunk)
        out = torch.empty_like(u)
        products = self._hvp(fn, u)
        basis = torch.zeros((size, B, D), dtype=u.dtype, device=u.device)
        rows = torch.arange(size, device=u.device)
        for start in range(0, D, size):
            k = min(size, D - start)
            idx = torch.arange(start, start + k, device=u.device)
            basis[rows[:k], :, idx] = 1.0
            hv = products(basis[:k])
            basis[rows[:k], :, idx] = 0.0
            out[:, idx] = hv[rows[:k], :, idx].T
        return out

    def grad_and_hessian(self, fn, u):
        with torch.enable_grad():
            if not u.requires_grad:  # a constant point; one with a graph keeps it (a Newton point, say)
                u = u.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(u).sum(), u, create_graph=True)
            cols = [torch.autograd.grad(g[:, j].sum(), u, create_graph=True, retain_graph=True)[0]
                    for j in range(u.shape[1])]
        H = torch.stack(cols, -1)
        return g, 0.5 * (H + H.transpose(1, 2))

    def vmap(self, fn):
        return torch.func.vmap(fn, randomness="different")

    def normal(self, seed, shape, like):
        generator = torch.Generator(device=like.device).manual_seed(int(seed))
        return torch.randn(shape, dtype=like.dtype, device=like.device, generator=generator)


#: the torch seam
TORCH = TorchOps()


def ops_for(x: Array) -> ArrayOps:
    """The seam for an array: torch tensors get :data:`TORCH`, JAX arrays the JAX seam."""
    if isinstance(x, torch.Tensor):
        return TORCH
    from .numpyro.ops import JAX  # only reached with a JAX array in hand, so JAX is installed

    return JAX
