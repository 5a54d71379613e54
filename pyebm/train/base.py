"""What every training objective shares: the configured-object protocol, data handling and Langevin negatives."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from ..inference.registry import positive_float, positive_int, register
from ..samplers import langevin_init, langevin_step, run_chains

__all__ = ["Objective", "OBJECTIVES", "register_objective", "resolve_objective", "Batch", "single", "child_seed",
           "global_rng_from"]

#: method name -> objective class
OBJECTIVES: dict[str, type] = {}

#: a training batch: one tensor, or a tuple of aligned tensors (pairs for InfoNCE, (inputs, labels) for margins)
Batch = torch.Tensor | tuple


def register_objective(name: str) -> Callable[[type], type]:
    """Class decorator: ``fit(..., method=name)`` uses the class (the method registry's ``register``)."""
    return register(name, OBJECTIVES)


def single(batch, name: str) -> torch.Tensor:
    """The batch as one tensor of examples, for the objectives that train on unpaired data."""
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"method {name!r} trains on one tensor of examples, got {type(batch).__name__}.")
    return batch


def child_seed(generator: torch.Generator) -> int:
    """A seed drawn from ``generator``, for a component with its own randomness (a replay buffer, a torch RNG)."""
    return int(torch.randint(2**62, (1,), generator=generator))


@contextlib.contextmanager
def global_rng_from(generator: torch.Generator):
    """Torch's global RNG seeded from ``generator`` inside the block (for code that only uses it: module
    initialisers, ``Distribution.sample``), restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(child_seed(generator))
        yield


class Objective:
    """Base of the configured objectives (``pyebm.train.CD(k=20)``, ...): a dataclass of settings.

    ``setup(energy, data, generator)`` returns the objective's own state, an ``nn.Module`` holding any extra
    trainable parameters (NCE's log-normaliser, a VAE's encoder) and persistent buffers; ``loss(energy, batch,
    state, generator)`` returns ``(scalar loss, number of energy evaluations)``; ``after_step`` runs after each
    optimiser step (projections such as unit-norm dictionary atoms).
    """

    name: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Validate the settings (each subclass adds its own, then calls ``super().check()``); ValueError if bad."""

    def setup(self, energy: nn.Module, data: Batch, generator: torch.Generator) -> nn.Module:
        return nn.Module()

    def loss(self, energy: nn.Module, batch: Batch, state: nn.Module, generator: torch.Generator):
        raise NotImplementedError  # pragma: no cover - interface

    def after_step(self, energy: nn.Module, state: nn.Module) -> None:
        return None


def resolve_objective(method, options: dict) -> Objective:
    """An objective object from a name (plus ``options``) or a configured object."""
    if isinstance(method, Objective):
        if options:
            return dataclasses.replace(method, **options)
        return method
    if not isinstance(method, str):
        raise TypeError(f"method must be a name ({sorted(OBJECTIVES)}) or an objective object, "
                        f"got {type(method).__name__}.")
    key = method.lower()
    if key not in OBJECTIVES:
        raise ValueError(f"unknown training method {method!r}; valid methods are {sorted(OBJECTIVES)}.")
    cls = OBJECTIVES[key]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(options) - names
    if unknown:
        raise TypeError(f"method {key!r} has no option(s) {sorted(unknown)}; its options are {sorted(names)}.")
    return cls(**options)


def energies_of(energy: Callable, x: torch.Tensor) -> torch.Tensor:
    """``energy(x)`` checked to give one value per example."""
    e = energy(x)
    if not isinstance(e, torch.Tensor) or e.shape != x.shape[:1]:
        shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
        raise ValueError(f"the energy must map a batch of shape {tuple(x.shape)} to one energy per example, "
                         f"shape {tuple(x.shape[:1])}; got {shape}.")
    return e


def randn(shape, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, dtype=like.dtype, generator=generator)


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Parameters without ``requires_grad`` for the block (sampling negatives builds no parameter graph)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclasses.dataclass
class LangevinOptions:
    """How negatives are made: ``k`` Langevin steps (see :func:`pyebm.samplers.langevin_step`)."""

    k: int = 20
    step_size: float = 0.01
    noise_scale: float = 1.0
    grad_clip: float | None = None
    metropolis: bool = False
    bounds: tuple | None = None

    def check(self) -> None:
        owner = type(self).__name__
        positive_int(owner, "k", self.k)
        positive_float(owner, "step_size", self.step_size)
        positive_float(owner, "noise_scale", self.noise_scale, allow_zero=True)
        positive_float(owner, "grad_clip", self.grad_clip, allow_none=True)
        if self.bounds is not None and not (len(self.bounds) == 2 and self.bounds[0] < self.bounds[1]):
            raise ValueError(f"{owner}: bounds must be (low, high) with low < high, got {self.bounds!r}.")
        getattr(super(), "check", lambda: None)()

    def run(self, energy: Callable, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Move ``x0`` by ``k`` steps; non-finite energies raise an InferenceError naming the Langevin step."""
        if self.k < 1:
            raise ValueError(f"k must be >= 1 Langevin steps, got {self.k}.")
        net = energy if isinstance(energy, nn.Module) else nn.Module()

        def describe(step: int, bad: int) -> str:
            return (f"Langevin step {step} of {self.k} made {bad} negative(s) non-finite (step_size={self.step_size}): "
                    "lower step_size, set grad_clip, or add a confining term to the energy (it may be unbounded "
                    "below).")

        def step(state):
            return langevin_step(state, energy, self.step_size, noise_scale=self.noise_scale, grad_clip=self.grad_clip,
                                 bounds=self.bounds, metropolis=self.metropolis, generator=generator)

        with frozen(net):
            state, _ = run_chains(step, langevin_init(energy, x0), self.k, describe=describe)
        return state.position.detach()

    def evaluations(self, n: int) -> int:
        return n * (self.k + 1)
