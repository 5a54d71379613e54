r"""MAP: the minimum of the energy, :math:`\hat\theta = \arg\min_\theta [E(\theta) - \log p(\theta)]`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .approximations import PointMass
from .optimize import minimize
from .registry import Method, register
from .result import Posterior
from .space import LatentSpace

__all__ = ["MAP"]


@register("map")
@dataclass
class MAP(Method):
    r"""Energy minimisation: the β → ∞ end of the ladder.

    Minimises the model's energy :math:`-\log p(x, \theta)` over the latent sites, optimising in
    the unconstrained space but without the Jacobian term, so the mode is that of the density in
    the model's own coordinates (a positive scale's mode is the scale's, not log-scale's).

    Parameters
    ----------
    optimizer : {"lbfgs", "adam"}
        L-BFGS with strong-Wolfe line search (default) or Adam.
    steps : int
        Maximum iterations.
    tol : float, optional
        Gradient tolerance relative to max(1, |E|); default 1e-6 (float64) or 1e-3 (float32).
    lr : float, optional
        Step size (default 1 for L-BFGS, 0.05 for Adam).
    init : dict or Pyro init strategy, optional
        Starting point; default Pyro's ``init_to_median`` (the origin for flat priors).
    """

    optimizer: str = "lbfgs"
    steps: int = 500
    tol: float | None = None
    lr: float | None = None
    init: dict | Callable | None = None

    def _minimize(self, model, args, kwargs, progress: bool, jacobian: bool):
        space = LatentSpace(model, args, kwargs, self.init)
        result = minimize(
            space.potential(jacobian=jacobian), space.init, optimizer=self.optimizer, steps=self.steps,
            tol=self.tol, lr=self.lr, progress=progress, desc=self.name.upper() if self.name else "MAP",
        )
        return space, result

    def run(self, model, args, kwargs, progress: bool) -> Posterior:
        space, res = self._minimize(model, args, kwargs, progress, jacobian=False)
        mode = space.constrain(res.u)
        return Posterior(
            "map", PointMass(mode), site_shapes={s.name: s.shape for s in space.sites}, mode=mode,
            diagnostics=_optim_diagnostics(res),
        )


def _optim_diagnostics(res) -> dict:
    return {
        "converged": res.converged, "iterations": res.iterations, "evaluations": res.evaluations,
        "energy": res.energy, "grad_norm": res.grad_norm, "energy_history": res.history,
    }
