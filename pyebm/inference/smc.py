r"""Tempered sequential Monte Carlo: particles carried from the prior to the posterior, and log Z on the way.

The path tempers every observed term of the model (energy factors and ``obs=`` likelihoods) by :math:`s \in [0, 1]`:

.. math:: \pi_s(\theta) \propto p(\theta)\, L(\theta)^s,\qquad
          U_s = U_0 + s\,(U_1 - U_0),\qquad Z(s) = \int p(\theta) L(\theta)^s\,d\theta ,

with :math:`p` the prior (drawn exactly by running the model forward) and :math:`L = e^{-\Delta U}` everything
observed. For a model whose only observed terms are energy factors, :math:`L = e^{-\beta E}` and :math:`s` is
``pyebm.temper``'s inverse temperature: :math:`Z(s)` is the energy's normaliser under the prior at :math:`s\beta`.

Each stage picks the next :math:`s' > s` by bisection so that the incremental weights
:math:`w_i = e^{-(s'-s)\Delta U_i}` keep an effective sample size of ``target_ess`` times the particles, multiplies the
evidence by their mean, resamples (systematically) and moves every particle by HMC on :math:`U_{s'}` (diagonal mass
from the particles' variance, step size tuned on the acceptance rate). ``num_runs`` independent runs, all in one
batch, give the estimate :math:`\hat Z = \frac1K\sum_k \hat Z_k` (each unbiased) and its standard error; the heat
capacity :math:`s^2\,\mathrm{Var}_s[\Delta U]` and mean energy :math:`\mathbb E_s[\Delta U] = -\,d\log Z/ds` come
along (Del Moral, Doucet & Jasra 2006; Neal 2001 for annealed importance sampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from tqdm import tqdm

from ..diagnostics import InferenceError, NonFiniteEnergyError
from .approximations import Draws
from .chees import _row_by_row_on_failure, _transition
from .registry import Method, positive_float, positive_int, probability, register
from .result import Posterior

__all__ = ["SMC", "prior_only"]

#: a path that needs more stages than this is refused (the particles cannot follow it)
MAX_STAGES = 1000

#: target acceptance rate of the HMC moves
TARGET_ACCEPT = 0.65


@register("smc")
@dataclass
class SMC(Method):
    r"""Tempered SMC from the prior to the posterior, with the log evidence and its standard error.

    Parameters
    ----------
    num_particles : int
        Particles per run.
    num_runs : int
        Independent runs (one batch); the standard error of ``log_evidence`` comes from their spread, so it is an
        estimate with ``num_runs - 1`` degrees of freedom.
    target_ess : float
        Fraction of the particles that the incremental weights of each stage keep effective; higher means more,
        smaller stages.
    num_mcmc_steps : int
        HMC moves per stage.
    num_leapfrog : int
        Leapfrog steps per HMC move.
    reference : float, optional
        Start from :math:`\mathcal N(0, \text{reference}^2 I)` in the unconstrained space instead of the prior, along
        the geometric path :math:`q^{1-s}\,p(\theta, x)^s`: for models whose prior is improper (the flat prior of
        :func:`pyebm.model_from_energy`). Choose it wide enough to cover every mode; ``log Z(s)`` along this path is
        not a tempered model's, only its end point is the evidence.

    Notes
    -----
    Without ``reference``, the model's prior must be proper (the first particles are its draws), and its potential
    must take many points in one call (vectorised as for :class:`pyebm.ChEES`). ``post.log_evidence`` is :math:`\log Z(1)`;
    ``post.diagnostics`` holds ``log_evidence_se``, the schedule ``beta``, ``log_Z`` (and ``log_Z_se``) along it,
    ``mean_energy`` and ``heat_capacity`` per stage, the moves' acceptance rates, and ``path`` (``"prior"`` or
    ``"reference"``). :func:`pyebm.plot.log_z_path` draws the path.
    """

    num_particles: int = 512
    num_runs: int = 8
    target_ess: float = 0.5
    num_mcmc_steps: int = 10
    num_leapfrog: int = 8
    reference: float | None = None

    aliases = {"num_chains": "num_runs"}

    def __post_init__(self) -> None:
        positive_int("SMC", "num_particles", self.num_particles, minimum=2)
        positive_int("SMC", "num_runs", self.num_runs, minimum=2)
        probability("SMC", "target_ess", self.target_ess)
        positive_int("SMC", "num_mcmc_steps", self.num_mcmc_steps)
        positive_int("SMC", "num_leapfrog", self.num_leapfrog)
        positive_float("SMC", "reference", self.reference, allow_none=True)

    def refusals(self, backend: str) -> list[str]:
        if backend != "pyro":
            return ["SMC runs on the Pyro backend's batched torch potentials: call pyebm.infer (not "
                    "pyebm.numpyro.infer), or use NUTS there."]
        return []

    def run(self, backend, model, args, kwargs, seed, progress) -> Posterior:
        target = backend.potential(model, args, kwargs, what="SMC", seed=seed)
        if target.refusal:
            raise ValueError(target.refusal)
        target, n = target.vectorized("SMC"), self.num_runs * self.num_particles
        if self.reference is None:
            u = _prior_draws(model, args, kwargs, target, n)  # first: it names an improper prior
            base = backend.potential(prior_only(model), args, kwargs, what="SMC", seed=seed)
            if base.refusal:
                raise ValueError(base.refusal)
            if target.names() != base.names() or target.dim != base.dim:
                raise ValueError("SMC: the model's latent sites change when its observed terms are left out "
                                 f"({target.names()} against {base.names()}); SMC needs a fixed set of sites.")
            base = base.vectorized("SMC")
        else:
            base = GaussianReference(self.reference)
            u = self.reference * torch.randn((n, target.dim), dtype=target.dtype, device=target.init.device)
        particles, info = temper_particles(self, base, target, u, seed, progress)
        view = backend.model_view(model, args, kwargs, target)
        K, N = self.num_runs, self.num_particles
        draws = target.constrain(particles)
        if view.extra_sites:
            draws = view.complete(draws, seed, temperature=1.0)
        draws = {k: v.reshape((K, N) + tuple(v.shape[1:])) for k, v in draws.items()}
        log_z = info.pop("log_evidence")
        info["path"] = "prior" if self.reference is None else "reference"
        return Posterior("smc", Draws(draws, target.ops), site_shapes={k: tuple(v.shape[2:]) for k, v in draws.items()},
                         log_evidence=log_z, diagnostics=info, view=view)


# --- the base of the path --------------------------------------------------------------------------------------------
class _PriorOnly(Messenger):
    """Leave every observed term out of the density (energy factors and ``obs=`` sites: masked, as
    ``poutine.mask(mask=False)`` does)."""

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["mask"] = False


def prior_only(model: Callable) -> Callable:
    """``model`` with its observed terms (energy factors, ``obs=`` sites) left out: its prior, the start of the path."""

    def prior_model(*args, **kwargs):
        with _PriorOnly():
            return model(*args, **kwargs)

    return prior_model


class GaussianReference:
    r"""The potential of :math:`\mathcal N(0, s^2 I)` (normalised), the start of the path where the prior is
    improper."""

    def __init__(self, scale: float):
        self.scale = float(scale)

    def value_and_grad(self, jacobian: bool = True) -> Callable:
        def vg(u):
            z = u / self.scale
            const = u.shape[-1] * (math.log(self.scale) + 0.5 * math.log(2 * math.pi))
            return 0.5 * (z * z).sum(-1) + const, z / self.scale

        return vg


def _prior_draws(model, args, kwargs, potential, n: int) -> torch.Tensor:
    """``n`` exact draws of the prior, unconstrained ``(n, D)``: the model run forward (observed terms left out)."""
    names = potential.names()
    values = {k: [] for k in names}
    with pyro.validation_enabled(False), poutine.block():
        for i in range(n):
            trace = poutine.trace(prior_only(model)).get_trace(*args, **kwargs)
            if i == 0:  # every run has the same distributions: one look names an improper prior
                _refuse_improper(trace, names)
            for k in names:
                values[k].append(trace.nodes[k]["value"].detach())
    stacked = {k: torch.stack(v) for k, v in values.items()}
    u = potential.unconstrain(stacked, (n,)).to(potential.init)
    if not bool(torch.isfinite(u).all()):
        raise NonFiniteEnergyError("SMC: some prior draws are not finite in the unconstrained space (a value on the "
                                   "edge of its support); check the priors.")
    return u


def _refuse_improper(trace, names: list[str]) -> None:
    for k in names:
        if _improper(trace.nodes[k]["fn"]):
            raise ValueError(
                f"SMC starts from draws of the prior, and site '{k}' has an improper (flat) prior. Give it a "
                "proper one (model_from_energy(energy, sites, prior={'" + k + "': dist.Normal(0., 10.)...})), "
                "or start from a wide Gaussian: SMC(reference=10.0).")


def _improper(fn) -> bool:
    while fn is not None:
        if isinstance(fn, pyro.distributions.MaskedDistribution) and not bool(torch.as_tensor(fn._mask).all()):
            return True
        if isinstance(fn, pyro.distributions.ImproperUniform):
            return True
        fn = getattr(fn, "base_dist", None)
    return False


# --- the sampler -----------------------------------------------------------------------------------------------------
def _log_mean_exp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


def _ess_fraction(log_w: torch.Tensor) -> torch.Tensor:
    """Effective sample size per run over the particles, as a fraction: (sum w)^2 / (N sum w^2)."""
    return torch.exp(2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1)) / log_w.shape[-1]


def next_beta(delta: torch.Tensor, beta: float, target_ess: float, iterations: int = 60) -> float:
    """The largest ``beta' <= 1`` at which the weights ``exp(-(beta' - beta) delta)`` of every run (rows of
    ``delta``) keep an ESS fraction of at least ``target_ess`` (bisection; the ESS falls as the step grows)."""

    def ess(step: float) -> float:
        log_w = torch.nan_to_num(-step * delta, nan=-math.inf)
        return float(_ess_fraction(log_w).min())

    if ess(1.0 - beta) >= target_ess:
        return 1.0
    lo, hi = 0.0, 1.0 - beta
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ess(mid) >= target_ess else (lo, mid)
    return beta + max(lo, 1e-12 * (1.0 - beta) + 1e-300)


def _systematic(log_w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Systematic resampling of every run (rows of ``log_w``): indices ``(K, N)`` within each run."""
    K, N = log_w.shape
    cdf = torch.softmax(log_w, -1).cumsum(-1)
    cdf[:, -1] = 1.0
    u = (torch.rand((K, 1), generator=generator, device=log_w.device, dtype=log_w.dtype)
         + torch.arange(N, device=log_w.device, dtype=log_w.dtype)) / N
    return torch.searchsorted(cdf, u).clamp_max(N - 1)


def _standard_error(log_z: torch.Tensor) -> float:
    r"""Standard error of :math:`\log \frac1K\sum_k \hat Z_k` from the runs' spread (delta method)."""
    ratios = torch.exp(log_z - log_z.max())
    return float(ratios.std() / ratios.mean() / math.sqrt(log_z.shape[0]))


def temper_particles(method: SMC, base, target, u: torch.Tensor, seed: int, progress: bool):
    """Carry the particles ``u`` (``(K N, D)``, prior draws) along the path; returns the final particles and
    ``log_evidence`` with the path's diagnostics."""
    K, N = method.num_runs, method.num_particles
    generator = torch.Generator(device=u.device).manual_seed(int(seed))
    vg0 = _row_by_row_on_failure(base.value_and_grad(True))
    vg1 = _row_by_row_on_failure(target.value_and_grad(True))
    e0, g0 = vg0(u)
    e1, g1 = vg1(u)

    beta, step_size, log_z = 0.0, None, torch.zeros(K, dtype=u.dtype, device=u.device)
    schedule, path, path_se, means, heat, acceptance = [0.0], [0.0], [0.0], [], [], []
    with tqdm(total=1.0, desc="SMC", disable=not progress, leave=False, bar_format="{l_bar}{bar}| beta {n:.3f}") as bar:
        while beta < 1.0:
            if len(schedule) > MAX_STAGES:
                raise InferenceError(
                    f"SMC: {MAX_STAGES} stages reached beta = {beta:.3g} only: the particles cannot follow the path "
                    "(the posterior is far narrower than the prior, or the moves do not mix). Use more particles, "
                    "more num_mcmc_steps, or a prior closer to the posterior.")
            delta = (e1 - e0).reshape(K, N)
            if not bool(torch.isfinite(delta).any(-1).all()):
                raise NonFiniteEnergyError("SMC: every particle of a run has a non-finite energy; check the energy "
                                           "where the prior puts its mass.")
            new = next_beta(delta, beta, method.target_ess)
            log_w = torch.nan_to_num(-(new - beta) * delta, nan=-math.inf)
            log_z = log_z + _log_mean_exp(log_w)
            weights = torch.softmax(log_w, -1)
            finite = torch.where(torch.isfinite(delta), delta, torch.zeros_like(delta))
            mean = (weights * finite).sum(-1)
            var = (weights * (finite - mean[:, None]) ** 2).sum(-1)
            means.append(float(mean.mean()))
            heat.append(float(new**2 * var.mean()))
            beta = new
            schedule.append(beta)
            path.append(float(_log_mean_exp(log_z, 0)))
            path_se.append(_standard_error(log_z))

            idx = (_systematic(log_w, generator) + torch.arange(K, device=u.device)[:, None] * N).reshape(-1)
            u, e0, g0, e1, g1 = u[idx], e0[idx], g0[idx], e1[idx], g1[idx]
            u, e0, g0, e1, g1, step_size, acc = _move(method, u, e0, g0, e1, g1, beta, step_size, vg0, vg1, generator)
            acceptance.append(acc)
            bar.n = beta
            bar.refresh()

    info = {"log_evidence": path[-1], "log_evidence_se": path_se[-1], "log_evidence_runs": log_z.tolist(),
            "beta": schedule, "log_Z": path, "log_Z_se": path_se, "mean_energy": means, "heat_capacity": heat,
            "acceptance_rate": acceptance, "num_stages": len(schedule) - 1, "step_size": step_size}
    return u, info


def _move(method: SMC, u, e0, g0, e1, g1, beta: float, step_size, vg0, vg1, generator):
    r"""``num_mcmc_steps`` HMC moves of every particle on :math:`U_\beta = U_0 + \beta (U_1 - U_0)` (both parts kept,
    the increment of the next stage needs them), mass from the particles' variance; returns the particles, the step
    size tuned towards the target acceptance, and the mean acceptance rate."""
    parts = {}

    def value_and_grad(x):
        a, ga = vg0(x)
        b, gb = vg1(x)
        parts["last"] = (a, ga, b, gb)  # the last call is at the proposal
        return a + beta * (b - a), ga + beta * (gb - ga)

    finite = torch.isfinite(e1)
    spread = u[finite].var(0) if int(finite.sum()) > 1 else torch.ones_like(u[0])
    inv_mass = torch.where(spread > 0, spread, torch.ones_like(spread)).clamp(1e-8, 1e8)
    if step_size is None:
        step_size = 1.0 / math.sqrt(u.shape[-1]) ** 0.5  # D^(-1/4): HMC's step in whitened coordinates
    energy = e0 + beta * (e1 - e0)
    grad = g0 + beta * (g1 - g0)
    rates = []
    for _ in range(method.num_mcmc_steps):
        new, (_, _, prob, _) = _transition(value_and_grad, u, energy, grad, step_size, method.num_leapfrog,
                                            inv_mass, generator)
        a, ga, b, gb = parts["last"]
        moved = (new[0] != u).any(-1)
        keep = moved[:, None]
        e0, e1 = torch.where(moved, a, e0), torch.where(moved, b, e1)
        g0, g1 = torch.where(keep, ga, g0), torch.where(keep, gb, g1)
        u, energy, grad = new
        rate = float(torch.nan_to_num(prob, nan=0.0).mean())
        rates.append(rate)
        step_size *= math.exp(np.clip(2.0 * (rate - TARGET_ACCEPT), -1.0, 0.5))
    return u, e0, g0, e1, g1, step_size, float(np.mean(rates))
