"""The front door: ``infer(model, method=...)`` runs any registered method and returns a Posterior."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..state import isolated_param_store, resolve_seed, seeded
from . import laplace, mcmc, svi  # noqa: F401  (importing registers the methods; laplace imports map)
from .registry import Method, resolve_method
from .result import Posterior

__all__ = ["infer"]


def infer(
    model: Callable, *model_args, method: str | Method, seed: int | None = None, progress: bool = True,
    **model_kwargs,
) -> Posterior:
    r"""Run inference on a Pyro model and return a :class:`pyebm.Posterior`.

    The model's Gibbs density :math:`p(\theta\mid x) \propto p(\theta)\exp(-\beta E(\theta))` is
    approached along the ladder: ``"map"`` (its mode), ``"laplace"`` (a Gaussian at the mode),
    ``"svi"`` (the best Gaussian under the ELBO), ``"nuts"``/``"hmc"`` (exact in the limit).

    Parameters
    ----------
    model : callable
        A Pyro model, e.g. from :func:`pyebm.model_from_energy`.
    *model_args, **model_kwargs
        Passed to the model (so ``method``, ``seed`` and ``progress`` cannot be model keywords).
    method : str or method object
        A registered name (``from pyebm.infer.registry import METHODS``) or a configured ``pyebm.MAP(...)``, ``pyebm.Laplace(...)``,
        ``pyebm.SVI(...)``, ``pyebm.NUTS(...)``, ``pyebm.HMC(...)``.
    seed : int, optional
        Seed for everything random in the run; ``None`` draws a fresh one (kept in ``post.seed``).
        The global RNG state is restored afterwards.
    progress : bool
        Show progress bars.

    Returns
    -------
    Posterior

    Examples
    --------
    >>> model = pyebm.model_from_energy(pyebm.energies.Banana(), {"x": 2})
    >>> post = pyebm.infer(model, method="laplace", seed=0)   # doctest: +SKIP
    >>> post.log_evidence                                     # doctest: +SKIP
    """
    runner = resolve_method(method)
    seed = resolve_seed(seed)
    start = time.perf_counter()
    with seeded(seed), isolated_param_store():
        post = runner.run(model, model_args, model_kwargs, progress=progress)
    post.wall_time = time.perf_counter() - start
    post.seed = seed
    return post
