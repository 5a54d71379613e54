"""Minimisation of a potential in the unconstrained space, with honest convergence checks.

Shared by MAP (energy without Jacobian) and Laplace (with it). L-BFGS with a strong-Wolfe line
search is the default: on smooth energies it converges in tens of iterations where Adam needs
thousands (and Adam from Pyro's default initialisation may not converge at all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..diagnostics import InferenceError, NonFiniteEnergyError

__all__ = ["OptimResult", "minimize"]


@dataclass
class OptimResult:
    """The minimiser, the energy there, and how the run went."""

    u: torch.Tensor
    energy: float
    grad_norm: float
    iterations: int
    evaluations: int
    converged: bool
    history: list = field(default_factory=list)


def _default_tol(dtype: torch.dtype) -> float:
    return 1e-6 if dtype == torch.float64 else 1e-3


def minimize(
    fn: Callable[[torch.Tensor], torch.Tensor],
    u0: torch.Tensor,
    *,
    optimizer: str = "lbfgs",
    steps: int = 200,
    tol: float | None = None,
    lr: float | None = None,
    progress: bool = False,
    desc: str = "MAP",
) -> OptimResult:
    r"""Minimise ``fn`` from ``u0``.

    Converged means :math:`\|\nabla U\|_\infty \le \text{tol}\cdot\max(1, |U|)`. A run that does
    not converge in ``steps`` iterations, or whose energy becomes non-finite or keeps falling while
    the parameters run away (an energy unbounded below), raises :class:`pyebm.InferenceError`.

    Parameters
    ----------
    optimizer : {"lbfgs", "adam"}
        L-BFGS iterations (each with a strong-Wolfe line search) or Adam steps.
    steps : int
        Maximum number of iterations.
    tol : float, optional
        Gradient tolerance; default 1e-6 in float64 and 1e-3 in float32.
    lr : float, optional
        Step size (L-BFGS: 1, Adam: 0.05 by default).
    """
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'lbfgs' or 'adam'.")
    tol = _default_tol(u0.dtype) if tol is None else float(tol)
    u = u0.detach().clone().requires_grad_(True)
    evaluations = 0

    last: tuple | None = None  # (point, energy, gradient) of the latest finite evaluation

    def evaluate() -> tuple[torch.Tensor, torch.Tensor | None]:
        nonlocal evaluations, last
        evaluations += 1
        value = fn(u)
        if not torch.isfinite(value):
            return value.detach(), None
        # gradient with respect to u only: parameters inside the energy must not accumulate .grad
        (grad,) = torch.autograd.grad(value, u)
        last = (u.detach().clone(), value.detach(), grad)
        return value.detach(), grad

    def closure() -> torch.Tensor:
        value, grad = evaluate()
        if grad is not None:  # a non-finite value makes the line search back off; checked below if it persists
            u.grad = grad
        return value

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(
            [u], lr=1.0 if lr is None else lr, max_iter=1, max_eval=30, history_size=20,
            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
        )
    else:
        opt = torch.optim.Adam([u], lr=0.05 if lr is None else lr)

    start_energy = float(fn(u0.detach()).detach())
    start_norm = float(u0.norm())
    history, grad_norms = [start_energy], []
    converged = False
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    it = 0
    try:
        for it in range(1, steps + 1):
            try:
                opt.step(closure)
                # the line search has usually just evaluated the accepted point: reuse it
                value, grad = last[1:] if last is not None and torch.equal(last[0], u.detach()) else evaluate()
            except NonFiniteEnergyError as err:
                raise InferenceError(
                    f"{desc}: the energy became non-finite at iteration {it} while the optimiser moved away from "
                    f"energy {history[-1]:.4g}. The energy may be unbounded below (check its sign, add a proper "
                    f"prior) or undefined where the optimiser went (constrain the site). Cause: {err}"
                ) from err
            energy = float(value)
            history.append(energy)
            bar.update()
            if not torch.isfinite(value) or not bool(torch.isfinite(grad).all()) or not bool(torch.isfinite(u).all()):
                raise InferenceError(
                    f"{desc}: the energy became non-finite at iteration {it} (value {energy}). The energy may be "
                    "unbounded below, or undefined where the optimiser went; add a prior or constrain the site."
                )
            grad_norm = float(grad.abs().max())
            grad_norms.append(grad_norm)
            bar.set_postfix(energy=f"{energy:.4g}", grad=f"{grad_norm:.2g}")
            if energy < start_energy and float(u.detach().norm()) > _RUNAWAY * (1.0 + start_norm):
                _raise_unbounded(desc, start_energy, energy, float(u.detach().norm()))
            if grad_norm <= tol * max(1.0, abs(energy)):
                converged = True
                break
            if optimizer == "lbfgs" and len(history) > 3 and history[-1] == history[-2] == history[-3]:
                # the line search can make no progress: converged if the gradient is at round-off level
                converged = grad_norm <= _ROUNDOFF[u0.dtype == torch.float64] * max(1.0, abs(energy))
                break
    finally:
        bar.close()
    result = OptimResult(u.detach(), energy, grad_norm, it, evaluations, converged, history)
    if not converged:
        tail = history[-min(10, len(history)) :]
        steadily_falling = len(tail) >= 5 and all(b < a for a, b in zip(tail, tail[1:]))
        if steadily_falling and grad_norms[-1] >= 0.5 * grad_norms[len(grad_norms) // 2]:
            _raise_unbounded(desc, start_energy, energy, float(result.u.norm()))
        raise InferenceError(
            f"{desc}: did not converge in {it} iterations (gradient max-norm {grad_norm:.3g} > tol {tol:g}·max(1,|E|)). "
            "Raise `steps`, loosen `tol`, use float64, or start closer with `init`."
        )
    return result


#: gradient (relative to max(1, |E|)) below which a stalled line search counts as converged: (float32, float64)
_ROUNDOFF = (1e-3, 1e-7)

#: parameters a million times farther out than they started, with the energy below its start: a runaway
_RUNAWAY = 1e6


def _raise_unbounded(desc: str, start: float, end: float, norm: float) -> None:
    raise InferenceError(
        f"{desc}: the energy kept falling (from {start:.4g} to {end:.4g}, |θ| = {norm:.3g}) without its gradient "
        "shrinking: it looks unbounded below, so there is no minimum. Check the energy's sign, or add a proper "
        "prior that confines the latent variables."
    )
