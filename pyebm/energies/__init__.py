r"""A zoo of energies: reference energies with known answers, latent-variable energies, 2-D training targets
with exact densities, and a small network energy.

Each reference energy :math:`E` defines the Gibbs density :math:`p_\beta(x) = \exp(-\beta E(x)) / Z(\beta)` and
knows its exact :math:`\log Z(\beta)`, mean and covariance. Inputs have shape ``(*batch, dim)``; energies have
shape ``batch``.
"""

from .classifier import ClassifierEnergy
from .latent import Ellipse, KMeans, SparseCoding
from .networks import GaussianDecoder, MLPEnergy
from .reconstruction import DenoisingAutoencoder, MaskedReconstruction
from .reference import (
    Banana,
    DoubleWell,
    Funnel,
    Gaussian,
    GaussianMixture,
    GridDensity,
    PhiFour,
    ReferenceEnergy,
    Ring,
    grid_density,
)
from .targets import Checkerboard, EightGaussians, Rings, Target2D, TwoMoons

__all__ = [
    "ReferenceEnergy", "Gaussian", "Banana", "DoubleWell", "PhiFour", "Ring", "Funnel", "GaussianMixture",
    "GridDensity", "grid_density", "KMeans", "Ellipse", "SparseCoding",
    "Target2D", "EightGaussians", "TwoMoons", "Rings", "Checkerboard", "MLPEnergy", "GaussianDecoder",
    "DenoisingAutoencoder", "MaskedReconstruction", "ClassifierEnergy",
]
