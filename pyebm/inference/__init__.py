"""Inference: one front door (:func:`infer`), one result type (:class:`Posterior`), one module per method, written
once over a potential (:mod:`pyebm.inference.potential`) with backends as thin adapters."""

from .api import infer
from .chees import ChEES
from .laplace import Laplace
from .map import MAP
from .mcmc import HMC, NUTS
from .result import Posterior, compare
from .smc import SMC
from .svi import SVI

__all__ = ["infer", "Posterior", "compare", "MAP", "Laplace", "SVI", "NUTS", "HMC", "ChEES", "SMC"]
