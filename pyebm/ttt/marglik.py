r"""Training a network with its prior precision (and observation noise) chosen online by the Laplace evidence.

Immer et al. (2021), *Scalable marginal likelihood estimation for model selection in deep learning*: the weights
:math:`\theta` descend the negative log joint

.. math:: L(\theta) = \sum_i E(\theta; x_i, y_i; \sigma) + \tfrac12\sum_l \delta_l\lVert\theta_l\rVert^2

(minibatches scaled to the data set), and every ``every`` epochs after ``burnin`` the hyperparameters
:math:`(\delta, \sigma)` move to the maximum of the Laplace evidence at the current weights, the curvature in a
structure that scales to networks (K-FAC by default). The evidence needs no validation data, so hyperparameters are
learned from the training set, during training rather than by a grid of runs. pyebm's evidence step is
:func:`pyebm.ttt.evidence.tune_prior_scales`' inner maximisation, the same one ``ttt.adapt(prior_scale=Evidence())``
uses post hoc.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from ..diagnostics import ConvergenceWarning
from ..inference.laplace import Laplace
from ..state import resolve_seed
from .adapt import adapt
from .energies import supervised
from .evidence import Residuals, maximise_evidence

__all__ = ["marglik_training", "MarglikResult"]


@dataclass
class MarglikResult:
    """What :func:`marglik_training` returns.

    Attributes
    ----------
    net : nn.Module
        The trained network (the one passed in, trained in place).
    prior_precision : dict
        The final prior precision of each parameter (one value shared by all, or one per parameter).
    noise : float or None
        The final observation noise (regression), else None.
    posterior : Posterior
        The last Laplace posterior over every weight (its structure as asked), at the final hyperparameters.
    history : list of dict
        One entry per evidence step: ``epoch``, ``log_evidence`` (before the step, the likelihood's normaliser
        included for regression), ``prior_precision``, ``noise``.
    """

    net: nn.Module
    prior_precision: dict
    noise: float | None
    posterior: object
    history: list = field(default_factory=list)


def marglik_training(
    net: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    kind: str = "squared",
    *,
    noise: float = 1.0,
    prior_precision: float = 1.0,
    epochs: int = 100,
    lr: float = 1e-2,
    batch_size: int | None = None,
    hessian: str = "kron",
    every: int = 5,
    burnin: int = 10,
    per_layer: bool = False,
    tune_noise: bool = True,
    seed: int | None = None,
) -> MarglikResult:
    r"""Train ``net`` on ``data = (inputs, targets)`` with the prior precision (and the noise) tuned online by the
    Laplace evidence.

    Parameters
    ----------
    net : nn.Module
        Trained in place, every parameter under a zero-mean Gaussian prior.
    data : (inputs, targets)
        Regression targets (``kind="squared"``) or class labels (``"cross_entropy"``).
    kind : {"squared", "cross_entropy"}
        The likelihood: Gaussian with sd ``noise``, or categorical on logits (:func:`pyebm.ttt.supervised`).
    noise, prior_precision : float
        Starting values (``noise``: regression only).
    epochs, lr, batch_size
        Adam on the weights; a full batch by default.
    hessian : str
        The Laplace curvature of the evidence steps (``pyebm.Laplace(hessian=...)``): ``"kron"`` (default),
        ``"ggn"`` (dense), ``"full"``, ``"diag"`` or ``"lowrank"``.
    every, burnin : int
        An evidence step every ``every`` epochs once ``burnin`` epochs have passed, and one after the last.
    per_layer : bool
        One prior precision per parameter tensor instead of one for all.
    tune_noise : bool
        Tune the noise too (regression).
    seed : int, optional
        Minibatch order; the global RNG is left alone.
    """
    if kind not in ("squared", "cross_entropy"):
        raise ValueError(f"kind must be 'squared' or 'cross_entropy', got {kind!r}.")
    for name, value in (("noise", noise), ("prior_precision", prior_precision)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    for name, value in (("epochs", epochs), ("every", every), ("burnin", burnin)):
        if int(value) != value or value < (0 if name == "burnin" else 1):
            raise ValueError(f"{name} must be an int >= {0 if name == 'burnin' else 1}, got {value!r}.")
    inputs, targets = data
    n = len(inputs)
    batch = n if batch_size is None else int(batch_size)
    if not 1 <= batch <= n:
        raise ValueError(f"batch_size must be between 1 and the number of examples ({n}), got {batch_size!r}.")
    params = dict(net.named_parameters())
    precision = dict.fromkeys(params, float(prior_precision))
    sigma = float(noise) if kind == "squared" else None
    generator = torch.Generator().manual_seed(resolve_seed(seed))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history, post = [], None
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator)
        for first in range(0, n, batch):
            idx = order[first : first + batch]
            energy = supervised(kind, sigma or 1.0)(net, (inputs[idx], targets[idx])).sum() * (n / len(idx))
            penalty = sum(0.5 * precision[k] * (p**2).sum() for k, p in params.items())
            opt.zero_grad()
            (energy + penalty).backward()
            opt.step()
        if (epoch >= burnin and epoch % every == 0) or epoch == epochs:
            post, precision, sigma, entry = _evidence_step(net, data, kind, precision, sigma, hessian, per_layer,
                                                          tune_noise)
            history.append({"epoch": epoch, **entry})
    post, *_ = _evidence_step(net, data, kind, precision, sigma, hessian, per_layer, tune_noise=False, tune=False)
    return MarglikResult(net, precision, sigma, post, history)


def _evidence_step(net, data, kind, precision, sigma, hessian, per_layer, tune_noise, tune=True):
    """Laplace at the current weights and hyperparameters, then the evidence-maximising hyperparameters there. Mid
    training the weights are not at a mode, by design of the online method: only the final Laplace (``tune=False``)
    warns about it."""
    trained = {k: v.detach() for k, v in net.named_parameters()}
    scales = {k: precision[k] ** -0.5 for k in trained}
    energy = supervised(kind, sigma or 1.0)
    with warnings.catch_warnings() if tune else nullcontext():
        if tune:
            warnings.simplefilter("ignore", ConvergenceWarning)
        post = adapt(net, data, list(trained), energy, Laplace(at=trained, hessian=hessian), prior_scale=scales,
                     prior_mean="zero", seed=0)
    residuals = None
    if kind == "squared":
        with torch.no_grad():
            e = energy(net, data).sum()
        residuals = Residuals.of_energy(float(e), data[1].numel(), sigma)
    entry = {"log_evidence": post.log_evidence + (residuals.log_normaliser(sigma) if residuals else 0.0),
             "prior_precision": dict(precision), "noise": sigma}
    if not tune:
        return post, precision, sigma, entry
    zeros = {k: torch.zeros_like(v) for k, v in trained.items()}
    scales, new_sigma = maximise_evidence(post, zeros, scales, per_layer, residuals if tune_noise else None)
    return post, {k: s**-2.0 for k, s in scales.items()}, new_sigma or sigma, entry
