r"""SVI: the best Gaussian (or user guide) under the ELBO,
:math:`\max_q \; \mathbb E_q[\log p(x,\theta)] + \mathbb H[q] \le \log Z`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.optim
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoContinuous, AutoDiagonalNormal, AutoMultivariateNormal
from tqdm import tqdm

from ..diagnostics import InferenceError, NonFiniteEnergyError
from .approximations import GuideDraws, UnconstrainedGaussian
from .registry import Method, register
from .result import Posterior
from .space import LatentSpace, _init_strategy

__all__ = ["SVI", "FULL_RANK_MAX_DIM"]

#: with ``guide="auto"``, models of at most this many unconstrained dimensions get a full-rank
#: Gaussian guide (D(D+1)/2 scale parameters); larger ones a diagonal one.
FULL_RANK_MAX_DIM = 100

def _refuse_collapse(found: dict[str, list[str]]) -> None:
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


GUIDES = {"normal": AutoDiagonalNormal, "multivariate_normal": AutoMultivariateNormal}


@register("svi")
@dataclass
class SVI(Method):
    """Stochastic variational inference with Pyro's ``SVI`` and ``Trace_ELBO``.

    Parameters
    ----------
    guide : {"auto", "normal", "multivariate_normal"} or callable
        ``"auto"``: full-rank Gaussian in the unconstrained space for models of at most
        ``FULL_RANK_MAX_DIM`` (100) dimensions, diagonal above. A callable is used as a Pyro guide.
    steps : int
        Optimisation steps.
    lr : float
        Initial Adam learning rate.
    lr_decay : float
        The learning rate decays geometrically to ``lr * lr_decay`` by the last step, so the final
        iterates settle instead of jittering at the stochastic-gradient noise level.
    optimizer : pyro.optim.PyroOptim, optional
        Replaces the default ``ClippedAdam(lr, lrd)``.
    num_particles : int
        Monte Carlo samples per ELBO estimate.
    vectorize_particles : bool
        Evaluate particles in a batch (the energy must then accept batched values).
    init_scale : float
        Initial scale of the autoguide.
    init : dict or Pyro init strategy, optional
        Initial location of the autoguide (default ``init_to_median``).
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

    def _make_guide(self, model, space: LatentSpace) -> tuple[Callable, str]:
        if callable(self.guide) and not isinstance(self.guide, str):
            return self.guide, getattr(self.guide, "__name__", type(self.guide).__name__)
        name = self.guide
        if name == "auto":
            name = "multivariate_normal" if space.dim <= FULL_RANK_MAX_DIM else "normal"
        if name not in GUIDES:
            raise ValueError(f"unknown guide {self.guide!r}; choose 'auto', {sorted(GUIDES)} or pass a Pyro guide.")
        return GUIDES[name](model, init_loc_fn=_init_strategy(self.init), init_scale=self.init_scale), name

    def run(self, model, args, kwargs, progress: bool) -> Posterior:
        space = LatentSpace(model, args, kwargs, self.init)
        _refuse_collapse(space.energy_parameters)
        guide, guide_name = self._make_guide(model, space)
        optim = self.optimizer or pyro.optim.ClippedAdam(
            {"lr": self.lr, "lrd": self.lr_decay ** (1.0 / max(self.steps, 1))}
        )
        elbo = Trace_ELBO(num_particles=self.num_particles, vectorize_particles=self.vectorize_particles)
        svi = pyro.infer.SVI(model, guide, optim, elbo)
        losses = []
        with tqdm(range(self.steps), desc="SVI", disable=not progress, leave=False) as bar:
            for step in bar:
                try:
                    loss = svi.step(*args, **kwargs)
                except NonFiniteEnergyError as err:
                    raise InferenceError(f"SVI: the energy became non-finite at step {step}: {err}") from err
                if not math.isfinite(loss):
                    raise InferenceError(
                        f"SVI: the ELBO became non-finite at step {step}. Lower `lr`, or check that the energy is "
                        "bounded below and finite on the support."
                    )
                losses.append(loss)
                if step % 50 == 0:
                    bar.set_postfix(elbo=f"{-loss:.4g}")
        tail = losses[-max(1, len(losses) // 10) :]
        diagnostics = {"elbo": [-x for x in losses], "final_elbo": -sum(tail) / len(tail), "guide": guide_name}
        site_shapes = {s.name: s.shape for s in space.sites}
        if isinstance(guide, AutoContinuous) and list(guide._unconstrained_shapes) == space.names():
            q = guide.get_posterior()
            if isinstance(q, torch.distributions.MultivariateNormal):
                loc, scale_tril = q.loc, q.scale_tril
            else:  # AutoDiagonalNormal: Independent(Normal(loc, scale), 1)
                loc, scale_tril = q.mean, torch.diag(q.stddev)
            approximation = UnconstrainedGaussian(space, loc.detach(), scale_tril.detach())
        else:
            approximation = GuideDraws(guide, space.names(), args, kwargs, pyro.get_param_store().get_state())
        return Posterior("svi", approximation, site_shapes=site_shapes, diagnostics=diagnostics)
