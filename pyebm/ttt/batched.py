r"""Independent adaptation of many inputs at once: one latent copy per input, vectorised with ``torch.func.vmap``.

The potential of input :math:`i` is :math:`U_i(\theta_i) = \beta E(\theta_i; x_i) + \tfrac12\|(\theta_i-\theta_0)/s\|^2`.
All inputs are minimised together by a vectorised L-BFGS (per-input curvature pairs and Armijo backtracking, one
batched gradient per trial), polished where needed by damped Newton steps with vmapped Hessians; each input
converges on its own criterion, and the Laplace precision is one vmapped Hessian at the end.
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
from .energies import per_example
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
        e = per_example(energy(lambda inputs: fn(values, inputs), tree_map(lambda t: t.unsqueeze(0), xi)), 1)
        return beta * e.sum() + 0.5 * (((u - u0) / scales) ** 2).sum()

    g_fn, h_fn = vmap(grad_and_value(potential)), vmap(hessian(potential))
    u = u0.expand(B, D).clone()
    g, f = g_fn(u, x)
    _check(f, g, 0)
    u, f, g, iterations = _lbfgs(g_fn, u, f, g, x, tol, steps)
    u, f, g, polish = _newton(g_fn, h_fn, u, f, g, x, tol, steps)
    iterations += polish
    _check(f, g, iterations)
    converged = g.abs().amax(1) <= tol * f.abs().clamp_min(1.0)
    if not bool(converged.all()):
        bad = torch.nonzero(~converged).flatten()[:5].tolist()
        raise InferenceError(f"independent adaptation did not converge in {steps} iterations for inputs {bad}: "
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


def _take(x, index: torch.Tensor):
    """The inputs ``index`` of a (tree of) batched tensor(s)."""
    return tree_map(lambda t: t[index], x)


def _converged(f: torch.Tensor, g: torch.Tensor, tol: float) -> torch.Tensor:
    return g.abs().amax(1) <= tol * f.abs().clamp_min(1.0)


def _lbfgs(g_fn, u, f, g, x, tol: float, steps: int, memory: int = 10, c1: float = 1e-4):
    """Vectorised L-BFGS: every input keeps its own curvature pairs and its own Armijo backtracking; one batched
    gradient evaluation per trial step. Inputs stop on their own convergence; stalls are left to the Newton polish."""
    B, D = u.shape
    S = u.new_zeros(B, memory, D)
    Y = u.new_zeros(B, memory, D)
    rho = u.new_zeros(B, memory)
    count = torch.zeros(B, dtype=torch.long)  # pairs stored per input (ring buffer slot = count % memory)
    stalled = torch.zeros(B, dtype=torch.bool)
    it = 0
    while it < steps:
        active = torch.nonzero(~(_converged(f, g, tol) | stalled)).flatten()
        if not len(active):
            break
        it += 1
        ga, ca = g[active], count[active]
        # two-loop recursion, newest pair first; slots never written have rho = 0 and drop out
        q, alphas = ga.clone(), []
        for back in range(1, memory + 1):
            slot = (ca - back) % memory
            s_k, y_k, r_k = S[active, slot], Y[active, slot], rho[active, slot] * (ca >= back)
            a = r_k * (s_k * q).sum(1)
            q = q - a[:, None] * y_k
            alphas.append((a, s_k, y_k, r_k))
        last = (ca - 1) % memory
        sy, yy = (S[active, last] * Y[active, last]).sum(1), (Y[active, last] ** 2).sum(1)
        gamma = torch.where(ca > 0, sy / yy.clamp_min(1e-300), 1.0 / ga.abs().amax(1).clamp_min(1.0))
        r = gamma[:, None] * q
        for a, s_k, y_k, r_k in reversed(alphas):
            b = r_k * (y_k * r).sum(1)
            r = r + s_k * (a - b)[:, None]
        d = -r
        slope = (ga * d).sum(1)
        bad_dir = ~(slope < 0)
        d = torch.where(bad_dir[:, None], -ga, d)
        slope = torch.where(bad_dir, -(ga**2).sum(1), slope)
        t = torch.ones(len(active), dtype=u.dtype)
        searching = torch.ones(len(active), dtype=torch.bool)
        u_new, f_new, g_new = u[active].clone(), f[active].clone(), ga.clone()
        for _ in range(30):
            idx = torch.nonzero(searching).flatten()
            if not len(idx):
                break
            trial = u[active[idx]] + t[idx, None] * d[idx]
            gt, ft = g_fn(trial, _take(x, active[idx]))
            ok = torch.isfinite(ft) & (ft <= f[active[idx]] + c1 * t[idx] * slope[idx])
            u_new[idx[ok]], f_new[idx[ok]], g_new[idx[ok]] = trial[ok], ft[ok], gt[ok]
            searching[idx[ok]] = False
            t[idx[~ok]] = t[idx[~ok]] / 2
        stalled[active[searching]] = True
        moved = ~searching
        s_new, y_new = u_new - u[active], g_new - ga
        curv = (s_new * y_new).sum(1)
        store = moved & (curv > 1e-10 * (s_new.norm(dim=1) * y_new.norm(dim=1)).clamp_min(1e-300))
        rows = active[store]
        slot = count[rows] % memory
        S[rows, slot], Y[rows, slot], rho[rows, slot] = s_new[store], y_new[store], 1.0 / curv[store]
        count[rows] += 1
        u[active], f[active], g[active] = u_new, f_new, g_new
    return u, f, g, it


def _newton(g_fn, h_fn, u, f, g, x, tol: float, steps: int):
    """Damped Newton (Levenberg–Marquardt, one damping per input) on the inputs not yet converged."""
    damping = torch.full(f.shape, 1e-3, dtype=u.dtype)
    eye = torch.eye(u.shape[1], dtype=u.dtype)
    iterations = 0
    while iterations < steps:
        done = _converged(f, g, tol)
        if bool(done.all()):
            break
        iterations += 1
        active = torch.nonzero(~done).flatten()
        xa = _take(x, active)
        ua, fa, ga, da = u[active], f[active], g[active], damping[active]
        H = h_fn(ua, xa)
        scale = H.diagonal(dim1=1, dim2=2).abs().mean(1).clamp_min(1.0)
        L, info = torch.linalg.cholesky_ex(H + (da * scale)[:, None, None] * eye)
        step = -torch.cholesky_solve(ga[..., None], L).squeeze(-1)
        step = torch.where((info == 0)[:, None], step, -ga / scale[:, None])  # not PD yet: a gradient step
        g_new, f_new = g_fn(ua + step, xa)
        slack = 10 * torch.finfo(f.dtype).eps * fa.abs().clamp_min(1.0)  # round-off near the minimum
        better = (f_new <= fa + slack) & torch.isfinite(f_new) & (g_new.abs().amax(1) < ga.abs().amax(1) + slack)
        better = better | ((f_new < fa) & torch.isfinite(f_new))
        u[active] = torch.where(better[:, None], ua + step, ua)
        f[active] = torch.where(better, f_new, fa)
        g[active] = torch.where(better[:, None], g_new, ga)
        damping[active] = torch.where(better, (da / 3).clamp_min(1e-9), (da * 10).clamp_max(1e9))
    return u, f, g, iterations


def _check(f: torch.Tensor, g: torch.Tensor, step: int) -> None:
    bad = ~(torch.isfinite(f) & torch.isfinite(g).all(1))
    if bool(bad.any()):
        raise InferenceError(f"independent adaptation: the energy or its gradient is not finite (NaN/inf) for inputs "
                             f"{torch.nonzero(bad).flatten()[:5].tolist()} at Newton step {step}. Check the energy "
                             "and the inputs for NaN, or lower beta.")
