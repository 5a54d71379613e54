r"""SVI: the best Gaussian (or user guide) under the ELBO,
:math:`\max_q \; \mathbb E_q[\log p(x,\theta)] + \mathbb H[q] \le \log Z`.

The library's own SVI loop runs (Pyro's or NumPyro's), with ``TraceEnum_ELBO`` where discrete sites are summed out.
The default Gaussian guide starts at the Laplace solution (mode and inverse Hessian), which on near-Gaussian
posteriors is converged before the first step; a run whose ELBO is still rising at the end warns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..diagnostics import ConvergenceWarning, InferenceError, warn
from .curvature import PROVIDERS
from .map import _labels, check_mode
from .minimize import minimize
from .registry import Method, positive_float, positive_int, probability, register
from .result import Posterior

__all__ = ["SVI", "FULL_RANK_MAX_DIM", "elbo_trend", "refuse_collapse", "probe_improper"]

#: with ``guide="auto"``, models of at most this many unconstrained dimensions get a full-rank
#: Gaussian guide (D(D+1)/2 scale parameters); larger ones a diagonal one.
FULL_RANK_MAX_DIM = 100

GUIDE_NAMES = ("auto", "normal", "multivariate_normal")


def refuse_collapse(found: dict[str, list[str]]) -> None:
    """The collapse guard: SVI would optimise learnable parameters inside an unnormalised energy factor."""
    if not found:
        return
    where = "; ".join(f"factor '{site}' depends on {params[:5]}{' ...' if len(params) > 5 else ''}"
                      for site, params in found.items())
    raise InferenceError(
        f"SVI would optimise learnable parameters inside an energy factor ({where}). An energy factor leaves out "
        "log Z(theta), so maximising the ELBO in theta pushes the energy down everywhere and the model collapses. "
        "Ways out: train theta with a contrastive or score objective (pyebm.train.fit(energy, data, method='nce' | "
        "'cd' | 'dsm' | ...)) and then run inference with it fixed; or use a normalised likelihood "
        "(pyro.sample(..., obs=...)); or, if the energy is a normalised -log density in theta, say so with "
        "pyebm.energy_factor(..., normalized=True)."
    )


def probe_improper(potential, what: str) -> None:
    """Refuse a potential that runs away to infinity on the reals (an energy unbounded below there: an improper
    posterior that SVI and MCMC would chase): a short minimisation from the initial point, without Hessians."""
    if potential.refusal:
        return
    _refuse_unbounded(minimize(potential.value_and_grad(True), potential.init[None], ops=potential.ops, steps=10),
                      what)


def _refuse_unbounded(res, what: str) -> None:
    if res.status[0] == "unbounded":
        raise InferenceError(
            f"{what}: the energy is unbounded below: from its initial point it kept falling while the latent "
            "variables ran off to infinity. The posterior is improper; check the energy's sign, or add a proper "
            "prior that confines the latents."
        )


def elbo_trend(elbo: np.ndarray, window: float = 0.2) -> tuple[float, float]:
    """The rise of the ELBO over the last ``window`` of the run and its t-statistic (least-squares slope)."""
    n = max(10, int(len(elbo) * window))
    tail = np.asarray(elbo[-n:], dtype=np.float64)
    if len(tail) < 10 or not np.isfinite(tail).all():
        return 0.0, 0.0
    t = np.arange(len(tail), dtype=np.float64)
    t -= t.mean()
    slope = float((t * (tail - tail.mean())).sum() / (t**2).sum())
    resid = tail - tail.mean() - slope * t
    se = float(np.sqrt((resid**2).sum() / (len(tail) - 2) / (t**2).sum()))
    return slope * len(tail), slope / se if se > 0 else (np.inf if slope > 0 else 0.0)


def stationarity(potential, approximation, seed: int, draws: int = 400) -> tuple[float, float]:
    r"""How far a Gaussian guide's mean is from where the ELBO stops pulling it, in the guide's own sds.

    The ELBO's gradient in the mean is :math:`-\mathbb E_q[\nabla U]`; with the guide's covariance :math:`\Sigma` as
    the inverse Hessian, :math:`\sqrt{\bar g^\top\Sigma\bar g}` is the Newton decrement of that stationarity
    condition: about 0 at convergence (Monte Carlo noise of order :math:`\sqrt{D/\text{draws}}`, returned too), about
    the distance to the optimum in sds otherwise. A decaying learning rate can freeze a guide far from it (the ELBO
    then looks flat); this does not look at the path, only at where the guide ended."""
    ops = approximation.ops
    eps = ops.normal(seed, (draws,) + tuple(approximation.loc.shape), approximation.loc)
    u = approximation.loc + approximation.structure.sample(eps)
    _, g = potential.value_and_grad(True)(u)
    g_bar = ops.sum(g, 0) / draws
    decrement = float(ops.to_numpy(approximation.structure.quadratic(g_bar))) ** 0.5
    return decrement, (potential.dim / draws) ** 0.5


@register("svi")
@dataclass
class SVI(Method):
    """Stochastic variational inference with the backend's SVI (``Trace_ELBO``, or ``TraceEnum_ELBO`` where
    discrete sites are enumerated).

    Parameters
    ----------
    guide : {"auto", "normal", "multivariate_normal"} or callable
        ``"auto"``: full-rank Gaussian in the unconstrained space for models of at most
        ``FULL_RANK_MAX_DIM`` (100) dimensions, diagonal above. A callable is used as the guide.
    steps : int
        Optimisation steps (also spelled ``num_steps``).
    lr : float
        Initial Adam learning rate.
    lr_decay : float
        The learning rate decays geometrically to ``lr * lr_decay`` by the last step, so the final
        iterates settle instead of jittering at the stochastic-gradient noise level.
    optimizer : pyro.optim.PyroOptim, optional
        Replaces the default ``ClippedAdam(lr, lrd)`` (Pyro backend; also spelled ``optim``).
    num_particles : int
        Monte Carlo samples per ELBO estimate.
    vectorize_particles : bool
        Evaluate particles in a batch (the model must then broadcast over them; Pyro backend).
    init_scale : float
        Initial scale of the Gaussian guide where it does not start from Laplace.
    init : dict or Pyro init strategy, optional
        Initial location (default: the Laplace mode, else ``init_to_median``).
    laplace_init : bool
        Start the Gaussian guide at the Laplace solution (mode and inverse Hessian; diagonal for the diagonal
        guide). Where Laplace fails (no interior mode, a flat direction) the guide starts from ``init`` instead.
    """

    guide: str | Callable = "auto"
    steps: int = 2000
    lr: float = 0.02
    lr_decay: float = 0.01
    optimizer: object = None
    num_particles: int = 1
    vectorize_particles: bool = False
    init_scale: float = 0.1
    init: dict | Callable | None = None
    laplace_init: bool = True

    aliases = {"num_steps": "steps", "optim": "optimizer"}

    def __post_init__(self) -> None:
        owner = "SVI"
        if isinstance(self.guide, str) and self.guide not in GUIDE_NAMES:
            raise ValueError(f"SVI: unknown guide {self.guide!r}; choose one of {list(GUIDE_NAMES)} or pass a guide.")
        if not isinstance(self.guide, str) and not callable(self.guide):
            raise TypeError(f"SVI: guide must be a name or a callable guide, got {type(self.guide).__name__}.")
        positive_int(owner, "steps", self.steps)
        positive_float(owner, "lr", self.lr)
        probability(owner, "lr_decay", self.lr_decay, closed_right=True)
        positive_int(owner, "num_particles", self.num_particles)
        positive_float(owner, "init_scale", self.init_scale)

    def refusals(self, backend: str) -> list[str]:
        out = []
        if backend == "numpyro":
            if self.optimizer is not None:
                out.append("optimizer is a Pyro optimiser; NumPyro's SVI takes lr and lr_decay.")
            if self.vectorize_particles:
                out.append("vectorize_particles is a Pyro option (NumPyro vectorises particles itself).")
            if self.init is not None and not isinstance(self.init, dict):
                out.append("init must be a dict of site values there.")
        return out

    def auto_guide(self, dim: int) -> str | None:
        """The Gaussian guide's name for ``dim`` unconstrained dimensions (None for a user guide)."""
        if not isinstance(self.guide, str):
            return None
        if self.guide == "auto":
            return "multivariate_normal" if dim <= FULL_RANK_MAX_DIM else "normal"
        return self.guide

    def start(self, potential, progress: bool):
        """The Laplace solution as the guide's start, ``(loc, structure, None)``, or ``(None, None, reason)``."""
        masked = hasattr(potential, "full")  # masked latent elements: the guide covers them, Laplace does not
        if potential.refusal or masked or not self.laplace_init or self.auto_guide(potential.dim) is None:
            probe_improper(potential, "SVI")
            why = "masked latent elements" if masked else potential.refusal or "user guide"
            return None, None, "not asked" if not self.laplace_init else why
        res = minimize(potential.value_and_grad(True), potential.init[None], ops=potential.ops,
                       hessian=lambda u: potential.hessian(u, True), verify=True, steps=500, progress=progress,
                       desc="SVI init")
        _refuse_unbounded(res, "SVI")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                check_mode(res, potential, "SVI's Laplace start")
            hessian = "full" if self.auto_guide(potential.dim) == "multivariate_normal" else "diag"
            structure = PROVIDERS[hessian](lambda v: potential(v, True), res.u, potential.ops, "SVI's Laplace start",
                                           labels=_labels(potential), hessian=res.hessian).index(0)
        except (InferenceError, ValueError, MemoryError) as err:
            return None, None, str(err).split(". ")[0]
        return res.u[0], structure, None

    def run(self, backend, model, args, kwargs, seed, progress) -> Posterior:
        refuse_collapse(backend.learnable_energy_parameters(model, args, kwargs))
        potential = backend.potential(model, args, kwargs, init=self.init, what="SVI", seed=seed)
        loc, structure, why_not = self.start(potential, progress)
        approximation, losses, guide_name = backend.svi(self, model, args, kwargs, potential, (loc, structure), seed,
                                                        progress)
        losses = np.asarray(losses, dtype=np.float64)
        if not np.isfinite(losses).all():
            step = int(np.argmax(~np.isfinite(losses)))
            raise InferenceError(f"SVI: the ELBO became non-finite at step {step}. Lower `lr`, or check that the "
                                 "energy is bounded below and finite on the support.")
        elbo = -losses
        tail = elbo[-max(1, len(elbo) // 10):]
        rise, t = elbo_trend(elbo)
        diagnostics = {"elbo": elbo.tolist(), "final_elbo": float(tail.mean()), "guide": guide_name,
                       "start": "laplace" if why_not is None else f"init ({why_not})", "elbo_rise": rise}
        if approximation.kind == "gaussian" and not potential.refusal:
            distance, noise = stationarity(getattr(potential, "full", potential), approximation, seed)
            diagnostics["distance"] = distance
            if distance > max(0.5, 4 * noise):
                warn(f"SVI: not converged: the guide's mean is {distance:.3g} of its sds from where the ELBO stops "
                     f"pulling it (the expected gradient there is not zero; Monte Carlo noise {noise:.2g}). Raise "
                     "`steps` or `lr`; the learning rate decays to lr * lr_decay, which can freeze the guide early.")
        elif t > 4 and rise > 0.1:
            warn(f"SVI: the ELBO was still rising at the end (by {rise:.3g} nats over the last 20% of the "
                 f"{self.steps} steps, t = {t:.1f}): the guide has not converged. Raise `steps` or `lr`.")
        view = backend.model_view(model, args, kwargs, potential)
        return Posterior("svi", approximation, site_shapes=view.site_shapes, diagnostics=diagnostics, view=view)
