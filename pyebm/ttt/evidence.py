r"""Prior scales of the adapted weights chosen by the Laplace evidence, without validation data.

For the prior :math:`\mathcal N(\theta_0, \mathrm{diag}(\delta)^{-1})` (precisions :math:`\delta = s^{-2}`, one per
latent or one for all) and the energy :math:`L(\theta) = \beta\sum_i E(\theta; x_i)`, Laplace's evidence at the mode
:math:`\hat\theta` is

.. math:: \log Z(\delta) \approx -L(\hat\theta) + \tfrac12\sum_k\bigl[\log\delta_k - \delta_k(\hat\theta_k -
          \theta_{0,k})^2\bigr] - \tfrac12\log\det\bigl(H_L + \mathrm{diag}\,\delta\bigr),

with :math:`H_L` the energy's Hessian at the mode. Holding :math:`\hat\theta` and :math:`H_L` fixed, this is a smooth
function of :math:`\log\delta`, maximised by L-BFGS; the weights are then re-fitted at the new scales and the two steps
alternate until the scales settle (MacKay 1992's evidence framework; Immer et al. 2021 tune prior precisions the same
way, at a fixed network). For a model Gaussian in the weights :math:`H_L` does not move with :math:`\hat\theta` and the
fixed point is the exact evidence maximum.

With ``Evidence(noise=True)`` and a squared-error energy :math:`\tfrac12\|f_\theta(x) - y\|^2/\sigma^2`
(:func:`pyebm.ttt.supervised`), the observation noise is tuned too: the energy's curvature scales as
:math:`1/\sigma^2` (exactly, for the Hessian and the GGN alike), so with the residual sum of squares :math:`S` at the
mode and :math:`n` observed numbers

.. math:: \log Z(\delta, \sigma) = -\frac{S}{2\sigma^2} - n\log\sigma - \tfrac n2\log 2\pi
          + \tfrac12\sum_k\bigl[\log\delta_k - \delta_k(\hat\theta_k - \theta_{0,k})^2\bigr]
          - \tfrac12\log\det\Bigl(\frac{\sigma_0^2}{\sigma^2}H_L + \mathrm{diag}\,\delta\Bigr)

(:math:`H_L` taken at noise :math:`\sigma_0`), maximised jointly in :math:`(\log\delta, \log\sigma)`. The
structure of the curvature is kept: dense, diagonal, K-FAC or low rank (:func:`logdet_with_prior`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..diagnostics import InferenceError, warn

__all__ = ["Evidence", "Residuals", "tune_prior_scales", "logdet_with_prior"]


@dataclass(frozen=True)
class Evidence:
    """``prior_scale=Evidence(...)`` in :func:`pyebm.ttt.adapt`: choose the prior scale(s) by the Laplace evidence.

    Parameters
    ----------
    init : float
        The starting scale.
    per_latent : bool
        One scale per latent name (per layer), or one for all.
    rounds : int
        Most alternations of re-fitting the weights and re-tuning the scales.
    rtol : float
        Stop when every scale (and the noise) changes by less than this fraction.
    noise : bool
        Tune the observation noise of a squared-error energy (``ttt.supervised("squared", noise)``, whose ``noise`` is
        the start) as well; the chosen value is in ``post.diagnostics["noise"]``.
    """

    init: float = 0.1
    per_latent: bool = False
    rounds: int = 20
    rtol: float = 1e-4
    noise: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.init) and self.init > 0):
            raise ValueError(f"Evidence: init must be a finite number > 0, got {self.init!r}.")
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise ValueError(f"Evidence: rounds must be an int >= 1, got {self.rounds!r}.")


@dataclass(frozen=True)
class Residuals:
    """The Gaussian likelihood's data at the mode, for tuning its noise: the residual sum of squares, how many numbers
    were observed, and the noise the curvature was computed at."""

    sse: float
    count: int
    noise: float

    @classmethod
    def of_energy(cls, energy: float, count: int, noise: float) -> Residuals:
        r"""From a squared-error energy :math:`\tfrac12 \mathrm{SSE} / \sigma^2` summed over the data, at ``noise``."""
        return cls(float(2 * noise**2 * energy), int(count), noise)

    def log_normaliser(self, noise: float) -> float:
        r""":math:`-n\log\sigma - \tfrac n2\log 2\pi`, which the energy leaves out."""
        return -self.count * (math.log(noise) + 0.5 * math.log(2 * math.pi))


def tune_prior_scales(fit: Callable, means: dict[str, torch.Tensor], spec: Evidence,
                      residuals: Callable | None = None, noise: float | None = None):
    """Alternate ``fit(scales, noise) -> Laplace Posterior`` with the evidence-maximising scales (and noise, where
    ``residuals(post, noise) -> Residuals`` is given) at its mode (``means``: the prior's centres); returns the last
    posterior, with ``diagnostics["prior_scale"]``, ``["noise"]`` (tuned) and ``["log_evidence_path"]`` (one per fit;
    with the noise tuned, each includes the likelihood's normaliser, which depends on it)."""
    scales = dict.fromkeys(means, float(spec.init))
    path = []

    def record(post):
        extra = residuals(post, noise).log_normaliser(noise) if residuals else 0.0
        path.append(post.log_evidence + extra)

    for _ in range(spec.rounds):
        post = fit(scales, noise)
        record(post)
        data = residuals(post, noise) if residuals else None
        new, new_noise = maximise_evidence(post, means, scales, spec.per_latent, data)
        done = all(abs(new[k] / scales[k] - 1) < spec.rtol for k in scales) and (
            new_noise is None or abs(new_noise / noise - 1) < spec.rtol)
        scales, noise = new, new_noise if residuals else noise
        if done:
            break
    else:
        warn(f"ttt.adapt(prior_scale=Evidence(...)): the scales still moved after {spec.rounds} rounds (now "
             f"{ {k: round(v, 4) for k, v in scales.items()} }); raise rounds.")
    post = fit(scales, noise)
    record(post)
    post.diagnostics["prior_scale"] = scales
    if residuals:
        post.diagnostics["noise"] = noise
    post.diagnostics["log_evidence_path"] = path
    return post


def maximise_evidence(post, means: dict[str, torch.Tensor], scales: dict[str, float], per_latent: bool,
                      data: Residuals | None) -> tuple[dict, float | None]:
    """The scales (and noise, with ``data``) that maximise the evidence at this posterior's mode and curvature."""
    approx = post.approximation
    order = [s.name for s in approx.layout.sites]
    theta = approx.loc.detach().double()
    theta0 = torch.cat([means[k].reshape(-1) for k in order]).double().to(theta.device)
    group = torch.cat([torch.full((means[k].numel(),), i if per_latent else 0) for i, k in enumerate(order)])
    delta0 = torch.cat([torch.full((means[k].numel(),), scales[k] ** -2.0) for k in order]).double()
    d2 = (theta - theta0).cpu() ** 2
    logdet = logdet_with_prior(approx.structure, delta0)
    first = order if per_latent else order[:1]  # one log precision per group, started at its current value
    rho = torch.tensor([-2 * math.log(scales[k]) for k in first], dtype=torch.float64, requires_grad=True)
    tau = torch.tensor(math.log(data.noise) if data else 0.0, dtype=torch.float64, requires_grad=data is not None)

    def negative_evidence() -> torch.Tensor:
        delta = torch.exp(rho)[group]
        value = logdet(delta, torch.exp(2 * (math.log(data.noise) - tau)) if data else 1.0)
        if not bool(torch.isfinite(value)):  # precision too small for a non-convex energy: no Gaussian there
            return torch.tensor(float("inf"), dtype=delta.dtype)
        fit = -data.sse / 2 * torch.exp(-2 * tau) - data.count * tau if data else 0.0
        return -(fit + 0.5 * (torch.log(delta) - delta * d2).sum() - 0.5 * value)

    params = [rho, tau] if data else [rho]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = negative_evidence()
        if torch.isfinite(value):
            value.backward()
        return value

    opt.step(closure)
    if not bool(torch.isfinite(negative_evidence())) or not all(bool(torch.isfinite(p).all()) for p in params):
        raise InferenceError("prior_scale=Evidence(...): the evidence has no maximum at this mode (the scales ran "
                             "off); give a fixed prior_scale.")
    best = torch.exp(-0.5 * rho.detach())
    return ({k: float(best[i if per_latent else 0]) for i, k in enumerate(order)},
            float(torch.exp(tau.detach())) if data else None)


def logdet_with_prior(structure, delta0: torch.Tensor) -> Callable:
    r"""``(delta, scale) -> log det(scale (H - diag(delta0)) + diag(delta))``, differentiable in both: Laplace's
    precision with the prior's diagonal curvature ``delta0`` swapped for ``delta`` (per coordinate; ``inf`` where not
    positive definite) and the rest scaled (a likelihood's :math:`1/\sigma^2`), in the structure's own form: dense (a Cholesky factorisation), diagonal, K-FAC (eigenvalues of each
    block's factors plus the block's one prior precision) or low rank (a ``k x k`` determinant)."""
    from ..inference.curvature import DensePrecision, Diagonal
    from ..inference.factored import Kronecker, LowRank

    inf = torch.tensor(float("inf"), dtype=torch.float64)
    if isinstance(structure, DensePrecision):
        H_L = structure.precision.detach().double().cpu() - torch.diag(delta0)

        def dense(delta, scale=1.0):
            chol, info = torch.linalg.cholesky_ex(scale * H_L + torch.diag(delta))
            return inf if int(info) != 0 else 2 * torch.log(torch.diagonal(chol)).sum()

        return dense
    if isinstance(structure, Diagonal):
        h_L = 1 / structure.variance().detach().double().cpu() - delta0

        def diagonal(delta, scale=1.0):
            h = scale * h_L + delta
            return inf if bool((h <= 0).any()) else torch.log(h).sum()

        return diagonal
    if isinstance(structure, LowRank):
        U, s = structure.U.detach().double().cpu(), structure.s.detach().double().cpu().clamp_min(0)
        US = U * s.sqrt()

        def low_rank(delta, scale=1.0):
            k = scale * US.T @ (US / delta[:, None])
            return torch.log(delta).sum() + torch.logdet(torch.eye(len(s), dtype=k.dtype) + k)

        return low_rank
    if isinstance(structure, Kronecker):
        parts = []
        for _, index, B, A, prior in structure.blocks:
            idx, B = torch.as_tensor(index).cpu(), B.detach().double().cpu()
            if torch.is_tensor(prior):  # a dense block with a diagonal prior of its own
                parts.append(("dense", idx, B))
            elif A is None:
                parts.append(("eig", idx, torch.linalg.eigvalsh(B).clamp_min(0)))
            else:
                lb, la = torch.linalg.eigvalsh(B), torch.linalg.eigvalsh(A.detach().double().cpu())
                parts.append(("eig", idx, (lb.clamp_min(0)[:, None] * la.clamp_min(0)[None, :]).reshape(-1)))

        def kronecker(delta, scale=1.0):
            total = torch.zeros((), dtype=torch.float64)
            for kind, idx, m in parts:
                if kind == "dense":
                    chol, info = torch.linalg.cholesky_ex(scale * m + torch.diag(delta[idx]))
                    if int(info) != 0:
                        return inf
                    total = total + 2 * torch.log(torch.diagonal(chol)).sum()
                else:  # one prior precision per block (the isotropic prior K-FAC needs)
                    total = total + torch.log(scale * m + delta[idx][0]).sum()
            return total

        return kronecker
    raise ValueError(f"prior_scale=Evidence(...) cannot re-weigh the prior in a {type(structure).__name__} "
                     "precision; use method='laplace' with hessian 'full', 'ggn' (any structure) or 'diag'.")
