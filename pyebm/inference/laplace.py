r"""Laplace: a Gaussian at the minimum, with the curvature of the energy as its precision.

In the unconstrained space, with :math:`U` the potential (Jacobian included) and
:math:`\hat u = \arg\min U`, :math:`H = \nabla^2 U(\hat u)`:

.. math:: q(u) = \mathcal N(\hat u, H^{-1}), \qquad
          \log Z \approx -U(\hat u) + \tfrac D2 \log 2\pi - \tfrac12 \log\det H .

Both are exact for a quadratic energy under a flat prior. The curvature comes from a provider in a structure
(:mod:`pyebm.inference.curvature`): ``"full"`` (the exact dense Hessian) or ``"diag"`` (its diagonal by
Hessian-vector products, memory O(D)).
"""

from __future__ import annotations

from dataclasses import dataclass

from .approximations import Gaussian, to_numpy
from .curvature import PROVIDERS, gaussian_log_evidence
from .map import MAP, _labels, _single, find_mode, optim_diagnostics
from .registry import register
from .result import Posterior

__all__ = ["Laplace"]


@register("laplace")
@dataclass
class Laplace(MAP):
    r"""Laplace approximation: MAP plus the curvature at the minimum.

    Takes the MAP settings, plus ``hessian``: ``"full"`` (exact, default) or ``"diag"`` (its
    diagonal only: a mean-field Gaussian, never a D x D matrix). The minimum is that of the unconstrained potential
    (Jacobian included), the point at which a Gaussian in that space is fitted. A Hessian that is not positive
    definite there (a saddle, or a flat direction) raises :class:`pyebm.InferenceError`; an ill-conditioned but
    positive definite one is accepted (a standard deviation of 7071 is a fine answer).
    """

    hessian: str = "full"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hessian not in PROVIDERS:
            raise ValueError(f"Laplace: unknown hessian {self.hessian!r}; choose one of {sorted(PROVIDERS)}.")

    def run(self, backend, model, args, kwargs, seed, progress) -> Posterior:
        potential, res = find_mode(self, backend, model, args, kwargs, seed, progress, jacobian=True,
                                     verify=self.hessian == "full")
        structure = PROVIDERS[self.hessian](lambda v: potential(v, True), res.u, potential.ops, "Laplace",
                                            labels=_labels(potential), hessian=res.hessian).index(0)
        log_z = float(to_numpy(gaussian_log_evidence(res.value[0], structure, potential.dim)))
        view = backend.model_view(model, args, kwargs, potential)
        diagnostics = optim_diagnostics(res)
        diagnostics["hessian"] = structure.precision_form()
        return Posterior(
            "laplace", Gaussian(potential, res.u[0], structure), site_shapes=view.site_shapes,
            mode=_single(potential.constrain(res.u[0]), view, seed), log_evidence=log_z, diagnostics=diagnostics,
            view=view,
        )
