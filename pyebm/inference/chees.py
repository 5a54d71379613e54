r"""ChEES-HMC: many chains moved as one batch, for torch potentials.

Pyro's NUTS moves one chain at a time, and on a small model its cost is Python overhead per leapfrog step, not
arithmetic. Here every chain takes the same number of leapfrog steps in an iteration, so one potential-and-gradient
call on a ``(num_chains, D)`` batch moves them all: the overhead is paid once for many chains, on the CPU or a GPU
(Hoffman, Radul & Sountsov, *An adaptive MCMC scheme for setting trajectory lengths in Hamiltonian Monte Carlo*,
AISTATS 2021).

Each iteration draws momenta :math:`p \sim \mathcal N(0, M)`, integrates :math:`n = \lceil h_t T / \varepsilon\rceil`
leapfrog steps with :math:`h_t \in (0, 1]` from a Halton sequence (the jitter breaks periodic orbits) and accepts each
chain's end point with probability :math:`\min(1, e^{-\Delta H})`. Warm-up adapts, pooling all chains:

* the step size :math:`\varepsilon` by dual averaging on the harmonic mean of the chains' acceptance probabilities
  (target 0.651, the optimum for HMC in high dimension);
* the trajectory length :math:`T` by Adam ascent in :math:`\log T` on the ChEES criterion
  :math:`\tfrac14\,\mathbb E\bigl[(\lVert\theta' - \mathbb E\theta\rVert^2 - \lVert\theta - \mathbb E\theta\rVert^2)^2\bigr]`,
  whose gradient per chain is :math:`t\,(\lVert\theta'-\bar\theta\rVert^2 - \lVert\theta-\bar\theta\rVert^2)\,
  (\theta'-\bar\theta)\cdot v'` (:math:`t` the jittered time, :math:`v'` the final velocity), averaged with the
  acceptance probabilities as weights, in the coordinates the mass matrix whitens;
* a diagonal mass matrix, :math:`M^{-1}` = the positions' variance in Stan's doubling windows, after each of which
  the step size is searched afresh.

One step size serves every chain, so a chain started where the energy is extremely steep (uniform starts in a model
with an exponential link can sit a million nats above the rest) rejects every proposal while the others adapt. At the
warm-up's checkpoints in its first half (the end of the first fast phase and of the early mass-matrix windows), a
chain that accepted nothing since the previous checkpoint restarts at the position of a randomly chosen moving chain;
the remaining warm-up (at least half of it) decorrelates the copies, and ``num_restarted_chains`` reports how many
restarts there were.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from tqdm import tqdm

from ..diagnostics import NonFiniteEnergyError, warn
from .mcmc import MAX_LEAPFROG, mcmc_posterior
from .potential import Potential
from .registry import Method, positive_float, positive_int, probability, register
from .result import Posterior

__all__ = ["ChEES"]

#: an energy error above this (nats) is a divergent transition, as in Stan and NumPyro
MAX_DELTA_ENERGY = 1000.0

#: warm-up runs at least this many chains (ChEES adapts from cross-chain statistics); num_chains of them are kept
WARMUP_CHAINS = 16

#: draws kept on the device above this many bytes are refused (fewer chains or draws)
DRAWS_LIMIT = 4 * 2**30


@register("chees")
@dataclass
class ChEES(Method):
    """Many-chain HMC with ChEES trajectory-length adaptation: all chains in one batched potential call.

    Parameters
    ----------
    num_samples : int
        Draws kept per chain.
    warmup_steps : int
        Adaptation iterations before them (also ``num_warmup``).
    num_chains : int
        Chains, moved together. The adaptation pools them, so warm-up runs at least 16 chains (the first
        ``num_chains`` are kept): one chain works, and costs a batch of 16 in warm-up.
    target_accept : float
        Target of the step-size adaptation for the harmonic mean of the chains' acceptance probabilities (also
        ``target_accept_prob``); 0.651 is optimal for HMC, raise it where divergences appear.
    step_size : float, optional
        Initial step size; by default found by doubling or halving until half the proposals are accepted.
    max_leapfrog : int
        At most this many leapfrog steps per iteration (also ``max_leapfrog_steps``).
    adapt_mass_matrix : bool
        Adapt a diagonal mass matrix in warm-up.
    init : dict or Pyro init strategy, optional
        Initial point of every chain; default uniform in (-2, 2) in the unconstrained space, different per chain.
    jit_compile : bool
        Compile the batched potential with ``torch.compile`` (its gradient too, by AOTAutograd), checked against the
        uncompiled one at the starts. Eager torch pays microseconds of Python and autograd overhead per operation,
        which dominates a small model with many operations (a hierarchical model, a GP): compiled, a leapfrog step
        costs a few times less, after seconds of compilation. Refused with the reason where compilation fails.

    Notes
    -----
    The potential must take a batch of points in one call: energy models that accept batches do; other energy
    models and Pyro models (without enumerated discrete sites) are vectorised with ``torch.func.vmap`` and checked
    against point-by-point evaluation, and refused with the reason where that fails.
    """

    num_samples: int = 1000
    warmup_steps: int = 500
    num_chains: int = 64
    target_accept: float = 0.651
    step_size: float | None = None
    max_leapfrog: int = MAX_LEAPFROG
    adapt_mass_matrix: bool = True
    init: dict | Callable | None = None
    jit_compile: bool = False

    aliases = {"num_warmup": "warmup_steps", "target_accept_prob": "target_accept",
               "max_leapfrog_steps": "max_leapfrog"}

    def __post_init__(self) -> None:
        positive_int("ChEES", "num_samples", self.num_samples)
        positive_int("ChEES", "warmup_steps", self.warmup_steps, minimum=0)
        positive_int("ChEES", "num_chains", self.num_chains)
        positive_int("ChEES", "max_leapfrog", self.max_leapfrog)
        probability("ChEES", "target_accept", self.target_accept)
        positive_float("ChEES", "step_size", self.step_size, allow_none=True)

    def refusals(self, backend: str) -> list[str]:
        if backend != "pyro":
            return ["ChEES runs on torch potentials; NumPyro vectorises its own chains: use "
                    "NUTS(num_chains=..., chain_method='vectorized')."]
        return []

    def run(self, backend, model, args, kwargs, seed, progress) -> Posterior:
        potential = backend.potential(model, args, kwargs, init=self.init, what="ChEES", seed=seed)
        if potential.refusal:
            raise ValueError(potential.refusal)
        potential = potential.vectorized("ChEES")
        return mcmc_posterior(self, backend, model, args, kwargs, seed, potential,
                              sample(self, potential, seed, progress))


# --- adaptation state ---------------------------------------------------------------------------------------------
class _DualAveraging:
    """Nesterov dual averaging of log step size (Hoffman & Gelman 2014, algorithm 5)."""

    def __init__(self, step_size: float, target: float):
        self.target, self.mu = target, math.log(10 * step_size)
        self.t, self.h_bar, self.log_step, self.log_step_bar = 0, 0.0, math.log(step_size), 0.0

    def update(self, accept: float) -> float:
        self.t += 1
        eta = 1.0 / (self.t + 10.0)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept)
        self.log_step = self.mu - math.sqrt(self.t) / 0.05 * self.h_bar
        weight = self.t ** -0.75
        self.log_step_bar = weight * self.log_step + (1 - weight) * self.log_step_bar
        return math.exp(self.log_step)

    @property
    def final(self) -> float:
        return math.exp(self.log_step_bar)


class _TrajectoryLength:
    """Adam without momentum (beta2 = 0.95, learning rate 0.025) ascending the ChEES criterion in log T, each update
    clipped to +-0.35, and a moving average of log T with weight t**-0.5 (the values of the paper); a gradient beyond
    5 times the running root mean square is capped there, so that one outlying iteration cannot freeze Adam's scale
    for a hundred more."""

    def __init__(self, length: float):
        self.log_length = self.average = math.log(length)
        self.v, self.t, self.t_average = 0.0, 0, 0

    def update(self, total: float, weight: float) -> None:
        """One step from the acceptance-weighted sum of the chains' gradients and the sum of their weights."""
        if math.isfinite(total) and weight > 0:
            self._step(total / weight)

    def _step(self, gradient: float) -> None:
        if self.t:  # the gradient is heavy-tailed (cubic in the distance of a chain far out): cap it at 5 rms
            bound = 5.0 * math.sqrt(self.v / (1 - 0.95**self.t))
            gradient = max(-bound, min(bound, gradient))
        self.t += 1
        self.v = 0.95 * self.v + 0.05 * gradient**2
        step = 0.025 * gradient / (math.sqrt(self.v / (1 - 0.95**self.t)) + 1e-12)
        self.log_length += max(-0.35, min(0.35, step))
        self.t_average += 1
        weight = self.t_average ** -0.5
        self.average = (1 - weight) * self.average + weight * self.log_length

    def restart_average(self) -> None:
        self.t_average = 0

    def value(self, step_size: float, max_leapfrog: int) -> float:
        return min(max(math.exp(self.average), step_size), max_leapfrog * step_size)


class _Moments:
    """Running mean and variance of positions pooled over chains and iterations (Chan et al.'s parallel update)."""

    def __init__(self, like: torch.Tensor):
        self.n, self.mean, self.m2 = 0, torch.zeros_like(like), torch.zeros_like(like)

    def add(self, x: torch.Tensor) -> None:
        nb, mb = x.shape[0], x.mean(0)
        delta, n = mb - self.mean, self.n + x.shape[0]
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + ((x - mb) ** 2).sum(0) + delta**2 * (self.n * nb / n)
        self.n = n

    def inverse_mass(self) -> torch.Tensor:
        """The variance, shrunk towards 1e-3 as Stan does for few samples."""
        var = self.m2 / max(self.n - 1, 1)
        return (self.n / (self.n + 5.0)) * var + 1e-3 * (5.0 / (self.n + 5.0))


def mass_windows(warmup: int) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows ``(start, end)`` of the mass matrix: 75 fast iterations first, windows of 25,
    50, 100, ... (the last stretched to the end), 50 fast iterations last; 15% / 75% / 10% for short warm-ups; none
    below 20 warm-up iterations."""
    if warmup < 20:
        return []
    first, last, size = 75, 50, 25
    if first + last + size > warmup:
        first, last = int(0.15 * warmup), int(0.1 * warmup)
        size = warmup - first - last
    windows, start = [], first
    while start < warmup - last:
        end = start + size
        if end + 2 * size > warmup - last:  # too little left for the next, doubled window: this one takes it
            end = warmup - last
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


def halton(index: int) -> float:
    """The base-2 van der Corput sequence, in (0, 1) for index >= 1."""
    out, f = 0.0, 0.5
    while index:
        out += f * (index & 1)
        index >>= 1
        f *= 0.5
    return out


# --- the sampler ---------------------------------------------------------------------------------------------------
def _row_by_row_on_failure(fn: Callable) -> Callable:
    """``fn`` of a batch of points (returning a tuple: energies first, then per-point arrays such as gradients), which
    may raise for the whole batch where one point fails (a Cholesky factor of a matrix that is not positive definite
    there, say): then each point alone, a failing one at infinite energy (zero density, a rejected proposal) with
    zeros for the rest. If every point fails, the batch's error is raised."""

    def guarded(x):
        try:
            return fn(x)
        except (RuntimeError, ValueError) as err:
            rows = []
            for i in range(x.shape[0]):
                try:
                    rows.append(fn(x[i : i + 1]))
                except (RuntimeError, ValueError):
                    rows.append(None)
            like = next((r for r in rows if r is not None), None)
            if like is None:
                raise err from None
            fill = (torch.full((1,), float("inf"), dtype=x.dtype, device=x.device),) + tuple(
                torch.zeros_like(part) for part in like[1:])
            rows = [r if r is not None else fill for r in rows]
            return tuple(torch.cat([r[k] for r in rows]) for k in range(len(like)))

    return guarded


def _compiled_value_and_grad(potential: Potential, x: torch.Tensor) -> Callable:
    """Energies and gradients of a batch ``(B, D)`` through ``torch.compile`` of the batched potential (AOTAutograd
    compiles its backward), checked against the uncompiled potential at the points ``x``; a ValueError says why
    where it cannot be compiled or disagrees. Call it where distributions skip argument checks, as the sampler's
    loop does: the checks are data-dependent branches."""
    from torch._dynamo.utils import counters

    def energies(u):
        return potential(u)

    # a code object of its own: torch.compile caches per code object, so each run compiles (and checks) its own
    fresh = types.FunctionType(energies.__code__.replace(), energies.__globals__, "energies", None,
                               energies.__closure__)
    compiled = potential.ops.value_and_grad(torch.compile(fresh))
    fix = "Use jit_compile=False."
    graphs = counters["stats"]["unique_graphs"]
    try:
        energy, g = compiled(x)
    except Exception as err:  # noqa: BLE001 - compilation fails in as many ways as a model can be written
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"ChEES: jit_compile=True, but torch.compile could not compile the potential "
                         f"({type(err).__name__}: {first}). {fix}") from err
    if counters["stats"]["unique_graphs"] == graphs:
        warn("ChEES: jit_compile=True, but torch.compile captured no part of this potential (Pyro's effect handlers, "
             "which trace a Pyro model, are opaque to it; an energy model from pyebm.model_from_energy compiles): "
             "running it uncompiled.", UserWarning)
        return potential.value_and_grad(True)
    expected, expected_g = potential.value_and_grad(True)(x)
    tol = {"rtol": 1e-4, "atol": 1e-4} if x.dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-9}
    if not (torch.allclose(energy, expected, **tol) and torch.allclose(g, expected_g, **tol)):
        raise ValueError("ChEES: jit_compile=True, but the compiled potential disagrees with the uncompiled one at "
                         f"the starts (energies differ by up to {float((energy - expected).abs().max()):.3g}). "
                         + fix)
    return compiled


def _starts(potential: Potential, chains: int, generator: torch.Generator, from_init: bool,
            tries: int = 100) -> torch.Tensor:
    """Every chain's start: the initial point, or uniform in (-2, 2) (unconstrained) redrawn where the energy is not
    finite."""
    like, energy = potential.init, _row_by_row_on_failure(lambda v: (potential(v),))
    if from_init:
        x = like.expand(chains, -1).clone()
        bad = ~torch.isfinite(energy(x)[0])
    else:
        x = torch.empty((chains, potential.dim), dtype=like.dtype, device=like.device)
        bad = torch.ones(chains, dtype=torch.bool, device=like.device)
        for _ in range(tries):
            fresh = torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator) * 4 - 2
            x = torch.where(bad[:, None], fresh, x)
            bad = ~torch.isfinite(energy(x)[0])
            if not bool(bad.any()):
                break
    if bool(bad.any()):
        where = "at the initial point" if from_init else f"at {tries} uniform points in (-2, 2) (unconstrained)"
        raise NonFiniteEnergyError(
            f"ChEES: the energy is not finite {where} for {int(bad.sum())} of {chains} chains. Check the energy for "
            "log(0), division by zero or overflow there, or pass `init` where it is finite.")
    return x


def _leapfrog(value_and_grad: Callable, x, p, g, step_size: float, steps: int, inv_mass):
    """``steps`` leapfrog steps of every chain at once; returns position, momentum, energy and gradient."""
    drift = step_size * inv_mass
    p = torch.add(p, g, alpha=-0.5 * step_size)
    for i in range(steps):
        x = torch.addcmul(x, drift, p)
        energy, g = value_and_grad(x)
        p = torch.add(p, g, alpha=-(step_size if i < steps - 1 else 0.5 * step_size))
    return x, p, energy, g


def _kinetic(p, inv_mass):
    return 0.5 * (p * p * inv_mass).sum(-1)


def _transition(value_and_grad, x, energy, g, step_size, steps, inv_mass, generator):
    """One HMC transition of all chains: proposal, acceptance probability, divergence, and the accepted state."""
    p = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator) * inv_mass.rsqrt()
    x1, p1, energy1, g1 = _leapfrog(value_and_grad, x, p, g, step_size, steps, inv_mass)
    delta = (energy1 + _kinetic(p1, inv_mass)) - (energy + _kinetic(p, inv_mass))
    divergent = ~(delta < MAX_DELTA_ENERGY)  # NaN included
    accept_prob = torch.where(divergent, torch.zeros_like(delta), torch.exp(torch.clamp(-delta, max=0.0)))
    accept = torch.rand(delta.shape, dtype=x.dtype, device=x.device, generator=generator) < accept_prob
    keep = accept[:, None]
    new = (torch.where(keep, x1, x), torch.where(accept, energy1, energy), torch.where(keep, g1, g))
    return new, (x1, p1, accept_prob, divergent)


def _reasonable_step_size(value_and_grad, x, energy, g, inv_mass, generator, step_size: float = 1.0) -> float:
    """Double or halve the step size until a single leapfrog step's mean acceptance probability crosses 1/2."""
    direction = 0
    for _ in range(60):
        _, (_, _, prob, _) = _transition(value_and_grad, x, energy, g, step_size, 1, inv_mass, generator)
        high = float(prob.mean()) > 0.5
        step = 1 if high else -1
        if direction and step != direction:
            break
        direction = step
        step_size *= 2.0**step
    return step_size


def _chees_gradient(x0, x1, p1, accept_prob, divergent, inv_mass, time: float) -> tuple[float, float]:
    """The ChEES gradient in log T of every chain, in the coordinates the mass matrix whitens, centred on the
    cross-chain means (the proposals' weighted by acceptance): the sum of the acceptance-weighted per-chain gradients
    and the sum of the weights (divergent chains weigh nothing)."""
    sd = inv_mass.sqrt()
    w = accept_prob[:, None]
    c1 = (x1 - (w * x1).sum(0) / w.sum().clamp_min(1e-20)) / sd
    c0 = (x0 - x0.mean(0)) / sd
    velocity = p1 * sd  # d/dt of the whitened position
    per_chain = time * ((c1 * c1).sum(-1) - (c0 * c0).sum(-1)) * (c1 * velocity).sum(-1)
    usable = ~divergent & torch.isfinite(per_chain)
    weights = torch.where(usable, accept_prob, torch.zeros_like(accept_prob))
    per_chain = torch.where(usable, per_chain, torch.zeros_like(per_chain))
    return float((weights * per_chain).sum()), float(weights.sum())


def _harmonic_mean(accept_prob, divergent) -> float:
    ok = ~divergent
    if not bool(ok.any()):
        return 0.0
    return float(1.0 / (1.0 / accept_prob[ok].clamp_min(1e-10)).mean())


def _restart_stuck(x, energy, g, moved, generator) -> int:
    """Move every chain that has not ``moved`` to the state of a randomly chosen one that has (in place); returns
    how many were moved."""
    stuck = torch.nonzero(~moved).flatten()
    healthy = torch.nonzero(moved).flatten()
    if not len(stuck) or not len(healthy):
        return 0
    pick = torch.randint(len(healthy), (len(stuck),), generator=generator, device=healthy.device)
    source = healthy[pick]
    x[stuck], energy[stuck], g[stuck] = x[source], energy[source], g[source]
    return len(stuck)


def sample(method: ChEES, potential: Potential, seed: int, progress: bool):
    """Warm-up and draws of all chains: unconstrained draws ``(chain, draw, D)``, divergent draws and acceptance
    rates per chain, and the adapted settings."""
    init = potential.init
    chains, draws, dim = method.num_chains, method.num_samples, potential.dim
    size = chains * draws * dim * init.element_size()
    if size > DRAWS_LIMIT:
        raise ValueError(f"ChEES: {chains} chains x {draws} draws x {dim} dimensions would hold {size / 2**30:.1f} "
                         f"GiB of draws (limit {DRAWS_LIMIT / 2**30:.0f} GiB); use fewer chains or draws.")
    generator = torch.Generator(device=init.device).manual_seed(int(seed))
    warm_chains = max(chains, WARMUP_CHAINS) if method.warmup_steps else chains
    x = _starts(potential, warm_chains, generator, method.init is not None)
    # the starts were evaluated with the distributions' argument checks on; from here they are off, as in Pyro's own
    # potential: on a small model they cost as much as the arithmetic
    with pyro.validation_enabled(False):
        value_and_grad = (_compiled_value_and_grad(potential, x) if method.jit_compile
                          else potential.value_and_grad(True))
        return _sample(method, potential, value_and_grad, x, generator, progress)


def _sample(method: ChEES, potential: Potential, value_and_grad: Callable, x: torch.Tensor,
            generator: torch.Generator, progress: bool):
    """The warm-up and draws of :func:`sample` from the starts ``x``."""
    init = potential.init
    chains, draws, dim = method.num_chains, method.num_samples, potential.dim
    value_and_grad = _row_by_row_on_failure(value_and_grad)
    energy, g = value_and_grad(x)
    inv_mass = torch.ones(dim, dtype=init.dtype, device=init.device)
    step_size = method.step_size or _reasonable_step_size(value_and_grad, x, energy, g, inv_mass, generator)
    averaging = _DualAveraging(step_size, method.target_accept)
    length = _TrajectoryLength(step_size)
    windows = mass_windows(method.warmup_steps) if method.adapt_mass_matrix else []
    moments = _Moments(init)
    kept = torch.empty((chains, draws, dim), dtype=init.dtype, device=init.device)
    divergent_draws = torch.zeros((chains, draws), dtype=torch.bool, device=init.device)
    accepted = torch.zeros(chains, dtype=init.dtype, device=init.device)
    gradients, restarted = 0, 0
    checkpoints = {end for _, end in windows} | {start for start, _ in windows[:1]}
    checkpoints = {c for c in checkpoints if c <= method.warmup_steps // 2}
    moved = torch.zeros(x.shape[0], dtype=torch.bool, device=init.device)
    total = method.warmup_steps + draws
    with tqdm(total=total, desc="ChEES warmup", disable=not progress, leave=False) as bar:
        for it in range(total):
            warm = it < method.warmup_steps
            if it == method.warmup_steps:
                if method.warmup_steps:
                    step_size = averaging.final
                    x, energy, g = x[:chains], energy[:chains], g[:chains]
                bar.set_description("ChEES sample")
            trajectory = length.value(step_size, method.max_leapfrog)
            jitter = halton(it + 1)
            steps = min(method.max_leapfrog, max(1, math.ceil(jitter * trajectory / step_size)))
            x0 = x
            (x, energy, g), (x1, p1, prob, divergent) = _transition(
                value_and_grad, x, energy, g, step_size, steps, inv_mass, generator)
            gradients += steps * x.shape[0]
            if warm:
                moved |= (x != x0).any(-1)
                if it + 1 in checkpoints:
                    restarted += _restart_stuck(x, energy, g, moved, generator)
                    moved[:] = False
                step_size = averaging.update(_harmonic_mean(prob, divergent))
                length.update(*_chees_gradient(x0, x1, p1, prob, divergent, inv_mass, jitter * trajectory))
                if windows and it >= windows[0][0]:
                    moments.add(x)
                    if it + 1 == windows[0][1]:
                        windows.pop(0)
                        inv_mass = moments.inverse_mass()
                        moments = _Moments(init)
                        step_size = _reasonable_step_size(value_and_grad, x, energy, g, inv_mass, generator, step_size)
                        averaging = _DualAveraging(step_size, method.target_accept)
                        length.restart_average()
            else:
                s = it - method.warmup_steps
                kept[:, s] = x
                divergent_draws[:, s] = divergent
                accepted += prob
            if progress and (it % 25 == 0 or it == total - 1):
                bar.set_postfix(step_size=f"{step_size:.3g}", leapfrog=steps)
            bar.update()
    divergences = [torch.nonzero(row).flatten().tolist() for row in divergent_draws.cpu()]
    extra = {"step_size": step_size, "trajectory_length": length.value(step_size, method.max_leapfrog),
             "inverse_mass_matrix": inv_mass.detach().cpu(), "num_gradient_evaluations": gradients,
             "num_restarted_chains": restarted}
    return kept, divergences, (accepted / draws).cpu().tolist(), extra

