"""The JAX side of the array seam (:class:`pyebm.ops.ArrayOps`): the same operations on JAX arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from ..ops import ArrayOps, _chunk

__all__ = ["JaxOps", "JAX"]


class JaxOps(ArrayOps):
    """:class:`pyebm.ops.ArrayOps` for JAX arrays; the autodiff helpers compile ``fn`` with ``jax.jit``."""

    name = "jax"

    def zeros(self, shape, like):
        return jnp.zeros(shape, dtype=like.dtype)

    def full(self, shape, value, like):
        return jnp.full(shape, value, dtype=like.dtype)

    def eye(self, n, like):
        return jnp.eye(n, dtype=like.dtype)

    def asarray(self, x, like):
        return jnp.asarray(x, dtype=like.dtype)

    def to_numpy(self, x):
        return np.asarray(x)

    def eps(self, like):
        return float(jnp.finfo(like.dtype).eps)

    def where(self, cond, a, b):
        return jnp.where(cond, a, b)

    def logsumexp(self, x, axis):
        return jax.nn.logsumexp(x, axis)

    def amin(self, x, axis=None):
        return jnp.min(x, axis=axis)

    def isfinite(self, x):
        return jnp.isfinite(x)

    def sum(self, x, axis=None):
        return jnp.sum(x, axis=axis)

    def amax(self, x, axis=None):
        return jnp.max(x, axis=axis)

    def concat(self, xs, axis=0):
        return jnp.concatenate(list(xs), axis)

    def stack(self, xs, axis=0):
        return jnp.stack(list(xs), axis)

    def diagonal(self, x):
        return jnp.diagonal(x, axis1=-2, axis2=-1)

    def log(self, x):
        return jnp.log(x)

    def exp(self, x):
        return jnp.exp(x)

    def permute(self, x, axes):
        return jnp.transpose(x, axes)

    def broadcast_to(self, x, shape):
        return jnp.broadcast_to(x, shape)

    def detach(self, x):
        return jax.lax.stop_gradient(x)

    def scatter(self, base, index, values):
        out = jnp.broadcast_to(base, tuple(values.shape[:-1]) + tuple(base.shape[-1:]))
        return out.at[..., jnp.asarray(index)].set(values)

    def cholesky(self, H):
        L = jnp.linalg.cholesky(H)
        return L, jnp.all(jnp.isfinite(L), axis=(-2, -1))

    def cho_solve(self, L, b):
        if L.ndim == 2:
            return cho_solve((L, True), b)
        return jax.vmap(lambda l_, b_: cho_solve((l_, True), b_))(L.reshape((-1,) + L.shape[-2:]),
                                                                  b.reshape((-1,) + b.shape[-2:])).reshape(b.shape)

    def solve_triangular(self, L, b, *, upper, transpose=False):
        return solve_triangular(L, b, lower=not upper, trans=1 if transpose else 0)

    def cholesky_inverse(self, L):
        eye = jnp.broadcast_to(jnp.eye(L.shape[-1], dtype=L.dtype), L.shape)
        return self.cho_solve(L, eye)

    def eigvalsh(self, H):
        return jnp.linalg.eigvalsh(H)

    def value_and_grad(self, fn):
        @jax.jit
        def vg(u):
            f, pullback = jax.vjp(fn, u)
            return f, pullback(jnp.ones_like(f))[0]

        return vg

    def vmap(self, fn):
        return jax.vmap(fn)

    def _hvps(self, fn, u, directions):
        grad = jax.grad(lambda v: jnp.sum(fn(v)))
        return jax.vmap(lambda d: jax.jvp(grad, (u,), (d,))[1])(directions)

    def hessian(self, fn, u, chunk=None):
        B, D = u.shape
        size = _chunk(D, chunk)
        eye = jnp.eye(D, dtype=u.dtype)
        hvps = jax.jit(lambda v, d: self._hvps(fn, v, d))
        cols = [hvps(u, jnp.broadcast_to(eye[s : s + size, None, :], (min(size, D - s), B, D)))
                for s in range(0, D, size)]
        H = jnp.transpose(jnp.concatenate(cols), (1, 2, 0))
        return 0.5 * (H + jnp.swapaxes(H, 1, 2))

    def hessian_diagonal(self, fn, u, chunk=None):
        B, D = u.shape
        size = _chunk(D, chunk)
        eye = jnp.eye(D, dtype=u.dtype)
        hvps = jax.jit(lambda v, d: self._hvps(fn, v, d))
        parts = []
        for s in range(0, D, size):
            k = min(size, D - s)
            hv = hvps(u, jnp.broadcast_to(eye[s : s + k, None, :], (k, B, D)))
            parts.append(hv[jnp.arange(k), :, s + jnp.arange(k)].T)
        return jnp.concatenate(parts, axis=1)

    def grad_and_hessian(self, fn, u):
        g = jax.grad(lambda v: jnp.sum(fn(v)))(u)
        eye = jnp.eye(u.shape[1], dtype=u.dtype)
        H = jnp.transpose(self._hvps(fn, u, jnp.broadcast_to(eye[:, None, :], (u.shape[1],) + u.shape)), (1, 2, 0))
        return g, 0.5 * (H + jnp.swapaxes(H, 1, 2))

    def normal(self, seed, shape, like):
        return jax.random.normal(jax.random.PRNGKey(int(seed)), shape, dtype=like.dtype)


#: the JAX seam
JAX = JaxOps()
