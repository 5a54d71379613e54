"""The method registry: one module per method, one decorator to make it reachable by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

__all__ = ["Method", "register", "METHODS", "resolve_method"]

#: method name -> method class
METHODS: dict[str, type] = {}


class Method:
    """Base of the configured method objects (``pyebm.MAP(...)``, ``pyebm.NUTS(...)``, ...).

    A subclass is a dataclass of settings with a ``run(model, args, kwargs, progress)`` that
    returns a :class:`pyebm.Posterior`; :func:`pyebm.infer` handles seeds, the param store and
    timing around it.
    """

    name: str = ""

    def run(self, model: Callable, args: tuple, kwargs: dict, progress: bool):  # pragma: no cover - interface
        raise NotImplementedError


def register(name: str, table: dict[str, type] | None = None) -> Callable[[type], type]:
    """Class decorator: ``@register("map")`` makes ``infer(..., method="map")`` use the class.

    ``table`` is the registry to add to (each backend has its own; default: the Pyro one).
    """
    table = METHODS if table is None else table

    def deco(cls: type) -> type:
        if name in table:
            raise ValueError(f"method {name!r} is already registered by {table[name].__name__}.")
        cls.name = name
        table[name] = cls
        return cls

    return deco


def resolve_method(method: str | Method, table: dict[str, type] | None = None) -> Method:
    """A method object from a name or an object; unknown names list the valid ones.

    A method object of another backend is translated to this backend's class of the same name,
    keeping the settings the two share (so one configured ``pyebm.NUTS(...)`` serves both backends).
    """
    table = METHODS if table is None else table
    if isinstance(method, Method):
        target = table.get(method.name)
        if target is None or isinstance(method, target):
            return method
        shared = {f.name: getattr(method, f.name) for f in dataclasses.fields(target) if hasattr(method, f.name)}
        return target(**shared)
    if isinstance(method, str):
        key = method.lower()
        if key in table:
            return table[key]()
        raise ValueError(f"unknown method {method!r}; valid methods are {sorted(table)}.")
    if isinstance(method, type) and issubclass(method, Method):
        return resolve_method(method(), table)
    raise TypeError(
        f"method must be a name ({sorted(table)}) or a configured method object such as pyebm.NUTS(...), "
        f"got {type(method).__name__}."
    )
