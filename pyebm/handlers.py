r"""``temper``: a Pyro effect handler that rescales the β of every energy factor.

Under ``temper(beta=b)`` an energy factor written with inverse temperature β contributes
:math:`-b\,\beta\,E` to the log joint: the model's Gibbs density becomes
:math:`p(\theta) \propto \pi(\theta)\exp(-b\beta E(\theta))`, with the prior :math:`\pi` untouched.
``b = 0`` leaves the prior alone (the start of an annealing path). Only sites made by
:func:`pyebm.energy_factor` (or :func:`pyebm.model_from_energy`) are energy factors; a plain
``pyro.factor`` or an observed likelihood is left as it is. Nested ``temper`` handlers multiply.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro.poutine.messenger import Messenger

from .diagnostics import check_beta
from .energy import ENERGY_FACTOR_KEY

__all__ = ["temper", "TemperMessenger"]


class TemperMessenger(Messenger):
    """Multiply the β of every energy-factor site by ``beta`` (through the site's ``scale``)."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = check_beta(beta)

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and (msg.get("infer") or {}).get(ENERGY_FACTOR_KEY):
            msg["scale"] = msg["scale"] * self.beta
            msg["infer"] = {**msg["infer"], "beta": msg["infer"]["beta"] * self.beta}


def temper(model: Callable | None = None, beta: float = 1.0) -> TemperMessenger | Callable:
    r"""Scale every energy factor of ``model`` by the inverse temperature ``beta``.

    Parameters
    ----------
    model : callable, optional
        A Pyro model. Without it, ``temper(beta=...)`` is a context manager.
    beta : float
        Finite and ``>= 0``.

    Returns
    -------
    callable or TemperMessenger
        The tempered model, or the handler for use in a ``with`` statement.

    Examples
    --------
    >>> hot = temper(model, beta=0.5)            # doctest: +SKIP
    >>> with temper(beta=0.5):                   # doctest: +SKIP
    ...     trace = pyro.poutine.trace(model).get_trace()
    """
    messenger = TemperMessenger(beta)
    return messenger if model is None else messenger(model)
