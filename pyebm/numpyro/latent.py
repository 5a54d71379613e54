r"""The free energy of JAX energies: :math:`F_\beta = -\frac1\beta\log\int e^{-\beta E(z)}dz` (min at β = ∞).

The algorithms are :func:`pyebm.latent.discrete_free_energy` and :func:`pyebm.latent.continuous_free_energy`, written
once for both backends; this module only shapes JAX energies for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax.numpy as jnp

from ..diagnostics import check_beta
from ..latent import continuous_free_energy, discrete_free_energy
from .ops import JAX

__all__ = ["free_energy"]


def free_energy(energy: Callable, z, beta: float = 1.0, *, init: Mapping | None = None, steps: int = 500,
                tol: float | None = None, method: str = "laplace", num_samples: int = 1000, seed: int | None = None):
    """The JAX twin of :func:`pyebm.free_energy` (discrete support, or continuous latents by Laplace or importance
    sampling), differentiable with ``jax.grad``."""
    beta = check_beta(beta, allow_zero=False, allow_inf=True)
    if isinstance(z, Mapping):
        return _continuous(energy, dict(z), beta, init, steps, tol, method, num_samples, seed)
    return discrete_free_energy(energy, jnp.asarray(z), beta, JAX)[0]


def _continuous(energy, sites, beta, init, steps, tol, method, num_samples, seed):
    if not sites:
        raise ValueError("z is an empty dict; name at least one continuous latent, e.g. {'z': 2}.")
    shapes = {k: (v,) if isinstance(v, int) else tuple(v) for k, v in sites.items()}
    probe = energy(**{k: jnp.zeros(s) for k, s in shapes.items()})
    batch = tuple(probe.shape)
    sizes = [math.prod(s) for s in shapes.values()]
    d, n = sum(sizes), max(1, math.prod(batch))
    cuts = [int(c) for c in jnp.cumsum(jnp.array(sizes))[:-1]]

    def batched(u):
        parts = jnp.split(u.reshape(batch + (d,)), cuts, axis=-1)
        e = energy(**{k: p.reshape(batch + s) for (k, s), p in zip(shapes.items(), parts)})
        if tuple(e.shape) != batch:
            raise ValueError(f"the energy returned shape {tuple(e.shape)} where the batch shape {batch} is due.")
        return e.reshape(n)

    start = jnp.zeros(batch + (d,), dtype=probe.dtype)
    if init is not None:
        start = jnp.concatenate([jnp.broadcast_to(jnp.asarray(init[k], dtype=probe.dtype), batch + s)
                                 .reshape(batch + (-1,)) for k, s in shapes.items()], -1)
    value, _ = continuous_free_energy(batched, start.reshape(n, d), beta, ops=JAX, method=method,
                                      num_samples=num_samples, steps=steps, tol=tol, seed=seed)
    return value.reshape(batch)
