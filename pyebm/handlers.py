r"""``temper``: a Pyro effect handler that rescales the β of every energy factor.

Under ``temper(beta=b)`` an energy factor written with inverse temperature β contributes
:math:`-b\,\beta\,E` to the log joint: the model's Gibbs density becomes
:math:`p(\theta) \propto \pi(\theta)\exp(-b\beta E(\theta))`, with the prior :math:`\pi` untouched.
``b = 0`` leaves the prior alone (the start of an annealing path). Only sites made by
:func:`pyebm.energy_factor` (or :func:`pyebm.model_from_energy`) are energy factors; a plain
``pyro.factor`` or an observed likelihood is left as it is. Nested ``temper`` handlers multiply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger

from .diagnostics import check_beta
from .energy import ENERGY_FACTOR_KEY

__all__ = ["temper", "TemperMessenger", "TemperedModel", "outside_handlers"]


class TemperMessenger(Messenger):
    """Multiply the β of every energy-factor site by ``beta`` (through the site's ``scale``)."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = check_beta(beta)

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and (msg.get("infer") or {}).get(ENERGY_FACTOR_KEY):
            msg["scale"] = msg["scale"] * self.beta
            msg["infer"] = {**msg["infer"], "beta": check_beta(msg["infer"]["beta"] * self.beta,
                                                               name="the product of nested tempers' beta")}


class TemperedModel:
    """``model`` under :class:`TemperMessenger` (what ``temper(model, beta)`` returns).

    A tempered energy model keeps its closed-form density (``direct``), with β multiplied, so inference on it takes
    the same cheap road as on the untempered one.
    """

    def __init__(self, model: Callable, beta: float) -> None:
        self.model, self.beta = model, check_beta(beta)

    def __call__(self, *args, **kwargs):
        with TemperMessenger(self.beta):
            return self.model(*args, **kwargs)

    def accepts_keyword(self, name: str) -> bool:
        from .inference.api import accepts_keyword

        return accepts_keyword(self.model, name)

    @property
    def direct(self):
        inner = getattr(self.model, "direct", None)
        if inner is None:
            raise AttributeError("the tempered model has no closed-form density")
        return inner.tempered(self.beta)

    def __repr__(self) -> str:
        return f"temper({self.model!r}, beta={self.beta:g})"


def temper(model: Callable | None = None, beta: float = 1.0) -> TemperMessenger | TemperedModel:
    r"""Scale every energy factor of ``model`` by the inverse temperature ``beta``.

    Parameters
    ----------
    model : callable, optional
        A Pyro model. Without it, ``temper(beta=...)`` is a context manager.
    beta : float
        Finite and ``>= 0``.

    Returns
    -------
    TemperedModel or TemperMessenger
        The tempered model, or the handler for use in a ``with`` statement (``pyebm.infer`` called inside the block
        sees it, as every handler active at the call).

    Examples
    --------
    >>> hot = temper(model, beta=0.5)            # doctest: +SKIP
    >>> with temper(beta=0.5):                   # doctest: +SKIP
    ...     post = pyebm.infer(model, method="nuts")
    """
    if model is None:
        return TemperMessenger(beta)
    return TemperedModel(model, beta)


@contextmanager
def outside_handlers(model: Callable) -> Iterator[Callable]:
    """Run a block with Pyro's handler stack set aside, on ``model`` wrapped in the handlers that were active.

    ``pyebm.infer`` is called inside whatever handlers the user has entered (``with temper(beta=4):``,
    ``with poutine.condition(data=...):``); they are part of the model the user means. Inference runs the model many
    times inside handlers of its own (traces, conditioning, blocks), which would hide it from the outer ones. So the
    outer handlers are lifted off the stack for the block and applied to the model itself, innermost last. Tempers
    alone fold into a :class:`TemperedModel` (keeping an energy model's closed form); a trace recorder is left out
    (it records, it does not change the model). The stack is restored afterwards.
    """
    saved = list(_PYRO_STACK)
    effects = [m for m in saved if not isinstance(m, TraceMessenger)]
    if all(isinstance(m, TemperMessenger) for m in effects):
        beta = 1.0
        for m in effects:
            beta *= m.beta
        wrapped = model if not effects else TemperedModel(model, beta)
    else:
        def wrapped(*args, **kwargs):
            with ExitStack() as stack:
                for m in effects:
                    stack.enter_context(m)
                return model(*args, **kwargs)
    _PYRO_STACK.clear()
    try:
        yield wrapped
    finally:
        _PYRO_STACK[:] = saved
