r"""Independent adaptation of many inputs at once: one latent copy per input, vectorised with ``torch.func.vmap``.

The potential of input :math:`i` is :math:`U_i(\theta_i) = \beta E(\theta_i; x_i) + \tfrac12\|(\theta_i-\theta_0)/s\|^2`.
All inputs are minimised together by damped Newton steps (Levenberg–Marquardt, one damping per input) with
vmapped gradients and Hessians, so each input converges on its own criterion and the Laplace precision at the end
is the Hessian already at hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.func import grad_and_value, hessian, vmap
from torch.utils._pytree import tree_leaves, tree_map

from ..diagnostics import InferenceError
from ..infer.approximations import PointMass, _Seeded
from ..infer.result import Posterior
from .latents import Functional

__all__ = ["BlockGaussian", "adapt_independent"]


class BlockGaussian(_Seeded):
    """Independent Gaussians, one per input: ``loc (B, D)``, ``scale_tril (B, D, D)``, mapped to sites by
    ``unflatten``; draws have shape ``(n, B, *site_shape)``."""

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, unflatten: Callable):
        self.loc, self.scale_tril, self.unflatten = loc.detach(), scale_tril.detach(), unflatten

    def _draw(self, n: int) -> dict[str, torch.Tensor]:
        eps = torch.randn((n,) + tuple(self.loc.shape), dtype=self.loc.dtype)
        return self.unflatten(self.loc + torch.einsum("bij,nbj->nbi", self.scale_tril, eps))

    def mean(self) -> dict[str, torch.Tensor]:
        return self.unflatten(self.loc)

    def std(self) -> dict[str, torch.Tensor]:
        return self.unflatten((self.scale_tril**2).sum(-1).sqrt())


def adapt_independent(fn: Functional, x, energy: Callable, scales: torch.Tensor, beta: float, laplace: bool,
                      steps: int = 100, tol: float | None = None) -> Posterior:
    """MAP (or Laplace) of every input's own copy of the latents, all at once."""
    u0 = fn.flatten(fn.trained)
    B, D = tree_leaves(x)[0].shape[0], u0.numel()
    tol = tol if tol is not None else (1e-6 if u0.dtype == torch.float64 else 1e-4)

    def potential(u, xi):
        values = fn.unflatten(u)
        e = energy(lambda inputs: fn(values, inputs), tree_map(lambda t: t.unsqueeze(0), xi))
        if e.shape != (1,):
            raise ValueError(f"the test-time energy must return one energy per example; got shape {tuple(e.shape)} "
                             "for a batch of one.")
        return beta * e.sum() + 0.5 * (((u - u0) / scales) ** 2).sum()

    g_fn, h_fn = vmap(grad_and_value(potential)), vmap(hessian(potential))
    u = u0.expand(B, D).clone()
    g, f = g_fn(u, x)
    _check(f, g, 0)
    damping = torch.full((B,), 1e-3, dtype=u.dtype)
    eye = torch.eye(D, dtype=u.dtype)
    iterations = 0
    while iterations < steps:
        done = g.abs().amax(1) <= tol * f.abs().clamp_min(1.0)
        if bool(done.all()):
            break
        iterations += 1
        H = h_fn(u, x)
        scale = H.diagonal(dim1=1, dim2=2).abs().mean(1).clamp_min(1.0)
        L, info = torch.linalg.cholesky_ex(H + (damping * scale)[:, None, None] * eye)
        step = -torch.cholesky_solve(g[..., None], L).squeeze(-1)
        step = torch.where((info == 0)[:, None], step, -g / scale[:, None])  # not PD yet: a gradient step
        g_new, f_new = g_fn(u + step, x)
        better = (f_new <= f) & torch.isfinite(f_new) & ~done
        u = torch.where(better[:, None], u + step, u)
        f, g = torch.where(better, f_new, f), torch.where(better[:, None], g_new, g)
        damping = torch.where(better, (damping / 3).clamp_min(1e-9), (damping * 10).clamp_max(1e9))
    _check(f, g, iterations)
    converged = g.abs().amax(1) <= tol * f.abs().clamp_min(1.0)
    if not bool(converged.all()):
        bad = torch.nonzero(~converged).flatten()[:5].tolist()
        raise InferenceError(f"independent adaptation did not converge in {steps} Newton steps for inputs {bad}: "
                             "raise steps, or use a smaller prior_scale (a stronger prior).")
    mode = fn.unflatten(u)
    site_shapes = {n: torch.Size((B,)) + s for n, s in fn.shapes.items()}
    diagnostics = {"iterations": iterations, "energy": f, "grad_norm": g.abs().amax(1)}
    if not laplace:
        return Posterior("map", PointMass(mode), site_shapes=site_shapes, mode=mode, diagnostics=diagnostics)
    H = h_fn(u, x)
    H = 0.5 * (H + H.transpose(1, 2))
    evals = torch.linalg.eigvalsh(H)
    floor = (1e-10 if H.dtype == torch.float64 else 1e-5) * evals.abs().amax(1).clamp_min(1.0)
    bad = torch.nonzero(evals[:, 0] <= floor).flatten()
    if len(bad):
        raise InferenceError(f"Laplace: the Hessian is not positive definite at the minimum for inputs "
                             f"{bad[:5].tolist()} (smallest eigenvalue {float(evals[bad[0], 0]):.3g}).")
    chol = torch.linalg.cholesky(H)
    cov = torch.cholesky_inverse(chol)
    log_prior_norm = float(torch.log(scales).sum()) + 0.5 * D * math.log(2 * math.pi)
    log_z = -f + 0.5 * D * math.log(2 * math.pi) - chol.diagonal(dim1=1, dim2=2).log().sum(1) - log_prior_norm
    diagnostics["log_evidence"] = log_z
    diagnostics["hessian"] = H
    return Posterior("laplace", BlockGaussian(u, torch.linalg.cholesky(cov), fn.unflatten), site_shapes=site_shapes,
                     mode=mode, log_evidence=float(log_z.sum()), diagnostics=diagnostics)


def _check(f: torch.Tensor, g: torch.Tensor, step: int) -> None:
    bad = ~(torch.isfinite(f) & torch.isfinite(g).all(1))
    if bool(bad.any()):
        raise InferenceError(f"independent adaptation: the energy or its gradient is not finite (NaN/inf) for inputs "
                             f"{torch.nonzero(bad).flatten()[:5].tolist()} at Newton step {step}. Check the energy "
                             "and the inputs for NaN, or lower beta.")
