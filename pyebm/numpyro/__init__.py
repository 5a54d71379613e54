"""pyebm's front door for energies written in JAX, on NumPyro: the same names, methods and Posterior.

An optional extra: ``pip install 'pyro-ebm[numpyro]'``. ``import pyebm`` never imports JAX.
"""

from ..inference import HMC, MAP, NUTS, SVI, Laplace
from . import (
    dependencies,  # noqa: F401  (first: JAX and NumPyro, or a message naming the extra)
    energies,
)
from .energy import EnergyModel, energy_factor, model_from_energy
from .handlers import temper
from .inference import infer
from .latent import free_energy

__all__ = [
    "energy_factor", "model_from_energy", "EnergyModel", "temper", "infer", "free_energy",
    "MAP", "Laplace", "SVI", "NUTS", "HMC", "energies",
]
