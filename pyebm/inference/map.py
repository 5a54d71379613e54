r"""MAP: the minimum of the energy, :math:`\hat\theta = \arg\min_\theta [E(\theta) - \log p(\theta)]`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..diagnostics import InferenceError, NonFiniteEnergyError, warn
from .approximations import PointMass, to_numpy
from .curvature import positive_definite
from .minimize import MinimizeResult, minimize
from .potential import Potential
from .registry import Method, positive_float, positive_int, register
from .result import Posterior, element_labels

__all__ = ["MAP", "find_mode", "optim_diagnostics"]

#: a distance to the mode (posterior sds) below which a run stopped by round-off is close enough, with a warning
ROUNDOFF_ACCEPT = 1e-2


@register("map")
@dataclass
class MAP(Method):
    r"""Energy minimisation: the β → ∞ end of the ladder.

    Minimises the model's energy :math:`-\log p(x, \theta)` over the latent sites, optimising in
    the unconstrained space but without the Jacobian term, so the mode is that of the density in
    the model's own coordinates (a positive scale's mode is the scale's, not log-scale's). Discrete sites are summed
    out (enumeration), then set to their most probable configuration given the continuous mode.

    Parameters
    ----------
    optimizer : {"lbfgs", "adam"}
        L-BFGS with a weak-Wolfe line search (default), or Adam steps; either ends with exact Newton steps where the
        Hessian is affordable.
    steps : int
        Maximum iterations.
    tol : float, optional
        Distance to the mode in posterior standard deviations (the Newton decrement) at which the run has converged:
        1e-8 in float64, 1e-4 in float32 by default. It does not change with a constant added to the energy.
    lr : float, optional
        Adam's step size (default 0.05).
    init : dict or Pyro init strategy, optional
        Starting point; default Pyro's ``init_to_median`` (the origin for flat priors).
    """

    optimizer: str = "lbfgs"
    steps: int = 500
    tol: float | None = None
    lr: float | None = None
    init: dict | Callable | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"{owner}: unknown optimizer {self.optimizer!r}; choose 'lbfgs' or 'adam'.")
        positive_int(owner, "steps", self.steps)
        positive_float(owner, "tol", self.tol, allow_none=True)
        positive_float(owner, "lr", self.lr, allow_none=True)
        if self.init is not None and not isinstance(self.init, dict) and not callable(self.init):
            raise TypeError(f"{owner}: init must be a dict of site values or an init strategy, got "
                            f"{type(self.init).__name__}.")

    def refusals(self, backend: str) -> list[str]:
        if backend == "numpyro" and self.init is not None and not isinstance(self.init, dict):
            return ["init must be a dict of site values there (a Pyro init strategy cannot run in NumPyro)."]
        return []

    def run(self, backend, model, args, kwargs, seed, progress) -> Posterior:
        potential, res = find_mode(self, backend, model, args, kwargs, seed, progress, jacobian=False)
        view = backend.model_view(model, args, kwargs, potential)
        mode = _single(potential.constrain(res.u[0]), view, seed)
        return Posterior("map", PointMass(mode, potential.ops), site_shapes={k: tuple(v.shape) for k, v in mode.items()},
                         mode=mode, diagnostics=optim_diagnostics(res), view=view)


def _single(values: dict, view, seed: int) -> dict:
    """One configuration completed by the model (deterministic sites, discrete ones at their most probable)."""
    one = view.complete({k: v[None] for k, v in values.items()}, seed, temperature=0.0)
    return {k: v[0] for k, v in one.items()}


def find_mode(method: MAP, backend, model, args, kwargs, seed: int, progress: bool, jacobian: bool,
              verify: bool | None = None) -> tuple[Potential, MinimizeResult]:
    """The potential of the model and its minimum, or a clear error saying why there is none (``verify``: check the
    minimum with the exact Hessian, which Laplace wants anyway; default where it is cheap)."""
    what = method.name.upper() if method.name else "MAP"
    potential = backend.potential(model, args, kwargs, init=method.init, what=what, seed=seed)
    res = minimize(
        potential.value_and_grad(jacobian), potential.init[None], ops=potential.ops,
        hessian=lambda u: potential.hessian(u, jacobian), verify=verify, steps=method.steps, tol=method.tol,
        optimizer=method.optimizer, lr=method.lr, progress=progress, desc=what,
    )
    check_mode(res, potential, what)
    return potential, res


def check_mode(res: MinimizeResult, potential: Potential, what: str) -> None:
    """Raise (or warn) unless ``res`` is a minimum: each failure of :func:`minimize` gets its cause and a remedy."""
    status, distance = res.status[0], float(res.distance[0])
    ops = potential.ops
    if status == "nonfinite":
        value = float(ops.to_numpy(res.value)[0])
        kind = "NaN" if np.isnan(value) else "infinite"
        raise NonFiniteEnergyError(
            f"{what}: the energy (or its gradient) is {kind} at the starting point "
            f"{_describe(potential.constrain(res.u[0]), ops)}. Check the energy for log(0), division by zero or "
            "overflow there, or pass `init` where it is finite."
        )
    edge = _boundary(res, potential)
    if edge:
        name, value = edge
        raise InferenceError(
            f"{what}: no interior mode: site '{name}' runs to the edge of its support (now {value}) while the energy "
            f"{'keeps falling' if status != 'converged' else 'levels off'}. The density is highest at the boundary "
            "(e.g. a hierarchical scale at 0: a funnel), where MAP and Laplace do not apply. Sample with "
            f"method='nuts' (non-centred if it is a funnel), or give '{name}' a prior that vanishes at the edge."
        )
    if status == "unbounded":
        raise InferenceError(
            f"{what}: the energy kept falling while the latent variables ran away: it looks unbounded below, so "
            "there is no minimum. Check the energy's sign, or add a proper prior that confines the latent variables."
        )
    if status == "indefinite":
        positive_definite(res.hessian[0], ops, what=what, labels=_labels(potential))
    if status == "stalled":
        if distance <= ROUNDOFF_ACCEPT:
            advice = ("Use float64 for more digits." if ops.eps(res.u) > 1e-10 else "The mode is still resolved far "
                      "inside the posterior's width (1 sd); a looser `tol` silences this.")
            warn(
                f"{what}: stopped by round-off {distance:.2g} posterior sds from the mode (tolerance {_tol(res)}): the "
                f"energy's precision cannot resolve it further. {advice}")
            return
        raise InferenceError(
            f"{what}: stalled by round-off at {_distance(distance)} from the mode: no step lowers the energy at "
            f"its precision ({'float32' if ops.eps(res.u) > 1e-10 else 'float64'}). Use float64 (data and "
            "parameters), centre and scale the data, or start closer with `init`."
        )
    if status == "max_steps":
        raise InferenceError(
            f"{what}: did not converge in {res.iterations} iteration{'s' if res.iterations != 1 else ''} "
            f"({_distance(distance)} from the mode, "
            f"tolerance {_tol(res)}). Raise `steps`, start closer with `init`, or reparametrise."
        )


def _tol(res: MinimizeResult) -> str:
    return f"{res.tol:g} sds"


def _distance(distance: float) -> str:
    return f"{distance:.3g} posterior sds" if np.isfinite(distance) else "an unknown distance"


class _Labels(Sequence):
    """Each unconstrained coordinate's label (``w[0, 1]``), built on first use: only error messages read them, and
    a network's thousands of labels cost more than a small Laplace fit."""

    def __init__(self, potential: Potential):
        self._sites = potential.sites

    @cached_property
    def _all(self) -> list[str]:
        out = []
        for s in self._sites:
            out += element_labels(s.name if s.on_reals else f"unconstrained {s.name}", tuple(s.unconstrained_shape))
        return out

    def __getitem__(self, i):
        return self._all[i]

    def __len__(self) -> int:
        return len(self._all)


def _labels(potential: Potential) -> Sequence[str]:
    return _Labels(potential)


def _describe(values: dict, ops) -> str:
    parts = []
    for k, v in values.items():
        a = ops.to_numpy(v)
        parts.append(f"{k} = {np.array2string(a, precision=3, threshold=6)}")
    return "{" + ", ".join(parts) + "}"


def _boundary(res: MinimizeResult, potential: Potential) -> tuple[str, str] | None:
    """A constrained site that ran toward the edge of its support: ``(name, its value)``, else None.

    At a boundary the unconstrained coordinate heads to infinity. A run that did not converge and moved such a
    coordinate by more than 10 (a factor e^10 in scale), or converged with a posterior sd above 100 in that
    coordinate (no interior mode to speak of), is there.
    """
    ops = potential.ops
    u, u0 = ops.to_numpy(res.u[0]).astype(np.float64), ops.to_numpy(potential.init).astype(np.float64)
    sd = None
    if res.status[0] == "converged" and res.hessian is not None:
        try:
            structure = positive_definite(res.hessian[0], ops)
            sd = np.sqrt(np.abs(ops.to_numpy(structure.variance()).astype(np.float64)))
        except InferenceError:
            sd = None
    start = 0
    for s in potential.sites:
        idx = slice(start, start + s.numel)
        start += s.numel
        if s.on_reals:
            continue
        far = np.abs(u[idx] - u0[idx]) > 10
        flagged = (sd is not None and (sd[idx] > 100).any()) or (res.status[0] != "converged" and far.any())
        if flagged:
            return s.name, _describe({s.name: potential.constrain(res.u[0])[s.name]}, ops)[1:-1].split(" = ", 1)[1]
    return None


def optim_diagnostics(res: MinimizeResult, row: int = 0) -> dict:
    """What the minimisation of row ``row`` did, for ``post.diagnostics``."""
    return {
        "converged": res.status[row] in ("converged", "stalled"), "status": str(res.status[row]),
        "iterations": res.iterations, "evaluations": res.evaluations,
        "energy": float(to_numpy(res.value)[row]), "grad_norm": float(np.abs(to_numpy(res.grad)[row]).max()),
        "distance": float(res.distance[row]), "energy_history": list(res.history),
    }
