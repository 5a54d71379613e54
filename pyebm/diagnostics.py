"""Checks and clear errors: β, energy values, and MCMC convergence diagnostics.

Every check raises with a message saying what was wrong and what to do, so that a
bad energy never turns into a silent NaN further down the ladder.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch

__all__ = [
    "InferenceError",
    "ConvergenceWarning",
    "NonFiniteEnergyError",
    "check_beta",
    "check_energy",
    "ess_bulk",
    "split_rhat",
]


class InferenceError(RuntimeError):
    """An inference method failed: no convergence, a saddle, a diverging sampler."""


class ConvergenceWarning(UserWarning):
    """A method finished but its diagnostics (r_hat, divergences) ask for care."""


class NonFiniteEnergyError(ValueError):
    """An energy evaluated to NaN or ±inf (a ``ValueError``: the energy is bad at that input)."""


def check_beta(beta: float | torch.Tensor, *, allow_zero: bool = True, allow_inf: bool = False) -> float:
    """Validate an inverse temperature β and return it as a float.

    Parameters
    ----------
    beta : float
        The inverse temperature in p_β(x) ∝ exp(−β E(x)).
    allow_zero : bool
        β = 0 is meaningful for tempering (the prior alone) but not for a free energy.
    allow_inf : bool
        β = ∞ is meaningful for a free energy (the minimum), not for a factor.
    """
    if isinstance(beta, torch.Tensor):
        if beta.numel() != 1:
            raise ValueError(f"beta must be a scalar, got a tensor of shape {tuple(beta.shape)}.")
        beta = beta.item()
    if isinstance(beta, bool) or not isinstance(beta, Real):
        raise TypeError(f"beta must be a real number, got {type(beta).__name__}.")
    beta = float(beta)
    if math.isnan(beta):
        raise ValueError("beta is NaN; pass an inverse temperature beta >= 0.")
    if beta < 0:
        raise ValueError(
            f"beta = {beta} is negative; an inverse temperature must be >= 0 "
            "(a negative beta turns minima into maxima and the Gibbs density is not normalisable)."
        )
    if beta == 0 and not allow_zero:
        raise ValueError("beta = 0 means infinite temperature, where this quantity is undefined; pass beta > 0.")
    if math.isinf(beta) and not allow_inf:
        raise ValueError("beta = inf is not allowed here; use method='map' for the zero-temperature limit.")
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


def _rank_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rank-normalise draws of shape (chain, draw) jointly over all chains (Vehtari et al. 2021)."""
    flat = x.reshape(-1)
    ranks = torch.empty_like(flat, dtype=torch.float64)
    ranks[flat.argsort()] = torch.arange(1, flat.numel() + 1, dtype=torch.float64)
    # average ranks of ties so constant chains do not look mixed
    _, inverse = torch.unique(flat, return_inverse=True)
    ranks = torch.zeros_like(ranks).index_add_(0, inverse, ranks)[inverse] / torch.bincount(inverse)[inverse]
    z = torch.special.ndtri((ranks - 0.375) / (flat.numel() + 0.25))
    return z.reshape(x.shape)


def _split(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[1] // 2
    return torch.cat([x[:, :half], x[:, x.shape[1] - half :]], dim=0)


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each chain (rows) at every lag, by FFT."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    size = 2 ** int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(f * np.conj(f), n=size, axis=1)[:, :n] / n


def _ess(x: np.ndarray) -> float:
    r"""Effective sample size of draws (chain, draw) with Geyer's initial monotone sequence.

    :math:`\text{ESS} = CN / \hat\tau`, :math:`\hat\tau = -1 + 2\sum_t \hat\rho_t`, the
    autocorrelations :math:`\hat\rho_t` pooled over chains against the between-and-within variance
    :math:`\widehat{\text{var}}^+` and summed in pairs while positive and non-increasing
    (Geyer 1992; the convention of Stan and ArviZ).
    """
    chains, n = x.shape
    acov = _autocovariance(x)
    within = acov[:, 0].mean() * n / (n - 1.0)
    var_plus = within * (n - 1.0) / n + (x.mean(axis=1).var(ddof=1) if chains > 1 else 0.0)
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


def ess_bulk(x: torch.Tensor) -> float:
    """Bulk effective sample size of draws shaped (chain, draw): rank-normalised split chains."""
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.shape[1] < 4 or float(x.std()) == 0.0:
        return float("nan")
    return _ess(_split(_rank_normalize(x)).numpy())


def split_rhat(x: torch.Tensor) -> float:
    """Rank-normalised split-R̂ of draws shaped (chain, draw): max of bulk and folded (tail) R̂."""
    from pyro.ops.stats import split_gelman_rubin

    x = torch.as_tensor(x, dtype=torch.float64)
    if x.shape[1] < 4 or float(x.std()) == 0.0:
        return float("nan")
    bulk = split_gelman_rubin(_rank_normalize(x), chain_dim=0, sample_dim=1)
    folded = split_gelman_rubin(_rank_normalize((x - x.median()).abs()), chain_dim=0, sample_dim=1)
    return float(torch.maximum(bulk, folded))
