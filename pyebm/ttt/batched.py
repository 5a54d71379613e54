r"""Independent adaptation of many inputs at once: one latent copy per input, vectorised with ``torch.func.vmap``.

The potential of input :math:`i` is :math:`U_i(\theta_i) = \beta E(\theta_i; x_i) + \tfrac12\|(\theta_i-\theta_0)/s\|^2`.
All inputs are minimised together by the library's minimiser (:func:`pyebm.inference.minimize.minimize`: one
L-BFGS per row, verified and polished by Newton steps with vmapped Hessians), each input converging on its own; the
Laplace precision is those Hessians, one Gaussian per input.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.func import hessian, vmap
from torch.utils._pytree import tree_leaves, tree_map

from ..diagnostics import InferenceError
from ..inference.approximations import Gaussian, PointMass
from ..inference.curvature import check_dense_size, positive_definite
from ..inference.minimize import minimize
from ..inference.result import Posterior
from ..ops import TORCH
from .energies import per_example
from .latents import Functional

__all__ = ["adapt_independent"]


def adapt_independent(fn: Functional, x, energy: Callable, scales: torch.Tensor, beta: float, laplace: bool,
                      steps: int = 100, tol: float | None = None) -> Posterior:
    """MAP (or Laplace) of every input's own copy of the latents, all at once."""
    u0 = fn.flatten(fn.trained)
    B, D = tree_leaves(x)[0].shape[0], u0.numel()
    if laplace:  # one D x D precision per input: refused before anything is allocated
        check_dense_size(D, B, u0.itemsize, "Laplace (independent adaptation)")

    def potential(u, xi):
        values = fn.unflatten(u)
        e = per_example(energy(lambda inputs: fn(values, inputs), tree_map(lambda t: t.unsqueeze(0), xi)), 1)
        return beta * e.sum() + 0.5 * (((u - u0) / scales) ** 2).sum()

    rows = vmap(potential)
    res = minimize(TORCH.value_and_grad(lambda u: rows(u, x)), u0.expand(B, D).clone(), ops=TORCH,
                   hessian=lambda u: _symmetric(vmap(hessian(potential))(u, x)), verify=laplace or None, steps=steps,
                   tol=tol, desc="adaptation")
    bad = np.flatnonzero(res.status == "nonfinite")
    if len(bad):
        raise InferenceError(f"independent adaptation: the energy or its gradient is not finite (NaN/inf) for inputs "
                             f"{bad[:5].tolist()}. Check the energy and the inputs for NaN, or lower beta.")
    failed = np.flatnonzero(~np.isin(res.status, ("converged", "indefinite")) if not laplace
                            else res.status != "converged")
    failed = failed[~((res.status[failed] == "stalled") & (res.distance[failed] <= 1e-2))]
    if len(failed):
        raise InferenceError(f"independent adaptation did not converge for inputs {failed[:5].tolist()} "
                             f"({res.status[failed[0]]}): raise steps, or use a smaller prior_scale (a stronger prior).")
    u = res.u
    mode = fn.unflatten(u)
    site_shapes = {n: (B,) + tuple(s) for n, s in fn.shapes.items()}
    diagnostics = {"iterations": res.iterations, "energy": res.value, "grad_norm": res.grad.abs().amax(1),
                   "status": res.status}
    if not laplace:
        return Posterior("map", PointMass(mode, TORCH), site_shapes=site_shapes, mode=mode, diagnostics=diagnostics)
    structure = positive_definite(res.hessian, TORCH, what="Laplace (independent adaptation)")
    log_prior_norm = float(torch.log(scales).sum()) + 0.5 * D * math.log(2 * math.pi)
    log_z = -res.value + 0.5 * D * math.log(2 * math.pi) - 0.5 * structure.logdet_precision() - log_prior_norm
    diagnostics["log_evidence"] = log_z
    diagnostics["hessian"] = res.hessian
    return Posterior("laplace", Gaussian(fn, u, structure), site_shapes=site_shapes, mode=mode,
                     log_evidence=float(log_z.sum()), diagnostics=diagnostics)


def _symmetric(H: torch.Tensor) -> torch.Tensor:
    return 0.5 * (H + H.transpose(1, 2))
