r"""Laplace: a Gaussian at the minimum, with the curvature of the energy as its precision.

In the unconstrained space, with :math:`U` the potential (Jacobian included) and
:math:`\hat u = \arg\min U`, :math:`H = \nabla^2 U(\hat u)`:

.. math:: q(u) = \mathcal N(\hat u, H^{-1}), \qquad
          \log Z \approx -U(\hat u) + \tfrac D2 \log 2\pi - \tfrac12 \log\det H .

Both are exact for a quadratic energy under a flat prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch

from ..diagnostics import InferenceError
from .approximations import UnconstrainedGaussian
from .map import MAP, _optim_diagnostics
from .registry import register
from .result import Posterior

__all__ = ["Laplace", "HESSIANS"]


def full_hessian(U: Callable, u: torch.Tensor) -> torch.Tensor:
    """Exact Hessian by vectorised reverse-over-reverse autograd (one forward, D vmapped backward passes)."""
    with pyro.validation_enabled(False):
        H = torch.autograd.functional.hessian(U, u.detach(), vectorize=True)
    return 0.5 * (H + H.T)


def diag_hessian(U: Callable, u: torch.Tensor) -> torch.Tensor:
    """The diagonal of the exact Hessian as a diagonal matrix (a mean-field Laplace)."""
    return torch.diag(full_hessian(U, u).diagonal())


#: Hessian structure -> function (U, u) -> (D, D) matrix
HESSIANS: dict[str, Callable] = {"full": full_hessian, "diag": diag_hessian}


@register("laplace")
@dataclass
class Laplace(MAP):
    r"""Laplace approximation: MAP plus the curvature at the minimum.

    Takes the MAP settings, plus ``hessian``: ``"full"`` (exact, default) or ``"diag"`` (its
    diagonal only: a mean-field Gaussian). The minimum is that of the unconstrained potential
    (Jacobian included), the point at which a Gaussian in that space is fitted. A Hessian that is
    not positive definite there (a saddle, or a flat direction) raises :class:`pyebm.InferenceError`.
    """

    hessian: str = "full"

    def run(self, model, args, kwargs, progress: bool) -> Posterior:
        if self.hessian not in HESSIANS:
            raise ValueError(f"unknown hessian {self.hessian!r}; choose one of {sorted(HESSIANS)}.")
        space, res = self._minimize(model, args, kwargs, progress, jacobian=True)
        U = space.potential(jacobian=True)
        H = HESSIANS[self.hessian](U, res.u)
        if not bool(torch.isfinite(H).all()):
            raise InferenceError("Laplace: the Hessian at the minimum is not finite; the energy is not twice "
                                 "differentiable there.")
        evals, evecs = torch.linalg.eigh(H)
        floor = (1e-10 if H.dtype == torch.float64 else 1e-5) * max(float(evals.abs().max()), 1.0)
        if float(evals[0]) <= floor:
            kind = "a saddle point" if float(evals[0]) < -floor else "a flat direction"
            raise InferenceError(
                f"Laplace: the Hessian at the 'minimum' is not positive definite (smallest eigenvalue "
                f"{float(evals[0]):.3g} along unconstrained direction {evecs[:, 0].numpy().round(3).tolist()}): "
                f"the optimiser stopped at {kind}, where no Gaussian fits. Start elsewhere (`init`), add a prior "
                "that curves the direction, or sample with method='nuts'."
            )
        chol = torch.linalg.cholesky(H)
        cov = torch.cholesky_inverse(chol)
        scale_tril = torch.linalg.cholesky(cov)
        D = res.u.numel()
        log_z = -res.energy + 0.5 * D * math.log(2 * math.pi) - float(chol.diagonal().log().sum())
        mode = space.constrain(res.u)
        diagnostics = _optim_diagnostics(res)
        diagnostics["hessian"] = H
        return Posterior(
            "laplace", UnconstrainedGaussian(space, res.u, scale_tril),
            site_shapes={s.name: s.shape for s in space.sites}, mode=mode, log_evidence=log_z,
            diagnostics=diagnostics,
        )
