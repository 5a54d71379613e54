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
from ..energy import ENERGY_FACTOR_KEY, _as_shape, batch_shape_error, resolve_sites

__all__ = ["energy_factor", "model_from_energy", "EnergyModel", "flat_prior"]


def _plate_frames() -> list[tuple[int, int]]:
    return [(m.dim, m.subsample_size) for m in _PYRO_STACK if isinstance(m, plate) and m.dim is not None]


def _enumerating() -> bool:
    """Whether funsor's ``enum`` handler (which has a first available dimension) is on the stack."""
    return any(getattr(m, "first_available_dim", None) is not None for m in _PYRO_STACK)


def energy_factor(name: str, energy, beta: float = 1.0) -> None:
    r"""Add :math:`-\beta E` to a NumPyro model's log joint (the JAX twin of :func:`pyebm.energy_factor`).

    Dtype and shape are checked always. A non-finite energy is zero density inside any inference (and under
    ``jit``, where values are not concrete); called directly, outside every NumPyro handler, it raises.
    """
    beta = check_beta(beta, name=f"beta of energy factor '{name}'")
    if not hasattr(energy, "dtype") or not jnp.issubdtype(energy.dtype, jnp.floating):
        kind = getattr(energy, "dtype", type(energy).__name__)
        raise TypeError(f"energy '{name}' must be a real floating JAX array, got {kind}.")
    problem = batch_shape_error(name, tuple(energy.shape), _plate_frames(), _enumerating())
    if problem:
        raise ValueError(problem)
    if not _PYRO_STACK and not isinstance(energy, jax.core.Tracer) and not bool(np.isfinite(np.asarray(energy)).all()):
        raise NonFiniteEnergyError(f"energy '{name}' is not finite at the current configuration. Check the energy "
                                   "for log(0), division by zero or overflow there.")
    energy = jnp.where(jnp.isfinite(energy), energy, jnp.inf)
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
        self.sites, self.prior, self.flat, self._positional = resolve_sites(
            energy, sites, prior, flat_prior, dist.Distribution, "numpyro")
        self.energy = energy

    def __call__(self, **ctx):
        values = {k: numpyro.sample(k, d) for k, d in self.prior.items()}
        e = self.energy(next(iter(values.values())), **ctx) if self._positional else self.energy(**values, **ctx)
        energy_factor("energy", e)
        return e


def model_from_energy(energy: Callable, sites: Mapping, prior: Mapping | None = None) -> EnergyModel:
    """A NumPyro model with log joint ``log prior - E``: the JAX twin of :func:`pyebm.model_from_energy`."""
    return EnergyModel(energy, sites, prior)
