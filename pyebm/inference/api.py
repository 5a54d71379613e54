"""The front door: ``infer(model, method=...)`` runs any registered method and returns a Posterior."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable

import torch

from ..state import resolve_seed
from . import laplace, mcmc, svi  # noqa: F401  (importing registers the methods; laplace imports map)
from .pyro_backend import PYRO
from .registry import METHODS, Method, resolve_method
from .result import Posterior

__all__ = ["infer", "run_method"]


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
        A Pyro model, e.g. from :func:`pyebm.model_from_energy`: plates, ``obs=``, constrained sites, ``pyro.param``
        (its current value in the caller's param store is used; SVI learns it and returns it in ``post.params``),
        discrete sites with finite support (summed out by enumeration, then drawn given the rest), deterministic sites.
        Handlers active at the call (``with pyebm.temper(beta=2):``, ``with poutine.condition(...)``) apply to it.
    *model_args, **model_kwargs
        Passed to the model (so ``method``, ``seed`` and ``progress`` cannot be model keywords, and a method's
        settings passed here by mistake, e.g. ``num_samples=``, are refused).
    method : str or method object
        A registered name (``pyebm.inference.registry.METHODS``) or a configured ``pyebm.MAP(...)``,
        ``pyebm.Laplace(...)``, ``pyebm.SVI(...)``, ``pyebm.NUTS(...)``, ``pyebm.HMC(...)``.
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
    return run_method(PYRO, model, model_args, model_kwargs, method, seed, progress)


def run_method(backend, model: Callable, args: tuple, kwargs: dict, method, seed: int | None,
               progress: bool) -> Posterior:
    """What every front door does: resolve the method for the backend, refuse misplaced settings, then run the
    method inside the backend's session (seeds, param store, handlers) and time it."""
    if not callable(model):
        raise TypeError(f"model must be callable (a Pyro model), got {type(model).__name__}.")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("pyebm.infer needs autograd, which torch.inference_mode() turns off; call it outside that "
                           "block (under torch.no_grad() it turns gradients back on for itself).")
    runner = resolve_method(method, backend.name)
    _refuse_settings_as_model_arguments(model, kwargs, runner)
    seed = resolve_seed(seed)
    start = time.perf_counter()
    with backend.session(model, seed) as model_in, torch.enable_grad():
        post = runner.run(backend, model_in, tuple(args), dict(kwargs), seed, progress)
    post.wall_time = time.perf_counter() - start
    post.seed = seed
    return post


def _settings_names() -> set[str]:
    names = set()
    for cls in METHODS.values():
        names |= set(getattr(cls, "__dataclass_fields__", {})) | set(getattr(cls, "aliases", {}))
    return names


def accepts_keyword(model: Callable, name: str) -> bool:
    """Whether ``model`` takes ``name`` as a keyword argument (energy models: whether their energy does)."""
    ask = getattr(model, "accepts_keyword", None)
    if callable(ask):
        return bool(ask(name))
    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _refuse_settings_as_model_arguments(model: Callable, kwargs: dict, runner: Method) -> None:
    misplaced = [k for k in kwargs if k in _settings_names() and not accepts_keyword(model, k)]
    if misplaced:
        example = ", ".join(f"{k}=..." for k in misplaced)
        raise TypeError(
            f"{misplaced} are not arguments of the model (it does not take them) but look like method settings; "
            f"configure the method instead: method=pyebm.{type(runner).__name__}({example})."
        )
