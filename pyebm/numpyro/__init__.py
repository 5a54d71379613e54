"""pyebm's front door for energies written in JAX, on NumPyro: the same names, methods and Posterior.

An optional extra: ``pip install 'pyro-ebm[numpyro]'``. ``import pyebm`` never imports JAX.
"""

try:
    import jax  # noqa: F401
    import numpyro  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised by a test that hides jax
    raise ImportError(
        "pyebm.numpyro needs JAX and NumPyro, which are an optional extra: pip install 'pyro-ebm[numpyro]'"
    ) from err

from ..inference import HMC, MAP, NUTS, SVI, Laplace
from . import energies
from .energy import EnergyModel, energy_factor, model_from_energy
from .handlers import temper
from .inference import infer
from .latent import free_energy

__all__ = [
    "energy_factor", "model_from_energy", "EnergyModel", "temper", "infer", "free_energy",
    "MAP", "Laplace", "SVI", "NUTS", "HMC", "energies",
]
