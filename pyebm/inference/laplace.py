r"""Laplace: a Gaussian at the minimum, with the curvature of the energy as its precision.

In the unconstrained space, with :math:`U` the potential (Jacobian included) and
:math:`\hat u = \arg\min U`, :math:`H = \nabla^2 U(\hat u)`:

.. math:: q(u) = \mathcal N(\hat u, H^{-1}), \qquad
          \log Z \approx -U(\hat u) + \tfrac D2 \log 2\pi - \tfrac12 \log\det H .

Both are exact for a quadratic energy under a flat prior. The curvature is the exact Hessian, dense or its diagonal
(:mod:`pyebm.inference.curvature`), or the generalised Gauss-Newton, dense, diagonal, Kronecker-factored or low
rank (:mod:`pyebm.inference.gauss_newton`, :mod:`pyebm.inference.kfac`, :mod:`pyebm.inference.factored`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..diagnostics import warn
from .approximations import Gaussian, to_numpy
from .curvature import PROVIDERS, gaussian_log_evidence
from .map import MAP, _labels, _single, find_mode, optim_diagnostics
from .registry import register
from .result import Posterior

__all__ = ["Laplace"]

#: the curvatures Laplace takes: the exact Hessian ("full", or its "diag"), the generalised Gauss-Newton ("ggn"), and
#: the GGN's Kronecker-factored and low-rank structures by their own names
HESSIANS = ("full", "diag", "ggn", "fisher", "kron", "lowrank")

#: the structures of the GGN (the exact Hessian comes "full" or "diag")
STRUCTURES = ("full", "diag", "kron", "lowrank")

#: posterior sds from stationary above which a post-hoc point (``at=``) warns
AT_TOLERANCE = 0.1


@register("laplace")
@dataclass
class Laplace(MAP):
    r"""Laplace approximation: MAP plus the curvature at the minimum.

    Takes the MAP settings, plus ``hessian``: ``"full"`` (exact, default), ``"diag"`` (its
    diagonal only: a mean-field Gaussian, never a D x D matrix, by D Hessian-vector products) or ``"ggn"`` (the
    generalised Gauss-Newton of a Pyro model's observations of a known family, Normal, Bernoulli, Categorical or
    Poisson: their Fisher information pulled back through the Jacobian of their natural parameters, exact curvature
    for the rest; positive definite wherever the prior is proper, the exact Hessian for a model linear in the latents;
    see :mod:`pyebm.inference.gauss_newton`; ``"fisher"`` is the same matrix: for these links, the natural parameters,
    the GGN is the Fisher information), and for the GGN a ``structure``: ``"full"`` (dense, default), ``"diag"``
    (its diagonal, from squares of Jacobian rows, or of ``nn.Linear`` layers' per-example pullbacks: never D x D),
    ``"kron"`` (K-FAC: Kronecker factors per ``nn.Linear`` or ``nn.Conv2d`` weight, dense bias blocks,
    :mod:`pyebm.inference.kfac`) or ``"lowrank"`` (the top ``rank`` eigenpairs of the data's GGN plus the prior's
    diagonal); ``hessian="kron"`` and ``hessian="lowrank"`` are short for the GGN in those structures. ``subset``: a
    site name, a list of names or a predicate on names, the sites whose Gaussian is taken, the others held at the mode
    (or at ``at``): the conditional posterior of the subset, as a last-layer or subnetwork Laplace does
    (``log_evidence`` is then the subset's, the others fixed); and ``at``: a dict of site values (constrained) at
    which to take the curvature as given, with no optimisation (post-hoc Laplace at trained weights). The gradient
    there is checked: a point more than 0.1 posterior sds from stationary (the Newton decrement
    :math:`\sqrt{g^\top H^{-1} g}`, in ``post.diagnostics["distance"]``) warns, since the Gaussian is then not
    centred at a mode. The minimum is that of the unconstrained potential
    (Jacobian included), the point at which a Gaussian in that space is fitted. A Hessian that is not positive
    definite there (a saddle, or a flat direction) raises :class:`pyebm.InferenceError`; an ill-conditioned but
    positive definite one is accepted (a standard deviation of 7071 is a fine answer).
    """

    hessian: str = "full"
    at: dict | None = None
    subset: str | list | Callable | None = None
    structure: str | None = None
    rank: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hessian not in HESSIANS:
            raise ValueError(f"Laplace: unknown hessian {self.hessian!r}; choose one of {list(HESSIANS)}.")
        if self.structure is not None and self.structure not in STRUCTURES:
            raise ValueError(f"Laplace: unknown structure {self.structure!r}; choose one of {list(STRUCTURES)}.")
        self.curvature()  # refuse impossible pairs now
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"Laplace: rank must be an int >= 1, got {self.rank!r}.")
        if not (self.subset is None or callable(self.subset) or isinstance(self.subset, (str, list, tuple))):
            raise TypeError("Laplace: subset must be a site name, a list of names or a predicate name -> bool, got "
                            f"{type(self.subset).__name__}.")
        if self.at is not None:
            if not isinstance(self.at, dict):
                raise TypeError(f"Laplace: at must be a dict of site values, got {type(self.at).__name__}.")
            if self.init is not None:
                raise ValueError("Laplace: give either at= (the curvature there, no optimisation) or init= (where "
                                 "the optimisation starts), not both.")

    def curvature(self) -> tuple[str, str]:
        """``(curvature, structure)``: ``("exact" | "ggn", "full" | "diag" | "kron" | "lowrank")`` from ``hessian``
        and ``structure`` (``hessian="diag"`` is the exact Hessian's diagonal; ``"kron"`` and ``"lowrank"`` are the
        GGN in that structure)."""
        named = {"full": ("exact", "full"), "diag": ("exact", "diag"), "ggn": ("ggn", "full"), "fisher": ("ggn", "full"),
                 "kron": ("ggn", "kron"), "lowrank": ("ggn", "lowrank")}[self.hessian]
        if self.structure is None or self.structure == named[1]:
            return named
        if self.hessian in ("ggn", "fisher"):
            return "ggn", self.structure
        if self.hessian == "full" and self.structure == "diag":
            return "exact", "diag"
        raise ValueError(f"Laplace: hessian={self.hessian!r} with structure={self.structure!r} is not a curvature "
                         "pyebm computes: K-FAC and low rank are structures of the generalised Gauss-Newton "
                         "(hessian='ggn', structure='kron' | 'lowrank' | 'diag' | 'full'); the exact Hessian comes "
                         "'full' or 'diag'.")

    def refusals(self, backend: str) -> list[str]:
        out = super().refusals(backend)
        if backend != "pyro" and self.curvature()[0] == "ggn":
            out.append(f"hessian={self.hessian!r} reads the observation sites of a Pyro trace (the generalised "
                       "Gauss-Newton); use the Pyro backend, or hessian='full'.")
        return out

    def run(self, backend, model, args, kwargs, seed, progress) -> Posterior:
        curvature, form = self.curvature()
        run = found = None  # the model's run at a given point, which the GGN reads
        if self.at is None:
            potential, res = find_mode(self, backend, model, args, kwargs, seed, progress, jacobian=True,
                                         verify=(curvature, form) == ("exact", "full"))
            u, energy, hessian, diagnostics = res.u, res.value[0], res.hessian, optim_diagnostics(res)
        else:  # the GGN of a given point reads the run of the model that builds its potential, where it can
            from .gauss_newton import given_point_run

            found = given_point_run(model, args, kwargs, self.at) if curvature == "ggn" and self.subset is None else None
            potential, run = found or (backend.potential(model, args, kwargs, init=self.at, what="Laplace", seed=seed),
                                       None)
            missing = sorted(set(potential.names()) - set(self.at))
            if missing:
                raise ValueError(f"Laplace: at= gives no value for site(s) {missing}; post-hoc Laplace needs the "
                                 "whole point (e.g. the trained values of every latent site).")
            u, hessian = potential.init[None], None
        if self.subset is not None:
            potential, u, hessian = _subset(self.subset, potential, u, hessian)
        ggn_sites = at = None
        if curvature == "ggn":
            from .gauss_newton import gauss_newton

            structure, ggn_sites, at = gauss_newton(model, args, kwargs, potential, u[0], structure=form,
                                                    rank=self.rank, labels=_labels(potential),
                                                    value=self.at is not None, run=run)
        else:
            structure = PROVIDERS[form](lambda v: potential(v, True), u, potential.ops, "Laplace",
                                        labels=_labels(potential), hessian=hessian).index(0)
        if self.at is not None:  # the potential and its gradient there: from the GGN's run of the model, or anew
            energy, grad = at or potential.value_and_grad(True)(u)
            energy = energy[0]
            diagnostics = _stationarity(structure, grad[0], float(to_numpy(energy)))
        if ggn_sites:
            diagnostics["ggn_sites"] = ggn_sites
        log_z = float(to_numpy(gaussian_log_evidence(energy, structure, potential.dim)))
        view = backend.model_view(model, args, kwargs, potential)
        if found is not None:  # that run holds its graph: the posterior lets it go
            potential.trace = None
        diagnostics["hessian"] = structure.precision_form()
        return Posterior(
            "laplace", Gaussian(potential, u[0], structure), site_shapes=view.site_shapes,
            mode=_single(potential.constrain(u[0]), view, seed), log_evidence=log_z, diagnostics=diagnostics,
            view=view,
        )


def _subset(subset, potential, u, hessian):
    """The potential over the coordinates of the ``subset`` sites only, the others held at ``u``; the point and the
    Hessian (if computed) restricted to them."""
    names = [s.name for s in potential.sites]
    if callable(subset):
        chosen = [n for n in names if subset(n)]
    else:
        chosen = [subset] if isinstance(subset, str) else list(subset)
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(f"Laplace: subset names {unknown}, which are not continuous latent sites of the model "
                             f"({names}).")
    if not chosen:
        raise ValueError(f"Laplace: subset selects none of the latent sites {names}.")
    mask = np.concatenate([np.full(s.numel, s.name in chosen) for s in potential.sites])
    if hasattr(potential, "index"):  # already over some coordinates only (masked elements)
        mask = mask[potential.index]
    idx = np.flatnonzero(mask)
    restricted = potential.restricted(mask, held=u[0])
    hessian = None if hessian is None else hessian[:, idx][:, :, idx]
    return restricted, u[:, idx], hessian


def _stationarity(structure, grad, energy: float) -> dict:
    r"""How far a given point is from the mode, in posterior standard deviations: the Newton decrement
    :math:`\sqrt{g^\top H^{-1} g}` (the curvature's own structure), with a warning above :data:`AT_TOLERANCE`. The
    evidence of a Gaussian fitted off the mode is low by about half its square (nats)."""
    quadratic, largest = (float(x) for x in to_numpy(structure.ops.stack([structure.quadratic(grad),
                                                                          abs(grad).max()])))
    distance = float(np.sqrt(max(quadratic, 0.0)))
    if distance > AT_TOLERANCE:
        warn(f"Laplace(at=...): the point is {distance:.3g} posterior sds from stationary (gradient {largest:.3g}): "
             f"the Gaussian is not centred at a mode, and the evidence is off by about {0.5 * distance**2:.3g} nats. "
             "Train to convergence, or drop at= to optimise from there.")
    return {"converged": distance <= AT_TOLERANCE, "status": "given point", "iterations": 0, "evaluations": 1,
            "energy": energy, "grad_norm": largest, "distance": distance}
