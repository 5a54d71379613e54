r"""The free energy of JAX energies: :math:`F_\beta = -\frac1\beta\log\int e^{-\beta E(z)}dz` (min at β = ∞).

Discrete support: an exact logsumexp. Continuous latents: one batched minimisation, then Laplace with
per-element Hessian blocks; one Newton step from the stopped-gradient minimiser gives exact implicit
derivatives, as in :func:`pyebm.free_energy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jax.scipy.optimize import minimize as jax_minimize

from ..diagnostics import InferenceError, check_beta

__all__ = ["free_energy"]


def free_energy(energy: Callable, z, beta: float = 1.0, *, init: Mapping | None = None, steps: int = 500,
                tol: float | None = None):
    """The JAX twin of :func:`pyebm.free_energy` (discrete support, or continuous latents by Laplace)."""
    beta = check_beta(beta, allow_zero=False, allow_inf=True)
    if isinstance(z, Mapping):
        return _continuous(energy, dict(z), beta, init, steps, tol)
    z = jnp.asarray(z)
    if z.ndim == 0 or z.shape[0] == 0:
        raise ValueError("the discrete support z is empty; pass at least one support point along dim 0.")
    e = energy(z)
    if e.ndim == 0 or e.shape[0] != z.shape[0]:
        raise ValueError(f"energy(z) must return shape (len(z), *batch) = ({z.shape[0]}, ...), got {e.shape}.")
    return e.min(0) if math.isinf(beta) else -jax.nn.logsumexp(-beta * e, 0) / beta


def _continuous(energy, sites, beta, init, steps, tol):
    if not sites:
        raise ValueError("z is an empty dict; name at least one continuous latent, e.g. {'z': 2}.")
    shapes = {k: (v,) if isinstance(v, int) else tuple(v) for k, v in sites.items()}
    probe = energy(**{k: jnp.zeros(s) for k, s in shapes.items()})
    batch = tuple(probe.shape)
    sizes = [math.prod(s) for s in shapes.values()]
    d = sum(sizes)
    splits = list(jnp.cumsum(jnp.array(sizes))[:-1])

    def batched(u):
        parts = jnp.split(u, [int(i) for i in splits], axis=-1)
        return energy(**{k: p.reshape(batch + s) for (k, s), p in zip(shapes.items(), parts)})

    start = jnp.zeros(batch + (d,), dtype=probe.dtype)
    if init is not None:
        start = jnp.concatenate([jnp.broadcast_to(jnp.asarray(init[k]), batch + s).reshape(batch + (-1,))
                                 for k, s in shapes.items()], -1)
    tol = (1e-9 if probe.dtype == jnp.float64 else 1e-4) if tol is None else tol
    total = lambda flat: batched(flat.reshape(batch + (d,))).sum()  # noqa: E731
    res = jax_minimize(total, jax.lax.stop_gradient(start).reshape(-1), method="BFGS",
                       options={"maxiter": steps, "gtol": tol})
    if not jnp.isfinite(res.fun) or (not bool(res.success) and float(jnp.abs(res.jac).max()) > 1e3 * tol):
        raise InferenceError("free_energy: the minimisation over the latent did not converge; pass `init` or "
                             "raise `steps`.")
    u0 = jax.lax.stop_gradient(res.x.reshape(batch + (d,)))
    g_fn = jax.grad(lambda u: batched(u).sum())
    eye = jnp.eye(d, dtype=u0.dtype)

    def blocks(u):  # per-element Hessian blocks (*batch, d, d): d forward-over-reverse products
        cols = [jax.jvp(g_fn, (u,), (jnp.broadcast_to(eye[j], u.shape),))[1] for j in range(d)]
        H = jnp.stack(cols, -1)
        return 0.5 * (H + jnp.swapaxes(H, -1, -2))

    H0 = blocks(u0)
    u_tilde = u0 - jnp.linalg.solve(H0, g_fn(u0)[..., None])[..., 0]  # one Newton step: implicit derivatives
    if math.isinf(beta):
        return batched(u_tilde)
    if bool((jnp.linalg.eigvalsh(jax.lax.stop_gradient(H0))[..., 0] <= 0).any()):
        raise InferenceError("free_energy: the Hessian at the minimum is not positive definite for some batch "
                             "element(s); Laplace does not apply there. Use a discrete support or β = inf.")
    logdet = jnp.linalg.slogdet(blocks(u_tilde))[1]
    log_z = -beta * batched(u_tilde) + 0.5 * d * math.log(2 * math.pi / beta) - 0.5 * logdet
    return -log_z / beta
