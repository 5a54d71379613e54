"""``temper`` for NumPyro models: every energy factor's β times ``beta`` (priors and likelihoods untouched)."""

from __future__ import annotations

from collections.abc import Callable

from numpyro.primitives import Messenger

from ..diagnostics import check_beta
from ..energy import ENERGY_FACTOR_KEY

__all__ = ["temper", "TemperMessenger"]


class TemperMessenger(Messenger):
    def __init__(self, fn: Callable | None = None, beta: float = 1.0) -> None:
        self.beta = check_beta(beta)
        super().__init__(fn)

    def process_message(self, msg) -> None:
        if msg["type"] == "sample" and (msg.get("infer") or {}).get(ENERGY_FACTOR_KEY):
            msg["scale"] = self.beta if msg["scale"] is None else msg["scale"] * self.beta
            msg["infer"] = {**msg["infer"], "beta": check_beta(msg["infer"]["beta"] * self.beta,
                                                               name="the product of nested tempers' beta")}


def temper(model: Callable | None = None, beta: float = 1.0):
    """The NumPyro twin of :func:`pyebm.temper`: a wrapped model, or a context manager without one."""
    return TemperMessenger(model, beta)
