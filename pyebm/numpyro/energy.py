"""Energies in NumPyro models: ``energy_factor`` and ``model_from_energy`` for JAX energies."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.primitives import _PYRO_STACK, plate

from ..diagnostics import NonFiniteEnergyError, check_beta
from ..energy import ENERGY_FACTOR_KEY, _as_shape, plate_batch_shape, resolve_sites

__all__ = ["energy_factor", "model_from_energy", "EnergyModel", "flat_prior"]


def _plate_shape() -> tuple:
    return plate_batch_shape([(m.dim, m.subsample_size) for m in _PYRO_STACK if isinstance(m, plate) and m.dim is not None])


def energy_factor(name: str, energy, beta: float = 1.0) -> None:
    r"""Add :math:`-\beta E` to a NumPyro model's log joint (the JAX twin of :func:`pyebm.energy_factor`).

    Dtype and shape are checked always; finiteness where the value is concrete (not under ``jit``, where
    a non-finite energy makes NumPyro's samplers reject the proposal as divergent).
    """
    beta = check_beta(beta)
    if not hasattr(energy, "dtype") or not jnp.issubdtype(energy.dtype, jnp.floating):
        kind = getattr(energy, "dtype", type(energy).__name__)
        raise TypeError(f"energy '{name}' must be a real floating JAX array, got {kind}.")
    got = tuple(energy.shape)
    while got and got[0] == 1:
        got = got[1:]
    expected = _plate_shape()
    if got != expected:
        what = "a scalar" if not expected else f"shape {expected}"
        raise ValueError(f"energy '{name}' has shape {tuple(energy.shape)} where {what} is due (the batch shape "
                         "of the site). Reduce event dimensions with .sum(-1), or wrap batch dimensions in a plate.")
    if not isinstance(energy, jax.core.Tracer) and not bool(np.isfinite(np.asarray(energy)).all()):
        raise NonFiniteEnergyError(f"energy '{name}' is not finite at the current configuration.")
    unit = dist.Unit(-beta * energy)
    numpyro.sample(name, unit, obs=unit.sample(None),
                   infer={"is_auxiliary": True, ENERGY_FACTOR_KEY: True, "beta": beta})


def flat_prior(shape) -> dist.Distribution:
    """Improper flat prior on the reals: ``Normal(0, 1).expand(shape).to_event().mask(False)``."""
    shape = tuple(_as_shape(shape))
    return dist.Normal(0.0, 1.0).expand(shape).to_event(len(shape)).mask(False)


class EnergyModel:
    """A NumPyro model made from a JAX energy (see :func:`model_from_energy`)."""

    def __init__(self, energy: Callable, sites: Mapping, prior: Mapping | None = None) -> None:
        self.sites, self.prior, self._positional = resolve_sites(energy, sites, prior, flat_prior, dist.Distribution,
                                                                 "numpyro")
        self.energy = energy

    def __call__(self, **ctx):
        values = {k: numpyro.sample(k, d) for k, d in self.prior.items()}
        e = self.energy(next(iter(values.values())), **ctx) if self._positional else self.energy(**values, **ctx)
        energy_factor("energy", e)
        return e


def model_from_energy(energy: Callable, sites: Mapping, prior: Mapping | None = None) -> EnergyModel:
    """A NumPyro model with log joint ``log prior - E``: the JAX twin of :func:`pyebm.model_from_energy`."""
    return EnergyModel(energy, sites, prior)
