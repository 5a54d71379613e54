r"""Minimisation of potentials, written once for torch and JAX (through :class:`pyebm.ops.ArrayOps`).

One routine serves MAP and Laplace (one problem), the free energy of a batch of latents and test-time adaptation of
many inputs (``B`` independent problems, rows of ``u``): each row converges, stalls or fails on its own.

**L-BFGS** with a weak-Wolfe line search. Its sufficient-decrease test has the approximate form of Hager and Zhang
(2005): once energy differences fall to round-off, a step is accepted on the directional derivative alone, so a
float32 energy with a large additive constant still reaches its minimum instead of stalling.

**Convergence** is measured in the units that matter for inference: the distance from the mode in posterior
standard deviations, the Newton decrement :math:`\sqrt{g^\top H^{-1} g}`. It does not change when a constant is
added to the energy or when the parametrisation is rescaled. L-BFGS estimates it with its own inverse-Hessian
approximation; where the exact Hessian is wanted anyway (Laplace) or cheap (``D`` up to :data:`VERIFY_LIMIT`),
damped Newton steps verify and polish the answer, so an optimistic estimate can never end a run early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from ..ops import ArrayOps
from .curvature import factor

__all__ = ["MinimizeResult", "minimize", "default_tol", "DENSE_LIMIT", "VERIFY_LIMIT"]

#: largest dimension for which a method that needs the dense Hessian anyway (Laplace) verifies with it
DENSE_LIMIT = 2000

#: largest dimension for which the Hessian (D gradient-like passes) verifies a minimum that does not need it (MAP)
VERIFY_LIMIT = 50

#: largest dimension for which the first step is a Newton step (a warm start then converges in one or two steps)
NEWTON_START_LIMIT = 20

#: iterations in a row without a decrease beyond round-off after which a row has stalled
STALL_ITERATIONS = 10

#: L-BFGS iterations over which a row's estimated distance must halve before Newton steps take it over
HANDOVER_ITERATIONS = 25

#: a row whose parameters end this many times farther out than they started, with the energy still falling,
#: runs away: its energy is unbounded below
RUNAWAY = 1e6

STATUSES = ("converged", "stalled", "max_steps", "nonfinite", "unbounded", "indefinite")


@dataclass
class MinimizeResult:
    r"""The minimiser of each row and how it went.

    ``status`` per row: ``"converged"``; ``"stalled"`` (no step lowers the energy: round-off); ``"max_steps"``;
    ``"nonfinite"`` (energy or gradient NaN/inf at the start); ``"unbounded"`` (the energy kept falling while the
    parameters ran away); ``"indefinite"`` (the exact Hessian at the end is not positive definite: a saddle or a
    flat direction). ``distance`` is the Newton decrement :math:`\sqrt{g^\top H^{-1} g}`, the distance to the mode in
    posterior standard deviations (exact where ``hessian`` is set, else L-BFGS's estimate; ``inf`` where unknown).
    """

    u: Any
    value: Any
    grad: Any
    status: np.ndarray
    distance: np.ndarray
    iterations: int
    evaluations: int
    history: list = field(default_factory=list)
    hessian: Any = None
    tol: float = float("nan")

    @property
    def converged(self) -> bool:
        return bool((self.status == "converged").all())


def default_tol(ops: ArrayOps, like) -> float:
    """Distance to the mode, in posterior standard deviations, that counts as converged: 1e-8 in double
    precision, 1e-4 in single (where energies carry about seven significant digits)."""
    return 1e-8 if ops.eps(like) < 1e-10 else 1e-4


def minimize(
    value_and_grad: Callable,
    u0,
    *,
    ops: ArrayOps,
    hessian: Callable | None = None,
    verify: bool | None = None,
    steps: int = 500,
    tol: float | None = None,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    memory: int = 10,
    newton_steps: int = 50,
    progress: bool = False,
    desc: str = "MAP",
) -> MinimizeResult:
    r"""Minimise every row of ``u0`` (shape ``(B, D)``) under ``value_and_grad(u) -> (values (B,), grads (B, D))``.

    Parameters
    ----------
    hessian : callable, optional
        ``u -> (B, D, D)`` per-row Hessians: the first step is Newton's (``D <= NEWTON_START_LIMIT``), and where
        ``verify``, damped Newton steps verify and polish the minimum; the Hessian at the final point is returned
        (Laplace reuses it).
    verify : bool, optional
        Verify with the Hessian; default: when ``D <= VERIFY_LIMIT`` (a caller that needs the Hessian anyway passes
        True, up to ``DENSE_LIMIT``).
    steps : int
        Maximum iterations, L-BFGS (or Adam) and Newton together.
    newton_steps : int
        At most this many of them Newton steps.
    tol : float, optional
        Newton decrement at which a row is converged (:func:`default_tol` by default).
    optimizer : {"lbfgs", "adam"}
        Adam runs ``steps`` steps with learning rate ``lr`` (default 0.05) before the Newton verification.
    """
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"unknown optimizer {optimizer!r}; choose 'lbfgs' or 'adam'.")
    tol = default_tol(ops, u0) if tol is None else float(tol)
    run = _Run(value_and_grad, ops, u0, tol, desc, progress, steps)
    try:
        if not run.status_ok_at_start():
            return run.result(None)
        verify = hessian is not None and (
            u0.shape[1] <= VERIFY_LIMIT if verify is None else verify and u0.shape[1] <= DENSE_LIMIT)
        if optimizer == "lbfgs":
            first = hessian if hessian is not None and u0.shape[1] <= NEWTON_START_LIMIT else None
            run.lbfgs(steps, memory, first, handover=verify)
        else:
            run.adam(steps, 0.05 if lr is None else lr)
        H = None
        if verify:
            # L-BFGS shares `steps` with the polish; Adam's steps are its own
            budget = newton_steps if optimizer == "adam" else min(newton_steps, max(steps - run.iterations, 0))
            H = run.newton(hessian, budget)
            if optimizer == "lbfgs" and (run.status == "max_steps").any() and run.iterations < steps:
                # Newton could not finish what L-BFGS handed over (no interior mode, a long curved valley):
                # L-BFGS goes on with the steps left, as without the handover, and Newton verifies again
                run.lbfgs(steps - run.iterations, memory)
                H = run.newton(hessian, min(newton_steps, max(steps - run.iterations, 0)))
        elif optimizer == "adam":
            done = run.ok() & (np.abs(ops.to_numpy(run.g)).max(1) <= tol)
            run.status[done] = "converged"
        return run.result(H)
    finally:
        run.bar.close()


class _Run:
    """The state of one minimisation: rows, statuses and counters (array maths through ``ops``)."""

    def __init__(self, vg, ops, u0, tol, desc, progress, steps):
        self.vg, self.ops, self.tol = vg, ops, tol
        self.u = ops.detach(u0)
        self.u0_norm = np.linalg.norm(ops.to_numpy(self.u).astype(np.float64), axis=1)
        self.f, self.g = vg(self.u)
        self.f0 = ops.to_numpy(self.f).astype(np.float64)
        self.evaluations, self.iterations = 1, 0
        B = self.f.shape[0]
        self.status = np.full(B, "max_steps", dtype=object)
        self.distance = np.full(B, np.inf)
        self.history = [float(np.mean(self.f0))]
        self.bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)

    def status_ok_at_start(self) -> bool:
        bad = ~np.isfinite(self.f0) | ~np.isfinite(self.ops.to_numpy(self.g)).all(1)
        self.status[bad] = "nonfinite"
        return not bad.all()

    def ok(self) -> np.ndarray:
        """Rows still in play (not failed): converged, stalled or out of steps."""
        return np.isin(self.status, ("converged", "stalled", "max_steps"))

    def _mask(self, rows: np.ndarray):
        return self.ops.asarray(rows, self.u) > 0.5

    def _tick(self) -> None:
        self.iterations += 1
        f = self.ops.to_numpy(self.f)
        self.history.append(float(np.mean(f)))
        self.bar.update()
        self.bar.set_postfix(energy=f"{self.history[-1]:.6g}", distance=f"{np.min(self.distance):.2g}")

    def _check_runaway(self, rows: np.ndarray) -> None:
        norm = np.linalg.norm(self.ops.to_numpy(self.u), axis=1)
        f = self.ops.to_numpy(self.f)
        away = rows & (f < self.f0) & (norm > RUNAWAY * (1.0 + self.u0_norm))
        self.status[away] = "unbounded"

    # --- L-BFGS ---------------------------------------------------------------------------------------------
    def lbfgs(self, steps: int, memory: int, hessian: Callable | None = None, handover: bool = False) -> None:
        """L-BFGS iterations; with ``hessian``, the first direction is Newton's where the Hessian is positive definite
        (its Newton decrement is then exact too). With ``handover`` (Newton steps follow), a row whose estimated
        distance has not halved in :data:`HANDOVER_ITERATIONS` iterations (an ill-conditioned valley, where limited
        memory crawls) stops here and is left to Newton."""
        ops, (B, D) = self.ops, self.u.shape
        S, Y, rho = ops.zeros((B, memory, D), self.u), ops.zeros((B, memory, D), self.u), ops.zeros((B, memory), self.u)
        pairs = np.zeros(B, dtype=int)
        active = self.status == "max_steps"
        best, stale = ops.to_numpy(self.f).astype(np.float64), np.zeros(B, dtype=int)
        distances = []
        for k in range(steps):
            d, has_pair = self._direction(S, Y, rho)
            newton = np.zeros(B, dtype=bool)
            if k == 0 and hessian is not None:
                L, newton = factor(hessian(self.u), ops)
                safe = ops.where(self._mask(newton)[:, None, None], L, ops.eye(D, self.u))
                d = ops.where(self._mask(newton)[:, None], -ops.cho_solve(safe, self.g[..., None])[..., 0], d)
            slope = ops.sum(self.g * d, 1)
            descent = ops.to_numpy(slope) < 0
            fallback = ~descent  # a stale inverse-Hessian estimate: steepest descent, history dropped
            if fallback.any():
                gmax = ops.amax(abs(self.g), 1)[:, None]
                scaled = -self.g / ops.where(gmax > 0, gmax, ops.full(gmax.shape, 1.0, self.u))
                d = ops.where(self._mask(fallback)[:, None], scaled, d)
                slope = ops.sum(self.g * d, 1)
                rho = ops.where(self._mask(fallback)[:, None], ops.zeros(rho.shape, rho), rho)
                pairs[fallback] = 0
            dist = np.sqrt(np.maximum(-ops.to_numpy(slope), 0.0))
            stationary = ~np.any(ops.to_numpy(self.g) != 0, axis=1)  # an exactly zero gradient: nothing to estimate
            dist[stationary] = 0.0
            estimable = ((pairs > 0) & has_pair) | stationary | (newton & descent)
            self.distance = np.where(estimable, dist, self.distance)
            done = active & estimable & (dist <= self.tol)
            self.status[done] = "converged"
            active &= ~done
            distances.append(self.distance.copy())
            if handover and k >= HANDOVER_ITERATIONS:
                active &= ~(self.distance > 0.5 * distances[k - HANDOVER_ITERATIONS])
            if not active.any():
                break
            u_new, f_new, g_new, moved, unbounded = self._line_search(d, slope, active)
            self.status[active & unbounded] = "unbounded"
            self.status[active & ~moved & ~unbounded] = "stalled"
            s, y = u_new - self.u, g_new - self.g
            sy = ops.to_numpy(ops.sum(s * y, 1))
            scale = np.linalg.norm(ops.to_numpy(s).astype(np.float64), axis=1) * np.linalg.norm(ops.to_numpy(y).astype(np.float64), axis=1)
            store = moved & (sy > 1e-10 * scale) & np.isfinite(sy)
            if store.any():
                keep = self._mask(store)
                S = ops.where(keep[:, None, None], ops.concat([S[:, 1:], s[:, None]], 1), S)
                Y = ops.where(keep[:, None, None], ops.concat([Y[:, 1:], y[:, None]], 1), Y)
                inv = ops.asarray(np.where(store, 1.0 / np.where(store, sy, 1.0), 0.0), self.u)
                rho = ops.where(keep[:, None], ops.concat([rho[:, 1:], inv[:, None]], 1), rho)
                pairs[store] = np.minimum(pairs[store] + 1, memory)
            step = self._mask(moved)
            self.u = ops.where(step[:, None], u_new, self.u)
            self.f = ops.where(step, f_new, self.f)
            self.g = ops.where(step[:, None], g_new, self.g)
            self._check_runaway(active)
            # a row whose energy no longer falls beyond round-off, iteration after iteration, has stalled
            f_now = ops.to_numpy(self.f).astype(np.float64)
            progress = f_now < best - self._noise(best)
            best, stale = np.minimum(best, f_now), np.where(progress, 0, stale + 1)
            self.status[active & (stale >= STALL_ITERATIONS) & (self.status == "max_steps")] = "stalled"
            active &= self.status == "max_steps"
            self._tick()
            if not active.any():
                break

    def _direction(self, S, Y, rho):
        """The L-BFGS direction -H̃⁻¹g by the two-loop recursion (pairs oldest to newest; empty slots have rho = 0)."""
        ops, g = self.ops, self.g
        m = rho.shape[1]
        q, alphas = g, []
        for i in reversed(range(m)):
            a = rho[:, i] * ops.sum(S[:, i] * q, 1)
            q = q - a[:, None] * Y[:, i]
            alphas.append(a)
        sy, yy = ops.sum(S[:, -1] * Y[:, -1], 1), ops.sum(Y[:, -1] * Y[:, -1], 1)
        has_pair = ops.to_numpy(rho[:, -1]) > 0
        gnorm = ops.sum(g * g, 1) ** 0.5
        one = ops.full(gnorm.shape, 1.0, g)
        first = one / ops.where(gnorm > 0, gnorm, one)  # first step: unit length in u
        gamma = ops.where(self._mask(has_pair), sy / ops.where(yy > 0, yy, one), first)
        r = gamma[:, None] * q
        for i in range(m):
            b = rho[:, i] * ops.sum(Y[:, i] * r, 1)
            r = r + S[:, i] * (alphas[m - 1 - i] - b)[:, None]
        return -r, has_pair

    def _noise(self, f: np.ndarray) -> np.ndarray:
        """Energy differences below this are round-off (Hager and Zhang's epsilon, relative to the current energy)."""
        return 100 * self.ops.eps(self.u) * np.maximum(1.0, np.abs(f))

    def _line_search(self, d, slope, rows, max_evals: int = 30, c1: float = 1e-4, c2: float = 0.9):
        """A step along ``d`` for every row in ``rows``: weak Wolfe, with Hager–Zhang's approximate decrease test
        where energy differences are at round-off. Returns the new rows, which rows moved and which ran away."""
        ops = self.ops
        f0 = ops.to_numpy(self.f).astype(np.float64)
        bracket = _Bracket(f0, ops.to_numpy(slope).astype(np.float64), self._noise(f0), np.where(rows, 1.0, 0.0))
        # a step this long runs away: the parameters would end RUNAWAY times farther out than they are
        searching = rows.copy()
        moved, short_any, unbounded = np.zeros_like(rows), np.zeros_like(rows), np.zeros_like(rows)
        u_new, f_new, g_new = self.u, self.f, self.g
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            reach = (RUNAWAY * (1.0 + np.linalg.norm(ops.to_numpy(self.u).astype(np.float64), axis=1))
                     / np.linalg.norm(ops.to_numpy(d).astype(np.float64), axis=1))
            for _ in range(max_evals):
                if not searching.any():
                    break
                trial = self.u + ops.asarray(bracket.t, self.u)[:, None] * d
                ft, gt = self.vg(trial)
                self.evaluations += 1
                ftn, dphi = ops.to_numpy(ft).astype(np.float64), ops.to_numpy(ops.sum(gt * d, 1)).astype(np.float64)
                decrease, curvature = bracket.tests(ftn, dphi, c1, c2)
                accept = searching & decrease & curvature
                short = searching & decrease & ~curvature  # lower, but still steep: a fallback, and a lower bracket
                keep = accept | short
                if keep.any():
                    mask = self._mask(keep)
                    u_new = ops.where(mask[:, None], trial, u_new)
                    f_new = ops.where(mask, ft, f_new)
                    g_new = ops.where(mask[:, None], gt, g_new)
                moved |= accept
                short_any |= short
                searching &= ~accept
                runaway = short & np.isinf(bracket.hi) & (bracket.t > reach)
                unbounded |= runaway
                searching &= ~runaway
                bracket.advance(searching, decrease, short, ftn, dphi)
        return u_new, f_new, g_new, (moved | short_any) & ~unbounded, unbounded

    # --- Adam --------------------------------------------------------------------------------------------------
    def adam(self, steps: int, lr: float, b1: float = 0.9, b2: float = 0.999) -> None:
        ops = self.ops
        m, v = ops.zeros(self.u.shape, self.u), ops.zeros(self.u.shape, self.u)
        for k in range(1, steps + 1):
            m = b1 * m + (1 - b1) * self.g
            v = b2 * v + (1 - b2) * self.g * self.g
            step = lr * (m / (1 - b1**k)) / ((v / (1 - b2**k)) ** 0.5 + 1e-8)
            u_new = self.u - step
            f_new, g_new = self.vg(u_new)
            self.evaluations += 1
            finite = ops.to_numpy(ops.isfinite(f_new)) & np.isfinite(ops.to_numpy(g_new)).all(1)
            mask = self._mask(finite)
            self.u = ops.where(mask[:, None], u_new, self.u)
            self.f = ops.where(mask, f_new, self.f)
            self.g = ops.where(mask[:, None], g_new, self.g)
            self._check_runaway(self.status == "max_steps")
            self._tick()
            if not (self.status == "max_steps").any():
                break

    # --- Newton verification and polish ------------------------------------------------------------------------
    def newton(self, hessian: Callable, steps: int):
        """Damped Newton steps (one Levenberg–Marquardt damping per row) until the exact Newton decrement is within
        tolerance; rows whose Hessian is not positive definite at the end are ``"indefinite"``. Returns the Hessians
        at the final point."""
        ops = self.ops
        rows = self.ok()
        if not rows.any():
            return None
        eligible, stuck = rows.copy(), np.zeros_like(rows)
        damping = np.full(self.f.shape[0], 1e-3)
        D = self.u.shape[1]
        for k in range(steps + 1):
            H = hessian(self.u)
            L, pd = factor(H, ops)
            delta = ops.cho_solve(ops.where(self._mask(pd)[:, None, None], L, ops.eye(D, self.u)),
                                  self.g[..., None])[..., 0]
            dist = np.sqrt(np.maximum(ops.to_numpy(ops.sum(self.g * delta, 1)), 0.0))
            self.distance = np.where(eligible & pd, dist, np.where(eligible, np.inf, self.distance))
            todo = eligible & ~(pd & (dist <= self.tol))
            if not todo.any() or k == steps:
                break
            scale = np.maximum(np.abs(ops.to_numpy(ops.diagonal(H))).mean(1), 1.0)
            shift = ops.asarray(damping * scale, self.u)[:, None, None] * ops.eye(D, self.u)
            Ld, pdd = factor(H + shift, ops)
            safe = ops.where(self._mask(pdd)[:, None, None], Ld, ops.eye(D, self.u))
            step = -ops.cho_solve(safe, self.g[..., None])[..., 0]
            gradient_step = -self.g / ops.asarray(scale, self.u)[:, None]
            step = ops.where(self._mask(pdd)[:, None], step, gradient_step)
            # a pure Newton step where the Hessian is positive definite and damping has settled
            step = ops.where(self._mask(pd & (damping <= 1e-3))[:, None], -delta, step)
            f_new, g_new = self.vg(self.u + step)
            self.evaluations += 1
            fn, fo = ops.to_numpy(f_new).astype(np.float64), ops.to_numpy(self.f).astype(np.float64)
            gn, go = np.abs(ops.to_numpy(g_new)).max(1), np.abs(ops.to_numpy(self.g)).max(1)
            finite = np.isfinite(fn) & np.isfinite(ops.to_numpy(g_new)).all(1)
            better = finite & ((fn < fo) | ((fn <= fo + self._noise(fo)) & (gn < go)))
            take = todo & better
            mask = self._mask(take)
            self.u = ops.where(mask[:, None], self.u + step, self.u)
            self.f = ops.where(mask, f_new, self.f)
            self.g = ops.where(mask[:, None], g_new, self.g)
            damping = np.where(take, np.maximum(damping / 3, 1e-9), np.where(todo, np.minimum(damping * 10, 1e9), damping))
            stuck |= todo & ~take & (damping >= 1e9)
            eligible &= ~stuck
            self.iterations += 1
        done = pd & (dist <= self.tol)
        stationary = np.isin(self.status, ("converged", "stalled")) | stuck  # rows that L-BFGS or Newton finished
        self.status[rows & done] = "converged"
        self.status[rows & ~pd & stationary] = "indefinite"
        self.status[rows & ~pd & ~stationary] = "max_steps"
        self.status[rows & pd & ~done] = np.where(stuck, "stalled", "max_steps")[rows & pd & ~done]
        return H

    def result(self, H) -> MinimizeResult:
        return MinimizeResult(self.u, self.f, self.g, self.status, self.distance, self.iterations, self.evaluations,
                              self.history, H, self.tol)


class _Bracket:
    """Per-row step lengths of a weak-Wolfe search: ``lo`` (lower, but still descending steeply) and ``hi`` (too far:
    no decrease, or non-finite), with the directional derivatives there; ``t`` is the next trial."""

    def __init__(self, f0: np.ndarray, slope0: np.ndarray, noise: np.ndarray, t: np.ndarray):
        self.f0, self.slope0, self.noise, self.t = f0, slope0, noise, t
        self.lo, self.hi = np.zeros_like(t), np.full_like(t, np.inf)
        self.dlo, self.dhi = slope0.copy(), np.full_like(t, np.nan)

    def tests(self, f: np.ndarray, dphi: np.ndarray, c1: float, c2: float) -> tuple[np.ndarray, np.ndarray]:
        """Sufficient decrease (Armijo, or approximately at round-off: derivative well below the start's slope
        magnitude and the energy within noise of the start) and the weak-Wolfe curvature condition."""
        finite = np.isfinite(f) & np.isfinite(dphi)
        armijo = f <= self.f0 + c1 * self.t * self.slope0
        approximate = (f <= self.f0 + self.noise) & (dphi <= -0.8 * self.slope0)
        return finite & (armijo | approximate), dphi >= c2 * self.slope0

    def advance(self, searching: np.ndarray, decrease: np.ndarray, short: np.ndarray, f: np.ndarray,
                dphi: np.ndarray) -> None:
        t = self.t
        far = searching & ~decrease
        self.hi = np.where(far, t, self.hi)
        self.dhi = np.where(far, np.where(np.isfinite(dphi), dphi, np.nan), self.dhi)
        self.lo = np.where(short, t, self.lo)
        self.dlo = np.where(short, dphi, self.dlo)
        lo, hi, width = self.lo, self.hi, self.hi - self.lo
        # inside a bracket: the secant root of the derivative, kept off the ends; else bisection
        secant = lo - self.dlo * width / (self.dhi - self.dlo)
        inside = np.isfinite(secant) & (self.dhi > 0) & (secant > lo + 0.1 * width) & (secant < hi - 0.1 * width)
        bracketed = np.where(inside, secant, lo + 0.5 * width)
        # backtracking from the first trial: a quadratic through f(0), f'(0) and f(t), kept in [0.1 t, 0.5 t]
        curv = f - self.f0 - self.slope0 * t
        quad = np.where(np.isfinite(curv) & (curv > 0), -self.slope0 * t * t / (2 * np.where(curv > 0, curv, 1.0)),
                        0.1 * t)
        backtrack = np.clip(quad, 0.1 * t, 0.5 * t)
        nxt = np.where(np.isinf(hi), 4.0 * t, np.where((lo == 0) & far, backtrack, bracketed))
        self.t = np.where(searching, nxt, t)
