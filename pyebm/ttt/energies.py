r"""Test-time energies :math:`E(\theta; x)` of the adapted weights θ: ``energy(forward, batch) -> (batch,)``.

``forward(inputs)`` is the network with the current latent weights; ``batch`` is what was passed to
:func:`pyebm.ttt.adapt` (a tensor of test inputs, or a tuple such as ``(inputs, labels)``). Each energy returns one
value per example; the adaptation energy of a batch is their sum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.nn import functional as F

from ..inference.gauss_newton import softmax_curvature

__all__ = ["Neighbourhood", "entropy", "free_energy", "supervised", "augmented", "neighbours", "resolve_energy", "per_example"]


def entropy(forward: Callable, x: torch.Tensor) -> torch.Tensor:
    r"""TENT's energy: the entropy of the predicted class distribution, :math:`-\sum_c p_c\log p_c`."""
    logp = F.log_softmax(forward(x), -1)
    return -(logp.exp() * logp).sum(-1)


def free_energy(forward: Callable, x: torch.Tensor) -> torch.Tensor:
    r"""The JEM view: logits as negative energies of (x, y), the free energy of x :math:`-\log\sum_c e^{f_c(x)}`."""
    return -torch.logsumexp(forward(x), -1)


class Neighbourhood(NamedTuple):
    """A batch with a neighbour dimension: ``inputs (B, k, ...)``, ``targets (B, k, ...)``."""

    inputs: torch.Tensor
    targets: torch.Tensor


def supervised(kind: str = "cross_entropy", noise: float = 1.0) -> Callable:
    r"""A supervised energy on ``batch = (inputs, targets)``: the negative log-likelihood per example.

    ``"cross_entropy"`` (classification, integer targets) or ``"squared"``: :math:`\tfrac12\|f(x) - y\|^2/\sigma^2`
    with :math:`\sigma` = ``noise``. A :class:`Neighbourhood` batch carries a neighbour dimension, summed per example
    (the energy of :func:`neighbours`).
    """
    if kind not in ("cross_entropy", "squared"):
        raise ValueError(f"kind must be 'cross_entropy' or 'squared', got {kind!r}.")

    def energy(forward: Callable, batch) -> torch.Tensor:
        if not isinstance(batch, tuple) or len(batch) != 2:
            raise TypeError("a supervised energy needs batch = (inputs, targets).")
        inputs, targets = batch
        lead = 2 if isinstance(batch, Neighbourhood) else 1
        flat_t = targets.flatten(0, lead - 1)
        out = forward(inputs.flatten(0, lead - 1))
        if kind == "cross_entropy":
            losses = F.cross_entropy(out, flat_t, reduction="none")
        else:
            if out.dim() == flat_t.dim() + 1 and out.shape[-1] == 1:
                out = out.squeeze(-1)
            losses = 0.5 * ((out - flat_t) ** 2).reshape(len(flat_t), -1).sum(-1) / noise**2
        return losses.reshape(targets.shape[0], -1).sum(-1)

    def natural(forward: Callable, batch) -> list:
        """The outputs (logits, or means) and the loss's curvature in them, for Laplace's ``hessian="ggn"``:
        ``diag(p) - p p^T`` per example (cross-entropy, given as its probabilities), ``1 / noise^2`` per output
        (squared)."""
        inputs, targets = batch
        lead = 2 if isinstance(batch, Neighbourhood) else 1
        out = forward(inputs.flatten(0, lead - 1))
        if kind == "cross_entropy":
            return [(out, *softmax_curvature(out))]
        return [(out, torch.full_like(out.detach(), noise**-2.0), False)]

    energy.__name__ = f"supervised_{kind}"
    energy.natural = natural
    energy.noise = noise if kind == "squared" else None  # a Gaussian likelihood's noise, which the evidence can tune
    energy.with_noise = lambda value: supervised(kind, value)
    return energy


def augmented(energy: Callable, augment: Callable, copies: int) -> Callable:
    r"""Test-time augmentation as an energy: :math:`\frac1n\sum_j E(\theta; a_j(x))` over ``copies`` views
    ``augment(x, j)`` (``j = 0..copies-1``, deterministic so the energy is a fixed function of θ)."""
    if copies < 1:
        raise ValueError("copies must be >= 1.")

    def energy_aug(forward: Callable, x) -> torch.Tensor:
        return sum(energy(forward, augment(x, j)) for j in range(copies)) / copies

    return energy_aug


def neighbours(features: Callable, train_x: torch.Tensor, train_y: torch.Tensor, x: torch.Tensor, k: int = 16,
               kind: str = "cross_entropy", noise: float = 1.0) -> tuple[tuple, Callable]:
    r"""The neighbour recipe of test-time training as latent inference.

    For each test input, its ``k`` nearest training examples by ``features`` (e.g. the trained network's penultimate
    layer; Euclidean distance) become its adaptation set, and their supervised loss its energy. Returns
    ``(contexts, energy)`` for ``adapt(net, contexts, latents, energy, independent=True)``: ``contexts`` is
    a :class:`Neighbourhood` ``(inputs (B, k, ...), targets (B, k, ...))``.
    """
    if not 1 <= k <= len(train_x):
        raise ValueError(f"k must be between 1 and the number of training examples ({len(train_x)}), got {k}.")
    with torch.no_grad():
        f_train, f_test = features(train_x).flatten(1), features(x).flatten(1)
        idx = torch.cdist(f_test, f_train).topk(k, largest=False).indices
    return Neighbourhood(train_x[idx], train_y[idx]), supervised(kind, noise)


ENERGIES = {"entropy": entropy, "free_energy": free_energy}


def resolve_energy(energy: str | Callable) -> Callable:
    if isinstance(energy, str):
        if energy not in ENERGIES:
            raise ValueError(f"unknown test-time energy {energy!r}; choose {sorted(ENERGIES)} or pass a callable "
                             "energy(forward, batch) -> one energy per example.")
        return ENERGIES[energy]
    if not callable(energy):
        raise TypeError(f"energy must be a name or a callable, got {type(energy).__name__}.")
    return energy


def per_example(e, n: int) -> torch.Tensor:
    """Check that an energy gave one finite-typed value per example."""
    if not isinstance(e, torch.Tensor) or e.shape != (n,):
        shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
        raise ValueError(f"the test-time energy must return one energy per example, shape ({n},); got {shape}. "
                         "Return per-example values (no mean or sum over the batch).")
    return e
