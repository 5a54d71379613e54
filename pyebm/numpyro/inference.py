"""The NumPyro front door: the same methods (the same objects), algorithms and Posterior as :func:`pyebm.infer`, for
models written in NumPyro with energies in ``jax.numpy``."""

from __future__ import annotations

from collections.abc import Callable

from ..inference.api import run_method
from ..inference.registry import METHODS, Method
from ..inference.result import Posterior
from .backend import NUMPYRO

__all__ = ["infer", "METHODS"]


def infer(model: Callable, *model_args, method: str | Method, seed: int | None = None, progress: bool = True,
          **model_kwargs) -> Posterior:
    """Run a NumPyro model through a method; the twin of :func:`pyebm.infer` (same names, same method objects,
    same Posterior holding JAX arrays). A setting NumPyro cannot honour (a Pyro optimiser, a Pyro init strategy) is
    refused by name."""
    return run_method(NUMPYRO, model, model_args, model_kwargs, method, seed, progress)
