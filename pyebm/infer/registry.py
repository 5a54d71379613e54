"""The method registry: one module per method, one decorator to make it reachable by name."""

from __future__ import annotations

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


def register(name: str) -> Callable[[type], type]:
    """Class decorator: ``@register("map")`` makes ``infer(..., method="map")`` use the class."""

    def deco(cls: type) -> type:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered by {METHODS[name].__name__}.")
        cls.name = name
        METHODS[name] = cls
        return cls

    return deco


def resolve_method(method: str | Method) -> Method:
    """A method object from a name or an object; unknown names list the valid ones."""
    if isinstance(method, Method):
        return method
    if isinstance(method, str):
        key = method.lower()
        if key in METHODS:
            return METHODS[key]()
        raise ValueError(f"unknown method {method!r}; valid methods are {sorted(METHODS)}.")
    if isinstance(method, type) and issubclass(method, Method):
        return method()
    raise TypeError(
        f"method must be a name ({sorted(METHODS)}) or a configured method object such as pyebm.NUTS(...), "
        f"got {type(method).__name__}."
    )
