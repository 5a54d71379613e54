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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..diagnostics import InferenceError, warn

__all__ = ["Evidence", "tune_prior_scales"]


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
        Stop when every scale changes by less than this fraction.
    """

    init: float = 0.1
    per_latent: bool = False
    rounds: int = 20
    rtol: float = 1e-4

    def __post_init__(self) -> None:
        if not (math.isfinite(self.init) and self.init > 0):
            raise ValueError(f"Evidence: init must be a finite number > 0, got {self.init!r}.")
        if int(self.rounds) != self.rounds or self.rounds < 1:
            raise ValueError(f"Evidence: rounds must be an int >= 1, got {self.rounds!r}.")


def tune_prior_scales(fit: Callable[[dict], object], means: dict[str, torch.Tensor], spec: Evidence):
    """Alternate ``fit(scales) -> Laplace Posterior`` with the evidence-maximising scales at its mode (``means``: the
    prior's centres); returns the last posterior, with ``diagnostics["prior_scale"]`` and
    ``diagnostics["log_evidence_path"]`` (one per fit)."""
    scales = dict.fromkeys(means, float(spec.init))
    path = []
    for _ in range(spec.rounds):
        post = fit(scales)
        path.append(post.log_evidence)
        new = _best_scales(post, means, scales, spec.per_latent)
        done = all(abs(new[k] / scales[k] - 1) < spec.rtol for k in scales)
        scales = new
        if done:
            break
    else:
        warn(f"ttt.adapt(prior_scale=Evidence(...)): the scales still moved after {spec.rounds} rounds (now "
             f"{ {k: round(v, 4) for k, v in scales.items()} }); raise rounds.")
    post = fit(scales)
    path.append(post.log_evidence)
    post.diagnostics["prior_scale"] = scales
    post.diagnostics["log_evidence_path"] = path
    return post


def _best_scales(post, means: dict[str, torch.Tensor], scales: dict[str, float], per_latent: bool) -> dict:
    approx = post.approximation
    order = [s.name for s in approx.layout.sites]
    theta = approx.loc.detach().double()
    theta0 = torch.cat([means[k].reshape(-1) for k in order]).double()
    group = torch.cat([torch.full((means[k].numel(),), i if per_latent else 0) for i, k in enumerate(order)])
    delta0 = torch.cat([torch.full((means[k].numel(),), scales[k] ** -2.0) for k in order]).double()
    d2 = (theta - theta0) ** 2
    logdet = logdet_with_prior(approx.structure, delta0)
    first = order if per_latent else order[:1]  # one log precision per group, started at its current value
    rho = torch.tensor([-2 * math.log(scales[k]) for k in first], dtype=torch.float64, requires_grad=True)

    def negative_evidence() -> torch.Tensor:
        delta = torch.exp(rho)[group]
        value = logdet(delta)
        if not bool(torch.isfinite(value)):  # precision too small for a non-convex energy: no Gaussian there
            return torch.tensor(float("inf"), dtype=delta.dtype)
        return -(0.5 * (torch.log(delta) - delta * d2).sum() - 0.5 * value)

    opt = torch.optim.LBFGS([rho], lr=1, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = negative_evidence()
        if torch.isfinite(value):
            value.backward()
        return value

    opt.step(closure)
    if not bool(torch.isfinite(negative_evidence())) or not bool(torch.isfinite(rho).all()):
        raise InferenceError("prior_scale=Evidence(...): the evidence has no maximum at this mode (the scales ran "
                             "off); give a fixed prior_scale.")
    best = torch.exp(-0.5 * rho.detach())
    return {k: float(best[i if per_latent else 0]) for i, k in enumerate(order)}


def logdet_with_prior(structure, delta0: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""``delta -> log det(H - diag(delta0) + diag(delta))``, differentiable in ``delta``: Laplace's precision with
    the prior's diagonal curvature ``delta0`` swapped for ``delta`` (per coordinate; ``inf`` where not positive
    definite), in the structure's own form: dense (a Cholesky factorisation), diagonal, K-FAC (eigenvalues of each
    block's factors plus the block's one prior precision) or low rank (a ``k x k`` determinant)."""
    from ..inference.curvature import DensePrecision, Diagonal
    from ..inference.factored import Kronecker, LowRank

    inf = torch.tensor(float("inf"), dtype=torch.float64)
    if isinstance(structure, DensePrecision):
        H_L = structure.precision.detach().double() - torch.diag(delta0)

        def dense(delta):
            chol, info = torch.linalg.cholesky_ex(H_L + torch.diag(delta))
            return inf if int(info) != 0 else 2 * torch.log(torch.diagonal(chol)).sum()

        return dense
    if isinstance(structure, Diagonal):
        h_L = 1 / structure.variance().detach().double() - delta0

        def diagonal(delta):
            h = h_L + delta
            return inf if bool((h <= 0).any()) else torch.log(h).sum()

        return diagonal
    if isinstance(structure, LowRank):
        U, s = structure.U.detach().double(), structure.s.detach().double().clamp_min(0)
        US = U * s.sqrt()

        def low_rank(delta):
            k = US.T @ (US / delta[:, None])
            return torch.log(delta).sum() + torch.logdet(torch.eye(len(s), dtype=k.dtype) + k)

        return low_rank
    if isinstance(structure, Kronecker):
        parts = []
        for _, index, B, A, prior in structure.blocks:
            idx = torch.as_tensor(index)
            if torch.is_tensor(prior):  # a dense block with a diagonal prior of its own
                parts.append(("dense", idx, B.detach().double()))
            elif A is None:
                parts.append(("eig", idx, torch.linalg.eigvalsh(B.detach().double()).clamp_min(0)))
            else:
                lb, la = torch.linalg.eigvalsh(B.detach().double()), torch.linalg.eigvalsh(A.detach().double())
                parts.append(("eig", idx, (lb.clamp_min(0)[:, None] * la.clamp_min(0)[None, :]).reshape(-1)))

        def kronecker(delta):
            total = torch.zeros((), dtype=torch.float64)
            for kind, idx, m in parts:
                if kind == "dense":
                    chol, info = torch.linalg.cholesky_ex(m + torch.diag(delta[idx]))
                    if int(info) != 0:
                        return inf
                    total = total + 2 * torch.log(torch.diagonal(chol)).sum()
                else:  # one prior precision per block (the isotropic prior K-FAC needs)
                    total = total + torch.log(m + delta[idx][0]).sum()
            return total

        return kronecker
    raise ValueError(f"prior_scale=Evidence(...) cannot re-weigh the prior in a {type(structure).__name__} "
                     "precision; use method='laplace' with hessian 'full', 'ggn' (any structure) or 'diag'.")
