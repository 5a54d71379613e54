r"""Langevin samplers for making negatives: unadjusted (ULA/SGLD) and Metropolis-adjusted (MALA).

Small pure functions over a batch of chains, in the style of BlackJAX: ``state = langevin_init(energy, x)``,
then ``state, info = langevin_step(state, energy, step_size, ...)``. Chains are the leading dimension of the
position; ``energy`` maps ``(chains, *shape)`` to ``(chains,)``. The target is
:math:`p_\beta(x) \propto e^{-\beta E(x)}`; one step is

.. math:: x' = x - \epsilon\beta\nabla E(x) + \sqrt{2\epsilon}\,\sigma\,\xi,\qquad \xi \sim \mathcal N(0, I),

with noise scale :math:`\sigma = 1` for the Langevin diffusion (EBM training often uses :math:`\sigma < 1`, which
no longer samples :math:`p_\beta`). MALA accepts :math:`x'` with the Metropolis–Hastings probability, which makes
:math:`p_\beta` exactly stationary; ULA's stationary law is biased by :math:`O(\epsilon)`.
``sample_langevin`` runs many steps and stops with a clear error naming the step where energies go non-finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .diagnostics import InferenceError, check_beta

__all__ = ["LangevinState", "LangevinInfo", "langevin_init", "langevin_step", "sample_langevin", "run_chains",
           "ReplayBuffer"]


class LangevinState(NamedTuple):
    """Positions of all chains, their energies and energy gradients."""

    position: torch.Tensor
    energy: torch.Tensor
    grad: torch.Tensor


class LangevinInfo(NamedTuple):
    """Per-chain acceptance probability and whether the proposal was taken (ULA: always)."""

    acceptance: torch.Tensor
    accepted: torch.Tensor


def _energy_and_grad(energy: Callable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        if not isinstance(e, torch.Tensor) or e.shape != x.shape[:1]:
            shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ValueError(f"the energy must return one value per chain, shape {tuple(x.shape[:1])}; got {shape}.")
        if not e.requires_grad:  # a constant energy: pure diffusion, no drift
            return e.detach(), torch.zeros_like(x)
        (g,) = torch.autograd.grad(e.sum(), x, allow_unused=True)
    return e.detach(), (torch.zeros_like(x) if g is None else g.detach())


def langevin_init(energy: Callable, position: torch.Tensor) -> LangevinState:
    """The state of chains started at ``position`` (shape ``(chains, *shape)``)."""
    e, g = _energy_and_grad(energy, position)
    return LangevinState(position.detach(), e, g)


def langevin_step(
    state: LangevinState,
    energy: Callable,
    step_size: float,
    *,
    beta: float = 1.0,
    noise_scale: float = 1.0,
    grad_clip: float | None = None,
    bounds: tuple[float, float] | None = None,
    metropolis: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[LangevinState, LangevinInfo]:
    r"""One Langevin step for every chain at once.

    Parameters
    ----------
    step_size : float
        :math:`\epsilon > 0`.
    beta : float
        Inverse temperature of the target.
    noise_scale : float
        :math:`\sigma`; 1 samples the Langevin diffusion (MALA requires 1).
    grad_clip : float, optional
        Clamp each gradient component to ``[-grad_clip, grad_clip]`` (a common EBM-training safeguard; ULA only).
    bounds : (low, high), optional
        Clamp proposals into a box (ULA only: it breaks MALA's reversibility).
    metropolis : bool
        Accept or reject with the MALA correction.
    generator : torch.Generator, optional
        Source of randomness (the global RNG is left alone when given).
    """
    if not (isinstance(step_size, (int, float)) and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}.")
    if not (math.isfinite(noise_scale) and noise_scale >= 0):
        raise ValueError(f"noise_scale must be finite and >= 0, got {noise_scale!r}.")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be > 0 (or None), got {grad_clip!r}.")
    if bounds is not None and not (len(bounds) == 2 and bounds[0] < bounds[1]):
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}.")
    beta = check_beta(beta, allow_zero=False)
    if metropolis and (noise_scale != 1.0 or grad_clip is not None or bounds is not None):
        raise ValueError("MALA needs noise_scale=1 and no gradient clipping or bounds (they break detailed balance).")
    x, e, g = state
    drift = beta * g
    if grad_clip is not None:
        drift = drift.clamp(-grad_clip * beta, grad_clip * beta)
    noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    proposal = x - step_size * drift + math.sqrt(2 * step_size) * noise_scale * noise
    if bounds is not None:
        proposal = proposal.clamp(*bounds)
    e_new, g_new = _energy_and_grad(energy, proposal)
    if not metropolis:
        ones = torch.ones_like(e)
        return LangevinState(proposal, e_new, g_new), LangevinInfo(ones, ones.bool())
    dims = tuple(range(1, x.dim()))
    # log q(x | x') - log q(x' | x) for Gaussian proposals of variance 2ε
    forward = ((proposal - x + step_size * beta * g) ** 2).sum(dims)
    backward = ((x - proposal + step_size * beta * g_new) ** 2).sum(dims)
    log_ratio = -beta * (e_new - e) + (forward - backward) / (4 * step_size)
    acceptance = torch.exp(log_ratio.clamp(max=0.0)).nan_to_num(nan=0.0)
    u = torch.rand(acceptance.shape, dtype=acceptance.dtype, device=acceptance.device, generator=generator)
    accept = u < acceptance
    shape = (-1,) + (1,) * (x.dim() - 1)
    new = LangevinState(torch.where(accept.reshape(shape), proposal, x), torch.where(accept, e_new, e),
                        torch.where(accept.reshape(shape), g_new, g))
    return new, LangevinInfo(acceptance, accept)


def run_chains(step: Callable, state, steps: int, *, describe: Callable[[int, int], str]):
    """Drive any kernel ``step(state) -> (state, info)`` over a batch of chains (chains on the leading axis of
    ``state.position``) for ``steps`` steps, stopping with an InferenceError (worded by ``describe(step, bad_chains)``)
    the first time a chain's energy or position is non-finite. Returns the final state and the infos."""
    infos = []
    for j in range(1, steps + 1):
        state, info = step(state)
        infos.append(info)
        position = state.position.reshape(state.position.shape[0], -1)
        bad = ~(torch.isfinite(state.energy) & torch.isfinite(position).all(1))
        if bool(bad.any()):
            raise InferenceError(describe(j, int(bad.sum())))
    return state, infos


def sample_langevin(
    energy: Callable, position: torch.Tensor, steps: int, step_size: float, *, seed: int | None = None, **options
) -> tuple[LangevinState, dict]:
    """Run ``steps`` Langevin steps from ``position`` (all chains at once); return the final state and
    the mean acceptance per step. Non-finite energies or positions raise an InferenceError naming the step.
    ``options`` go to :func:`langevin_step`."""
    from .state import resolve_seed

    generator = torch.Generator(device=position.device).manual_seed(resolve_seed(seed))
    state = langevin_init(energy, position)
    if not bool(torch.isfinite(state.energy).all()):
        raise ValueError("the energy is not finite at the initial positions of some chains.")

    def describe(step: int, bad: int) -> str:
        return (f"Langevin: at step {step}, {bad} chain(s) reached a non-finite energy or position "
                f"(step_size={step_size}). The step is too large for the energy's curvature, or the energy is "
                "unbounded below there: lower step_size, clip gradients (grad_clip) or bound the positions (bounds).")

    state, infos = run_chains(lambda st: langevin_step(st, energy, step_size, generator=generator, **options), state,
                              steps, describe=describe)
    return state, {"acceptance": [float(info.acceptance.mean()) for info in infos]}


class ReplayBuffer:
    """Persistent chains for contrastive training (PCD): a fixed-size store of past negatives.

    ``sample(n)`` returns ``(indices, positions)``: each position comes from the buffer, or, with probability
    ``reinit_prob``, fresh from ``init_fn(k, generator)``; after moving the positions, ``update(indices, positions)``
    writes them back. All randomness comes from the buffer's own generator, whose state is part of
    :meth:`state_dict`, so a training run restored from a checkpoint draws the same chains.
    """

    def __init__(self, capacity: int, init_fn: Callable[[int, torch.Generator], torch.Tensor],
                 reinit_prob: float = 0.05, seed: int | None = None):
        if capacity < 1:
            raise ValueError("capacity must be >= 1.")
        if not 0.0 <= reinit_prob <= 1.0:
            raise ValueError("reinit_prob must be in [0, 1].")
        from .state import resolve_seed

        self.generator = torch.Generator().manual_seed(resolve_seed(seed))
        self.init_fn, self.reinit_prob = init_fn, reinit_prob
        self.buffer = init_fn(capacity, self.generator).detach().clone()

    def __len__(self) -> int:
        return self.buffer.shape[0]

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self), (n,), generator=self.generator)
        x = self.buffer[idx].clone()
        fresh = torch.rand(n, generator=self.generator) < self.reinit_prob
        if bool(fresh.any()):
            x[fresh] = self.init_fn(int(fresh.sum()), self.generator).to(x.dtype)
        return idx, x

    def update(self, indices: torch.Tensor, positions: torch.Tensor) -> None:
        """Write ``positions`` back at ``indices``; where an index repeats (``sample`` draws with replacement) the
        last occurrence wins, as in a loop (a plain indexed assignment leaves the winner unspecified, and runs with
        the same seed would differ)."""
        order = torch.arange(len(indices), device=indices.device)
        last = torch.full((len(self),), -1, dtype=order.dtype, device=indices.device)
        last = last.scatter_reduce(0, indices, order, reduce="amax")
        keep = last[indices] == order
        self.buffer[indices[keep]] = positions.detach()[keep].to(self.buffer.dtype)

    def state_dict(self) -> dict:
        return {"buffer": self.buffer.clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = state["buffer"].clone()
        self.generator.set_state(state["generator"])
