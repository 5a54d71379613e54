"""HMC and NUTS: the backend's own kernels (Pyro's or NumPyro's) driven over the model's potential, chains one after
another, with r_hat, bulk-ESS and divergences checked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..diagnostics import InferenceError, classic_rhat, rhat_and_ess, warn
from ..ops import TORCH, ArrayOps
from .approximations import Draws, to_numpy
from .registry import Method, positive_float, positive_int, probability, register
from .result import Posterior, element_labels
from .svi import probe_improper

__all__ = ["NUTS", "HMC", "mcmc_posterior", "posterior_from_draws", "RHAT_THRESHOLD", "MAX_LEAPFROG"]

#: r_hat above this triggers a ConvergenceWarning (Vehtari et al. 2021)
RHAT_THRESHOLD = 1.01

#: at most this many leapfrog steps per HMC draw (trajectory_length / step_size is capped here)
MAX_LEAPFROG = 1024

#: draws farther out than this (times 1 + the start's norm) on the reals: the chains ran away
DRIFT = 1e8


@dataclass
class _MCMC(Method):
    num_samples: int = 1000
    warmup_steps: int = 500
    num_chains: int = 2
    init: dict | Callable | None = None
    jit_compile: bool = False
    chain_method: str = "sequential"
    target_accept: float = 0.8
    full_mass: bool = False

    aliases = {"num_warmup": "warmup_steps", "target_accept_prob": "target_accept", "dense_mass": "full_mass"}

    def __post_init__(self) -> None:
        owner = type(self).__name__
        positive_int(owner, "num_samples", self.num_samples)
        positive_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        positive_int(owner, "num_chains", self.num_chains)
        probability(owner, "target_accept", self.target_accept)
        if self.chain_method not in ("sequential", "vectorized", "parallel"):
            raise ValueError(f"{owner}: chain_method must be 'sequential', 'vectorized' or 'parallel', got "
                             f"{self.chain_method!r}.")

    def refusals(self, backend: str) -> list[str]:
        out = []
        if backend == "pyro" and self.chain_method != "sequential":
            out.append(f"chain_method={self.chain_method!r}: Pyro's kernels run one chain at a time here "
                       "(chain_method='sequential').")
        if backend == "numpyro" and self.init is not None and not isinstance(self.init, dict):
            out.append("init must be a dict of site values there.")
        return out

    def run(self, backend, model, args, kwargs, seed, progress) -> Posterior:
        potential = backend.potential(model, args, kwargs, init=self.init, jit_compile=self.jit_compile,
                                      what=self.name.upper(), seed=seed)
        if potential.refusal:
            raise ValueError(potential.refusal)
        return mcmc_posterior(self, backend, model, args, kwargs, seed, potential,
                              backend.mcmc(self, potential, seed, progress))


def mcmc_posterior(method, backend, model, args, kwargs, seed: int, potential, result) -> Posterior:
    """The Posterior of a sampler's ``result`` (unconstrained draws ``(chain, draw, D)``, divergent draws and
    acceptance rates per chain, extra diagnostics): drift checked, draws constrained, the model's other sites
    completed, r_hat, ESS and divergences checked."""
    u, divergences, accept, extra = result
    _check_drift(u, potential, method.name.upper())
    chains, draws_per_chain = u.shape[:2]
    draws = potential.constrain(u)
    view = backend.model_view(model, args, kwargs, potential)
    if view.extra_sites:
        flat = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in draws.items()}
        done = view.complete(flat, seed, temperature=1.0)
        draws = {k: v.reshape((chains, draws_per_chain) + tuple(v.shape[1:])) for k, v in done.items()}
    post = posterior_from_draws(method.name, draws, divergences, accept, ops=potential.ops, view=view)
    post.diagnostics.update(extra)
    return post


def _check_drift(u, potential, label: str) -> None:
    """Chains that drift sample an improper density: refuse them. Chains that ran off to enormous values are refused
    outright; chains that wander (far out, or disagreeing) are checked by a short minimisation from the initial point
    for an energy unbounded below (free where the chains look fine)."""
    ops = potential.ops
    draws = ops.to_numpy(u)
    reach = np.abs(draws).reshape(-1, u.shape[-1]).max(0).astype(np.float64)  # per coordinate
    start = float(np.abs(ops.to_numpy(potential.init)).max(initial=0.0))
    rhat = np.nanmax(classic_rhat(draws)) if draws.shape[1] >= 4 else 1.0
    if reach.max() > 1e3 * (1.0 + start) or rhat > 1.05:
        probe_improper(potential, label)
    far = reach > DRIFT * (1.0 + start)
    if far.any():
        raise InferenceError(
            f"{label}: the chains ran off to |u| = {reach.max():.3g}: the density does not confine the latent "
            "variables (an energy flat or unbounded below in some direction: an improper posterior). Add a proper "
            "prior, or check the energy."
        )


def posterior_from_draws(method: str, draws: dict, divergences: list, accept: list, *, ops: ArrayOps = TORCH,
                         view=None) -> Posterior:
    """A Posterior from MCMC draws ``{site: (chain, draw, *shape)}`` (torch or JAX arrays), with r_hat,
    bulk-ESS and divergences checked: a chain that never moved is an InferenceError; r_hat > 1.01 or any
    divergence a ConvergenceWarning. Shared by both backends."""
    arrays = {k: to_numpy(v) for k, v in draws.items()}
    num_chains, num_samples = next(iter(arrays.values())).shape[:2]
    label = method.upper()
    continuous = {k: v for k, v in arrays.items() if np.issubdtype(v.dtype, np.floating)}
    for c in range(num_chains):
        if num_samples > 1 and all(bool((v[c] == v[c, :1]).all()) for v in continuous.values()):
            raise InferenceError(
                f"{label}: chain {c} never moved: every proposal was rejected "
                f"({len(divergences[c])} of {num_samples} diverged). Either the step-size adaptation did "
                "not settle (raise warmup_steps; Pyro's schedule wants a few hundred), or the "
                "energy is non-finite or extremely steep around the start: check it there, or pass `init`."
            )
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    for c, idx in enumerate(divergences):
        diverging[c, np.asarray(idx, dtype=int)] = True
    rhat, ess = {}, {}
    for name, v in arrays.items():
        flat = v.reshape(v.shape[0], v.shape[1], -1)
        labels = element_labels(name, tuple(v.shape[2:]))
        r, e = rhat_and_ess(flat)
        rhat.update(zip(labels, r.tolist()))
        ess.update(zip(labels, e.tolist()))
    n_div = int(diverging.sum())
    if n_div:
        warn(
            f"{label}: {n_div} divergent transitions after warmup "
            f"({n_div / diverging.size:.1%} of draws): the sampler could not follow the energy's geometry "
            "(a funnel, a hard wall). Raise target_accept (e.g. 0.95) or reparametrise.")
    bad = {k: r for k, r in rhat.items() if r > RHAT_THRESHOLD}
    if bad:
        worst = max(bad, key=bad.get)
        warn(
            f"{label}: r_hat > {RHAT_THRESHOLD} for {len(bad)} element(s), worst {worst} = "
            f"{bad[worst]:.3f}: the chains disagree. Run longer (warmup_steps, num_samples), use more chains, "
            "or check for several modes.")
    diagnostics = {
        "divergences": divergences, "num_divergences": n_div, "acceptance_rate": accept,
        "r_hat": rhat, "ess_bulk": ess, "sample_stats": {"diverging": diverging},
    }
    return Posterior(method, Draws(draws, ops), site_shapes={k: tuple(v.shape[2:]) for k, v in draws.items()},
                     diagnostics=diagnostics, view=view)


@register("nuts")
@dataclass
class NUTS(_MCMC):
    """No-U-Turn sampler (the backend's), the gold standard of the ladder.

    Parameters
    ----------
    num_samples, warmup_steps : int
        Draws kept per chain, and adaptation steps before them (step size and mass matrix); also spelled
        ``num_warmup``.
    num_chains : int
        Chains, run one after another (deterministic for a seed, whatever the machine).
    target_accept : float
        Target acceptance probability of the step-size adaptation (also ``target_accept_prob``); raise it toward
        0.95 when divergences appear.
    max_tree_depth : int
        At most 2**max_tree_depth leapfrog steps per draw.
    full_mass : bool
        Adapt a dense mass matrix (also ``dense_mass``).
    init : dict or Pyro init strategy, optional
        Initial point; default uniform in (-2, 2) in the unconstrained space, different per chain.
    jit_compile : bool
        Pyro: trace the model and compile its potential with torch.jit (energy models made by
        :func:`pyebm.model_from_energy` otherwise get their closed-form potential, faster still). NumPyro always
        compiles.
    chain_method : str
        NumPyro: "sequential" (default), "vectorized" or "parallel". Pyro: "sequential".
    """

    max_tree_depth: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("NUTS", "max_tree_depth", self.max_tree_depth)


@register("hmc")
@dataclass
class HMC(_MCMC):
    """Hamiltonian Monte Carlo with a fixed trajectory length (the backend's).

    Parameters
    ----------
    step_size : float
        Initial leapfrog step size (adapted during warmup), finite and > 0.
    trajectory_length : float
        Integration time per draw; the number of leapfrog steps is trajectory_length / step_size, at most
        :data:`MAX_LEAPFROG` (1024) per draw.
    num_steps : int, optional
        Leapfrog steps per draw instead of a trajectory length.
    target_accept, full_mass, init, jit_compile, num_samples, warmup_steps, num_chains, chain_method
        As for :class:`NUTS`.
    """

    step_size: float = 0.1
    trajectory_length: float = 2.0
    num_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_float("HMC", "step_size", self.step_size)
        positive_float("HMC", "trajectory_length", self.trajectory_length)
        if self.num_steps is not None:
            positive_int("HMC", "num_steps", self.num_steps)
            if self.num_steps > MAX_LEAPFROG:
                raise ValueError(f"HMC: num_steps = {self.num_steps} exceeds {MAX_LEAPFROG} leapfrog steps per draw.")
        elif self.trajectory_length / self.step_size > MAX_LEAPFROG:
            raise ValueError(
                f"HMC: trajectory_length / step_size = {self.trajectory_length / self.step_size:.3g} leapfrog steps "
                f"per draw exceeds {MAX_LEAPFROG}; raise step_size (it is adapted in warmup anyway) or shorten the "
                "trajectory."
            )
