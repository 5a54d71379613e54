"""Checks and clear errors: β, energy values, and MCMC convergence diagnostics.

Every check raises with a message saying what was wrong and what to do, so that a
bad energy never turns into a silent NaN further down the ladder.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from numbers import Real

import numpy as np
import torch

__all__ = [
    "InferenceError",
    "ConvergenceWarning",
    "NonFiniteEnergyError",
    "CheckpointError",
    "warn",
    "check_beta",
    "check_energy",
    "ess_bulk",
    "split_rhat",
    "rhat_and_ess",
    "classic_rhat",
]


class InferenceError(RuntimeError):
    """An inference method failed: no convergence, a saddle, a diverging sampler."""


class ConvergenceWarning(UserWarning):
    """A method finished but its diagnostics (r_hat, divergences) ask for care."""


class CheckpointError(ValueError):
    """A training checkpoint that cannot be used: missing, truncated, corrupted, foreign, or from another method."""


class NonFiniteEnergyError(ValueError):
    """An energy evaluated to NaN or ±inf (a ``ValueError``: the energy is bad at that input)."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn(message: str, category: type[Warning] = ConvergenceWarning) -> None:
    """Warn with the location of the first caller outside pyebm (the user's line, not pyebm's internals)."""
    frame, level = sys._getframe(), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def check_beta(beta: float | torch.Tensor, *, allow_zero: bool = True, allow_inf: bool = False,
               name: str = "beta") -> float:
    """Validate an inverse temperature β and return it as a float.

    Parameters
    ----------
    beta : float
        The inverse temperature in p_β(x) ∝ exp(−β E(x)).
    allow_zero : bool
        β = 0 is meaningful for tempering (the prior alone) but not for a free energy.
    allow_inf : bool
        β = ∞ is meaningful for a free energy (the minimum), not for a factor.
    name : str
        What the value is, for the messages.
    """
    if isinstance(beta, torch.Tensor):
        if beta.requires_grad:
            raise TypeError(
                f"{name} is a tensor that requires grad; a temperature here is a fixed number and its gradient "
                "would be lost. To learn it, put it into the energy: energy_factor(name, lam * E)."
            )
        if beta.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(beta.shape)}.")
        beta = beta.item()
    if isinstance(beta, bool) or not isinstance(beta, Real):
        raise TypeError(f"{name} must be a real number, got {type(beta).__name__}.")
    beta = float(beta)
    if math.isnan(beta):
        raise ValueError(f"{name} is NaN; pass an inverse temperature >= 0.")
    if beta < 0:
        raise ValueError(
            f"{name} = {beta} is negative; an inverse temperature must be >= 0 "
            "(a negative beta turns minima into maxima and the Gibbs density is not normalisable)."
        )
    if beta == 0 and not allow_zero:
        raise ValueError(f"{name} = 0 means infinite temperature, where this quantity is undefined; pass beta > 0.")
    if math.isinf(beta) and not allow_inf:
        raise ValueError(f"{name} = inf is not allowed here; use method='map' for the zero-temperature limit.")
    return beta


def check_energy(
    value: torch.Tensor, *, name: str, expected_shape: torch.Size | tuple | None = None, finite: bool = True
) -> torch.Tensor:
    """Validate the value of an energy: a real floating tensor of the expected shape, finite unless
    ``finite=False`` (inside MCMC, where a non-finite energy is a rejected, divergent proposal)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"energy '{name}' must be a torch.Tensor, got {type(value).__name__}; "
            "return a tensor from your energy function."
        )
    if not value.dtype.is_floating_point:
        kind = "complex" if value.dtype.is_complex else "integer/bool"
        raise TypeError(f"energy '{name}' has {kind} dtype {value.dtype}; energies must be real floating tensors.")
    if expected_shape is not None and tuple(value.shape) != tuple(expected_shape):
        what = "a scalar" if len(expected_shape) == 0 else f"shape {tuple(expected_shape)}"
        raise ValueError(
            f"energy '{name}' has shape {tuple(value.shape)} where {what} is due (the batch shape of the site). "
            "Reduce per-element energies with .sum(-1) over event dimensions, or wrap batch dimensions in pyro.plate."
        )
    if finite and not bool(torch.isfinite(value).all()):
        bad = "NaN" if bool(torch.isnan(value).any()) else "infinite"
        raise NonFiniteEnergyError(
            f"energy '{name}' is {bad} at the current configuration. Check the energy for log(0), division by "
            "zero or overflow; if configurations are meant to be forbidden, constrain the site through its prior's "
            "support instead of returning inf."
        )
    return value


def _normal_scores(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Rank-normalised draws (Vehtari et al. 2021) along each row of ``cols`` (k, n): the normal quantile
    :math:`\Phi^{-1}((r - 3/8) / (n + 1/4))` of each draw's rank :math:`r`, ties sharing their average rank (rejected
    MCMC proposals repeat a draw exactly); and the sorted rows. One sort per row; the quantiles of the 2n - 1
    possible (half-integer) ranks are tabulated, so the normal quantile is never evaluated per draw."""
    from scipy.special import ndtri

    k, n = cols.shape
    order = np.argsort(cols, axis=1)
    ordered = np.take_along_axis(cols, order, axis=1)
    new = np.empty((k, n), dtype=bool)  # the first of a run of equal values; runs never cross rows
    new[:, 0] = True
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new[:, 1:])
    new = new.reshape(-1)
    first = np.flatnonzero(new)
    last = np.append(first[1:], k * n) - 1
    table = ndtri((np.arange(2 * n - 1) / 2.0 + 0.625) / (n + 0.25))  # rank r = (first + last) / 2 + 1, 0-based
    per_run = table[first % n + last % n]
    out = np.empty_like(cols)
    np.put_along_axis(out, order, per_run[np.cumsum(new) - 1].reshape(k, n), axis=1)
    return out, ordered


def _split(x: np.ndarray) -> np.ndarray:
    """Each chain of (chain, draw, k) as two: its first and last halves (the middle draw of an odd number dropped);
    a view, without a copy, for an even number of draws."""
    chains, n = x.shape[:2]
    half = n // 2
    if n % 2 == 0:
        return x.reshape((2 * chains, half) + x.shape[2:])
    return np.concatenate([x[:, :half], x[:, n - half :]], axis=1).reshape((2 * chains, half) + x.shape[2:])


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each chain at every lag, by FFT along the draw axis (axis 1)."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 2 ** int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n] / n


def _ess(acov: np.ndarray, chain_means: np.ndarray, n: int) -> float:
    r"""Effective sample size of one column from its per-chain autocovariances, Geyer's initial monotone sequence.

    :math:`\text{ESS} = CN / \hat\tau`, :math:`\hat\tau = -1 + 2\sum_t \hat\rho_t`, the
    autocorrelations :math:`\hat\rho_t` pooled over chains against the between-and-within variance
    :math:`\widehat{\text{var}}^+` and summed in pairs while positive and non-increasing
    (Geyer 1992; the convention of Stan and ArviZ).
    """
    chains = acov.shape[0]
    within = acov[:, 0].mean() * n / (n - 1.0)
    var_plus = within * (n - 1.0) / n + (chain_means.var(ddof=1) if chains > 1 else 0.0)
    rho = np.zeros(n)
    rho[0] = 1.0
    even, odd = 1.0, 1.0 - (within - acov[:, 1].mean()) / var_plus
    rho[1] = odd
    t = 1
    while t < n - 3 and even + odd > 0.0:  # initial positive sequence
        even = 1.0 - (within - acov[:, t + 1].mean()) / var_plus
        odd = 1.0 - (within - acov[:, t + 2].mean()) / var_plus
        if even + odd >= 0:
            rho[t + 1], rho[t + 2] = even, odd
        t += 2
    last = t - 2
    if even > 0:
        rho[last + 1] = even
    t = 1
    while t <= last - 2:  # initial monotone sequence
        if rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]:
            rho[t + 1] = rho[t + 2] = (rho[t - 1] + rho[t]) / 2.0
        t += 2
    total = chains * n
    tau = -1.0 + 2.0 * rho[: last + 1].sum() + rho[last + 1 : last + 2].sum()
    return float(total / max(tau, 1.0 / np.log10(total)))


def _rhat(x: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R-hat per column of (chain, draw, k)."""
    n = x.shape[1]
    within = x.var(axis=1, ddof=1, dtype=np.float64).mean(axis=0)
    between = n * x.mean(axis=1, dtype=np.float64).var(axis=0, ddof=1)
    return np.sqrt((between / within + n - 1) / n)


def classic_rhat(x) -> np.ndarray:
    """Split-R-hat of the raw draws per column of (chain, draw, k), without rank normalisation: cheap, for a first
    look (NaN for constant columns)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.atleast_1d(_rhat(_split(_as_columns(x))))


def _as_columns(x) -> np.ndarray:
    """Draws as (chain, draw, k), without a copy where they are floating already (reductions accumulate in
    float64)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return x[..., None] if x.ndim == 2 else x.reshape(x.shape[0], x.shape[1], -1)


def ess_bulk(x) -> np.ndarray | float:
    """Bulk effective sample size of draws (chain, draw) or, per column, (chain, draw, k): rank-normalised
    split chains. NaN for constant or too-short columns."""
    return _per_column(x, lambda c: rhat_and_ess(c)[1])


def split_rhat(x) -> np.ndarray | float:
    """Rank-normalised split-R-hat of draws (chain, draw) or per column of (chain, draw, k): the max of the
    bulk and the folded (tail) R-hat. NaN for constant or too-short columns."""
    return _per_column(x, lambda c: rhat_and_ess(c)[0])


def rhat_and_ess(x) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_rhat` and :func:`ess_bulk` per column of (chain, draw, k) at once, sharing the rank
    normalisation (the costly part with many draws). Many draws are split by columns over the CPU's cores (the
    sorts and FFTs release the GIL)."""
    cols = _as_columns(x)
    rhat, ess = np.full(cols.shape[-1], np.nan), np.full(cols.shape[-1], np.nan)
    flat = cols.reshape(-1, cols.shape[-1])
    ok = (cols.shape[1] >= 4) & (flat.max(axis=0) > flat.min(axis=0)) & np.isfinite(flat).all(axis=0)
    if ok.any():
        c = cols[..., ok]
        workers = min(_cores(), c.shape[-1], max(1, c.size // PARALLEL_SIZE))
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            parts = np.array_split(np.arange(c.shape[-1]), workers)
            with ThreadPoolExecutor(workers) as pool:
                done = list(pool.map(lambda j: _rhat_and_ess(c[..., j]), parts))
            rhat[ok], ess[ok] = np.concatenate([d[0] for d in done]), np.concatenate([d[1] for d in done])
        else:
            rhat[ok], ess[ok] = _rhat_and_ess(c)
    return rhat, ess


#: draws (chain x draw x column) above which :func:`rhat_and_ess` splits its columns over threads
PARALLEL_SIZE = 500_000


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _rhat_and_ess(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank-normalised split-R-hat (bulk and folded) and bulk-ESS of (chain, draw, k) columns that are not
    constant."""
    chains, draws, k = c.shape
    rows = np.ascontiguousarray(c.reshape(-1, k).T)
    scores, ordered = _normal_scores(rows)
    half = ordered.shape[1] // 2
    median = ordered[:, half] if ordered.shape[1] % 2 else 0.5 * (ordered[:, half - 1] + ordered[:, half])
    folded, _ = _normal_scores(np.abs(rows - median[:, None]))

    def columns(r: np.ndarray) -> np.ndarray:
        return _split(r.T.reshape(chains, draws, k))

    z = columns(scores)
    rhat = np.maximum(_rhat(z), _rhat(columns(folded)))
    acov, means = _autocovariance(z), z.mean(axis=1)
    return rhat, np.array([_ess(acov[..., j], means[:, j], z.shape[1]) for j in range(k)])


def _per_column(x, fn) -> np.ndarray | float:
    out = fn(x)
    return float(out[0]) if np.ndim(x) == 2 else out
