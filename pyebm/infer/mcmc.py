"""HMC and NUTS through ``pyro.infer.MCMC``, chains run one after another with diagnostics checked."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pyro.infer import HMC as PyroHMC
from pyro.infer import MCMC
from pyro.infer import NUTS as PyroNUTS
from pyro.infer.autoguide.initialization import init_to_uniform

from ..diagnostics import ConvergenceWarning, InferenceError, ess_bulk, split_rhat
from ..energy import sampler_semantics
from .approximations import Draws, to_numpy
from .registry import Method, register
from .result import Posterior, _element_labels
from .space import LatentSpace, _init_strategy, direct_potential

__all__ = ["NUTS", "HMC"]

#: r_hat above this triggers a ConvergenceWarning (Vehtari et al. 2021)
RHAT_THRESHOLD = 1.01


@dataclass
class _MCMC(Method):
    num_samples: int = 1000
    warmup_steps: int = 500
    num_chains: int = 2
    init: dict | Callable | None = None
    jit_compile: bool = False

    def kernel(self, model: Callable | None, potential_fn: Callable | None = None):  # pragma: no cover
        raise NotImplementedError

    def run(self, model, args, kwargs, progress: bool) -> Posterior:
        direct = None if self.jit_compile else direct_potential(model, args, kwargs)
        if direct is not None:
            potential_fn, transforms = direct
            space = LatentSpace(model, args, kwargs, self.init)
        chains, divergences, accept = [], [], []
        for chain in range(self.num_chains):
            if direct is None:
                kernel, initial = self.kernel(model), None
            else:
                kernel = self.kernel(None, potential_fn)
                start = space.init if self.init is not None else torch.rand(space.dim, dtype=space.dtype) * 4 - 2
                initial = space.unpack(start)
                if not torch.isfinite(potential_fn(initial)):
                    raise ValueError(
                        f"{self.name.upper()}: the energy is not finite at the starting point of chain {chain} "
                        f"({space.constrain(start)}); pass `init` where it is finite."
                    )
            mcmc = MCMC(kernel, num_samples=self.num_samples, warmup_steps=self.warmup_steps,
                        num_chains=1, disable_progbar=not progress, initial_params=initial)
            with warnings.catch_warnings(), sampler_semantics():
                if self.jit_compile:  # torch.jit's deprecation notice says nothing the user can act on
                    warnings.filterwarnings("ignore", category=DeprecationWarning)
                    warnings.filterwarnings("ignore", message=".*torch.jit.*")
                mcmc.run(*args, **kwargs)
            samples = mcmc.get_samples()
            if direct is not None:  # the potential_fn path returns unconstrained draws
                samples = {k: transforms[k](v) for k, v in samples.items()}
            chains.append(samples)
            diag = mcmc.diagnostics()
            divergences.append(list(diag.get("divergences", {}).get("chain 0", [])))
            accept.append(float(diag.get("acceptance rate", {}).get("chain 0", float("nan"))))
        draws = {k: torch.stack([c[k] for c in chains]) for k in chains[0]}
        return self._posterior(draws, divergences, accept)

    def _posterior(self, draws: dict, divergences: list, accept: list) -> Posterior:
        return posterior_from_draws(self.name, draws, divergences, accept)


def posterior_from_draws(method: str, draws: dict, divergences: list, accept: list) -> Posterior:
    """A Posterior from MCMC draws ``{site: (chain, draw, *shape)}`` (torch or JAX arrays), with r_hat,
    bulk-ESS and divergences checked: a chain that never moved is an InferenceError; r_hat > 1.01 or any
    divergence a ConvergenceWarning. Shared by both backends."""
    arrays = {k: to_numpy(v) for k, v in draws.items()}
    num_chains, num_samples = next(iter(arrays.values())).shape[:2]
    label = method.upper()
    for c in range(num_chains):
        if all(bool((v[c] == v[c, :1]).all()) for v in arrays.values()):
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
        labels = _element_labels(name, tuple(v.shape[2:]))
        rhat.update(zip(labels, split_rhat(flat).tolist()))
        ess.update(zip(labels, ess_bulk(flat).tolist()))
    n_div = int(diverging.sum())
    if n_div:
        warnings.warn(
            f"{label}: {n_div} divergent transitions after warmup "
            f"({n_div / diverging.size:.1%} of draws): the sampler could not follow the energy's geometry "
            "(a funnel, a hard wall). Raise target_accept (e.g. 0.95) or reparametrise.",
            ConvergenceWarning, stacklevel=4,
        )
    bad = {k: r for k, r in rhat.items() if r > RHAT_THRESHOLD}
    if bad:
        worst = max(bad, key=bad.get)
        warnings.warn(
            f"{label}: r_hat > {RHAT_THRESHOLD} for {len(bad)} element(s), worst {worst} = "
            f"{bad[worst]:.3f}: the chains disagree. Run longer (warmup_steps, num_samples), use more chains, "
            "or check for several modes.", ConvergenceWarning, stacklevel=4,
        )
    diagnostics = {
        "divergences": divergences, "num_divergences": n_div, "acceptance_rate": accept,
        "r_hat": rhat, "ess_bulk": ess, "sample_stats": {"diverging": diverging},
    }
    return Posterior(method, Draws(draws), site_shapes={k: tuple(v.shape[2:]) for k, v in draws.items()},
                     diagnostics=diagnostics)


def _init(init) -> Callable:
    return init_to_uniform if init is None else _init_strategy(init)


@register("nuts")
@dataclass
class NUTS(_MCMC):
    """No-U-Turn sampler (Pyro's), the gold standard of the ladder.

    Parameters
    ----------
    num_samples, warmup_steps : int
        Draws kept per chain, and adaptation steps before them (step size and diagonal mass matrix).
    num_chains : int
        Chains, run one after another (deterministic for a seed, whatever the machine).
    target_accept : float
        Target acceptance probability of the step-size adaptation; raise it toward 0.95 when
        divergences appear.
    max_tree_depth : int
        At most 2**max_tree_depth leapfrog steps per draw.
    full_mass : bool
        Adapt a dense mass matrix (helps correlated posteriors of moderate dimension).
    init : dict or Pyro init strategy, optional
        Initial point; default uniform in (-2, 2) in the unconstrained space, different per chain.
    jit_compile : bool
        Trace the model and compile its potential with torch.jit. Off by default: for models made
        by :func:`pyebm.model_from_energy` pyebm hands Pyro's NUTS the energy's potential directly
        (no Pyro trace per gradient), which measured faster than the compiled trace here.
    """

    target_accept: float = 0.8
    max_tree_depth: int = 10
    full_mass: bool = False

    def kernel(self, model: Callable | None, potential_fn: Callable | None = None):
        return PyroNUTS(model, potential_fn=potential_fn, target_accept_prob=self.target_accept, max_tree_depth=self.max_tree_depth,
                        full_mass=self.full_mass, init_strategy=_init(self.init), jit_compile=self.jit_compile,
                        ignore_jit_warnings=True)


@register("hmc")
@dataclass
class HMC(_MCMC):
    """Hamiltonian Monte Carlo with a fixed trajectory length (Pyro's).

    Parameters
    ----------
    step_size : float
        Initial leapfrog step size (adapted during warmup).
    trajectory_length : float
        Integration time per draw; the number of leapfrog steps is trajectory_length / step_size.
    target_accept : float
        Target acceptance probability of the step-size adaptation.
    full_mass, init, jit_compile, num_samples, warmup_steps, num_chains
        As for :class:`NUTS`.
    """

    step_size: float = 0.1
    trajectory_length: float = 2.0
    target_accept: float = 0.8
    full_mass: bool = False

    def kernel(self, model: Callable | None, potential_fn: Callable | None = None):
        return PyroHMC(model, potential_fn=potential_fn, step_size=self.step_size, trajectory_length=self.trajectory_length,
                       target_accept_prob=self.target_accept, full_mass=self.full_mass,
                       init_strategy=_init(self.init), jit_compile=self.jit_compile, ignore_jit_warnings=True)
