"""pyebm: energy-based models in Pyro, from energy minimisation to the full posterior.

An energy E is a negative log-density up to a constant and a temperature,
p_β(x) ∝ exp(−β E(x)). pyebm puts energies into Pyro models as factors and runs the same model
under MAP, Laplace, SVI and NUTS/HMC with one argument, returning one result type.
"""

from . import energies, plot, train, ttt
from .diagnostics import CheckpointError, ConvergenceWarning, InferenceError
from .energy import Energy, energy_factor, model_from_energy
from .handlers import temper
from .inference import HMC, MAP, NUTS, SMC, SVI, ChEES, Laplace, Posterior, compare, infer
from .latent import free_energy, profile

__version__ = "0.1.0"

__all__ = [
    "Energy", "energy_factor", "model_from_energy", "temper",
    "infer", "MAP", "Laplace", "SVI", "NUTS", "HMC", "ChEES", "SMC", "Posterior", "compare",
    "free_energy", "profile", "InferenceError", "ConvergenceWarning", "CheckpointError", "energies", "plot", "train",
    "ttt",
]
