"""The method registry: one module per method, one decorator to make it reachable by name, one table for both backends.

A method is a dataclass of settings whose ``run(backend, model, args, kwargs, seed, progress)`` returns a
:class:`pyebm.Posterior`. The same object configures the Pyro and the NumPyro backend; a setting a backend cannot
honour is refused there by name (never silently dropped). Settings are validated where they are declared, and the
spellings users bring from Pyro and NumPyro (``target_accept_prob``, ``num_warmup``, ``optim``, ...) are accepted.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from numbers import Integral, Real

__all__ = ["Method", "register", "METHODS", "resolve_method", "positive_int", "positive_float", "probability"]

#: method name -> method class
METHODS: dict[str, type] = {}


class Method:
    """Base of the configured method objects (``pyebm.MAP(...)``, ``pyebm.NUTS(...)``, ...)."""

    name: str = ""
    #: other spellings of settings (Pyro's and NumPyro's) -> the pyebm name
    aliases: dict[str, str] = {}

    def run(self, backend, model: Callable, args: tuple, kwargs: dict, seed: int, progress: bool):  # pragma: no cover
        raise NotImplementedError

    def refusals(self, backend: str) -> list[str]:
        """Settings this object holds that ``backend`` cannot honour (each a sentence)."""
        return []

    def settings(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def register(name: str, table: dict[str, type] | None = None) -> Callable[[type], type]:
    """Class decorator: ``@register("map")`` makes ``infer(..., method="map")`` use the (dataclass) class.

    It also makes the constructor accept the class's ``aliases`` and answer an unknown setting with the valid ones.
    ``table`` is the registry to add to (default: the methods').
    """
    table = METHODS if table is None else table

    def deco(cls: type) -> type:
        if name in table:
            raise ValueError(f"method {name!r} is already registered by {table[name].__name__}.")
        cls.name = name
        table[name] = cls
        if dataclasses.is_dataclass(cls):
            cls.__init__ = _friendly_init(cls, cls.__init__)
        return cls

    return deco


def _friendly_init(cls: type, init: Callable) -> Callable:
    fields = [f.name for f in dataclasses.fields(cls)]
    aliases = getattr(cls, "aliases", {})

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for alias, target in aliases.items():
            if alias in kwargs:
                if target in kwargs:
                    raise TypeError(f"{cls.__name__} got both {alias!r} and {target!r}; they are the same setting.")
                kwargs[target] = kwargs.pop(alias)
        unknown = [k for k in kwargs if k not in fields]
        if unknown:
            spelled = f"; also spelled {sorted(aliases)}" if aliases else ""
            raise TypeError(f"{cls.__name__} has no setting(s) {unknown}; its settings are {fields}{spelled}.")
        init(self, *args, **kwargs)

    return __init__


def resolve_method(method, backend: str = "pyro", table: dict[str, type] | None = None) -> Method:
    """A method object from a name, a class or an object; unknown names list the valid ones, and settings the
    ``backend`` cannot honour raise a ValueError naming them."""
    table = METHODS if table is None else table
    if isinstance(method, str):
        key = method.lower()
        if key not in table:
            raise ValueError(f"unknown method {method!r}; valid methods are {sorted(table)}.")
        obj = table[key]()
    elif isinstance(method, type) and issubclass(method, Method):
        obj = method()
    elif isinstance(method, Method):
        obj = method
    else:
        raise TypeError(
            f"method must be a name ({sorted(table)}) or a configured method object such as pyebm.NUTS(...), "
            f"got {type(method).__name__}."
        )
    refused = obj.refusals(backend)
    if refused:
        raise ValueError(f"{type(obj).__name__} on the {backend} backend: " + " ".join(refused))
    return obj


# --- validation helpers, raising ValueError with the setting's name ---------------------------------------------
def positive_int(owner: str, name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}.")


def positive_float(owner: str, name: str, value, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{owner}: {name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}.")


def probability(owner: str, name: str, value, *, closed_right: bool = False) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and 0 < value and (
        value <= 1 if closed_right else value < 1)
    if not ok:
        raise ValueError(f"{owner}: {name} must lie in (0, 1{']' if closed_right else ')'}, got {value!r}.")
