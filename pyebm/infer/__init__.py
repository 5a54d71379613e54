"""Inference: one front door (:func:`infer`), one result type (:class:`Posterior`), one module per method."""

from .api import infer
from .laplace import Laplace
from .map import MAP
from .mcmc import HMC, NUTS
from .result import Posterior, compare
from .svi import SVI

__all__ = ["infer", "Posterior", "compare", "MAP", "Laplace", "SVI", "NUTS", "HMC"]
