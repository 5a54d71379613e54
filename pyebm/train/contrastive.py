r"""Contrastive objectives: push the energy of data down and the energy of other points up.

Maximum likelihood for :math:`p_\theta(x) = e^{-E_\theta(x)}/Z(\theta)` has the gradient

.. math:: \nabla_\theta \bigl[-\log p_\theta(x)\bigr] = \nabla_\theta E_\theta(x) - \mathbb E_{p_\theta}[\nabla_\theta E_\theta(x^-)],

data down, model samples up. Contrastive divergence (CD-k) gets the negatives :math:`x^-` from k Langevin steps
started at the data, persistent CD from long-lived chains; NCE replaces sampling by classification against a known
noise density; margin losses only ask the wrong answers to sit a margin above the right ones; InfoNCE contrasts
each positive pair with the other pairs of the batch.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.nn import functional as F

from ..inference.registry import positive_float, positive_int
from ..samplers import ReplayBuffer
from .base import (
    LangevinOptions,
    Objective,
    child_seed,
    energies_of,
    global_rng_from,
    randn,
    register_objective,
    single,
)

__all__ = [
    "contrastive_divergence_loss", "nce_loss", "margin_loss", "infonce_loss",
    "CD", "PCD", "NCE", "Margin", "InfoNCE",
]


def contrastive_divergence_loss(energy, data: torch.Tensor, negatives: torch.Tensor, alpha: float = 0.0) -> torch.Tensor:
    r""":math:`\overline{E(x^+)} - \overline{E(x^-)} + \alpha\,\overline{E(x^+)^2 + E(x^-)^2}`.

    Its parameter gradient is the maximum-likelihood gradient when the negatives are samples of the model; the
    optional :math:`\alpha` term (Du & Mordatch, 2019) keeps energies near zero, a regulariser that biases the fit.
    """
    e_pos, e_neg = energies_of(energy, data), energies_of(energy, negatives.detach())
    loss = e_pos.mean() - e_neg.mean()
    if alpha:
        loss = loss + alpha * (e_pos**2 + e_neg**2).mean()
    return loss


def nce_loss(energy, data: torch.Tensor, noise: torch.Tensor, noise_log_prob, log_z: torch.Tensor,
             ratio: float = 1.0) -> torch.Tensor:
    r"""Noise-contrastive estimation (Gutmann & Hyvärinen, 2010): logistic regression of data against noise.

    With model log-density :math:`\log p_\theta(x) = -E_\theta(x) - c` (:math:`c` = ``log_z``, learned) and
    :math:`\nu` = ``ratio`` noise draws per data point, the classifier's logit is
    :math:`G(x) = \log p_\theta(x) - \log q(x) - \log\nu` and the loss
    :math:`-\overline{\log\sigma(G(x^+))} - \nu\,\overline{\log\sigma(-G(y))}`. Its minimiser is the data density
    itself, normalised: :math:`c` estimates :math:`\log Z(\theta)`.
    """
    def logit(x):
        return -energies_of(energy, x) - log_z - noise_log_prob(x) - math.log(ratio)

    return F.softplus(-logit(data)).mean() + ratio * F.softplus(logit(noise)).mean()


MARGIN_KINDS = ("hinge", "log", "square-square")


def margin_loss(e_pos: torch.Tensor, e_neg: torch.Tensor, margin: float = 1.0, kind: str = "hinge") -> torch.Tensor:
    r"""Margin losses of LeCun et al. (2006) on the energy of the right answer and the most offending wrong one.

    ``"hinge"``: :math:`\max(0, m + E^+ - E^-)`; ``"log"`` (its soft version): :math:`\log(1 + e^{E^+ - E^-})`;
    ``"square-square"``: :math:`(E^+)^2 + \max(0, m - E^-)^2` (energies pinned at zero for data).
    """
    if kind == "hinge":
        values = F.relu(margin + e_pos - e_neg)
    elif kind == "log":
        values = F.softplus(e_pos - e_neg)
    elif kind == "square-square":
        values = e_pos**2 + F.relu(margin - e_neg) ** 2
    else:
        raise ValueError(f"unknown margin kind {kind!r}; choose one of {MARGIN_KINDS}.")
    return values.mean()


def infonce_loss(energy, x: torch.Tensor, y: torch.Tensor, temperature: float = 1.0,
                 symmetric: bool = False) -> torch.Tensor:
    r"""InfoNCE (van den Oord et al., 2018) for a joint energy :math:`E(x, y)`.

    Each pair :math:`(x_i, y_i)` is the positive among the batch's :math:`y_j`:
    :math:`-\overline{\log \mathrm{softmax}_j(-E(x_i, y_j)/\tau)_i}`. ``energy(x[:, None], y[None, :])`` must
    broadcast to the :math:`B\times B` matrix of energies. The population minimiser is
    :math:`-E(x, y)/\tau = \log p(y\mid x)/p(y) + c(x)`, whatever the batch size.
    """
    B = x.shape[0]
    e = energy(x[:, None], y[None, :])
    if not isinstance(e, torch.Tensor) or e.shape != (B, B):
        raise ValueError(f"energy(x[:, None], y[None, :]) must broadcast to the ({B}, {B}) matrix of pair energies, "
                         f"got {tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__}.")
    logits = -e / temperature
    target = torch.arange(B)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss


@register_objective("cd")
@dataclasses.dataclass
class CD(LangevinOptions, Objective):
    r"""Contrastive divergence CD-k: negatives from ``k`` Langevin steps started at the data batch.

    Parameters
    ----------
    k, step_size, noise_scale, grad_clip, metropolis
        The Langevin chain (:func:`pyebm.samplers.langevin_step`); ``metropolis=True`` is MALA, whose chain leaves
        the model exactly invariant, so the data distribution is a fixed point of the learning rule.
    alpha : float
        Energy-magnitude regulariser (:func:`contrastive_divergence_loss`).
    """

    alpha: float = 0.0


    def check(self) -> None:
        positive_float("CD", "alpha", self.alpha, allow_zero=True)
        super().check()

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        neg = self.run(energy, x, generator)
        return contrastive_divergence_loss(energy, x, neg, self.alpha), 2 * len(x) + self.evaluations(len(x))


def _gaussian_init(data: torch.Tensor):
    """Draws from the Gaussian with the data's per-coordinate mean and sd (the default start of persistent chains)."""
    mean, sd = data.mean(0), data.std(0)

    def init(n: int, generator: torch.Generator) -> torch.Tensor:
        return mean + sd * randn((n,) + tuple(data.shape[1:]), data, generator)

    return init


@register_objective("pcd")
@dataclasses.dataclass
class PCD(LangevinOptions, Objective):
    r"""Persistent contrastive divergence (Tieleman, 2008): negatives from long-lived chains kept in a
    :class:`pyebm.samplers.ReplayBuffer`, moved ``k`` Langevin steps per training step.

    Parameters
    ----------
    buffer_size : int
        Number of persistent chains.
    reinit_prob : float
        Chance that a chain restarts from ``init`` (keeps the buffer from losing modes).
    init : callable, optional
        ``init(n, generator)`` -> ``n`` starting points; default: the Gaussian matching the data's mean and sd.
    alpha : float
        Energy-magnitude regulariser.
    """

    buffer_size: int = 10_000
    reinit_prob: float = 0.05
    init: object = None
    alpha: float = 0.0


    def check(self) -> None:
        positive_int("PCD", "buffer_size", self.buffer_size)
        if not 0 <= self.reinit_prob <= 1:
            raise ValueError(f"PCD: reinit_prob must lie in [0, 1], got {self.reinit_prob!r}.")
        positive_float("PCD", "alpha", self.alpha, allow_zero=True)
        super().check()

    def setup(self, energy, data, generator):
        data = single(data, self.name)
        state = nn.Module()
        state.replay = ReplayBuffer(self.buffer_size, self.init or _gaussian_init(data), self.reinit_prob,
                                    seed=child_seed(generator))
        return state

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        idx, start = state.replay.sample(len(x))
        neg = self.run(energy, start.to(x.dtype), generator)
        state.replay.update(idx, neg)
        return contrastive_divergence_loss(energy, x, neg, self.alpha), 2 * len(x) + self.evaluations(len(x))


def _fitted_gaussian(data: torch.Tensor) -> torch.distributions.Distribution:
    flat = data.flatten(1)
    cov = torch.cov(flat.T).reshape(flat.shape[1], flat.shape[1])
    cov = cov + 1e-6 * cov.diagonal().mean() * torch.eye(len(cov), dtype=cov.dtype)
    return torch.distributions.MultivariateNormal(flat.mean(0), covariance_matrix=cov)


@register_objective("nce")
@dataclasses.dataclass
class NCE(Objective):
    r"""Noise-contrastive estimation (:func:`nce_loss`). The learned :math:`\log Z` is ``result.state.log_z``.

    Parameters
    ----------
    noise : torch.distributions.Distribution or "gaussian"
        The noise density :math:`q` (it must have ``sample`` and ``log_prob``); ``"gaussian"`` fits a Gaussian to
        the data's mean and covariance, the usual default. NCE is efficient when :math:`q` overlaps the data well.
    ratio : float
        Noise draws per data point, :math:`\nu`.
    """

    noise: object = "gaussian"
    ratio: float = 1.0


    def check(self) -> None:
        positive_float("NCE", "ratio", self.ratio)
        super().check()

    def setup(self, energy, data, generator):
        data = single(data, self.name)
        state = nn.Module()
        state.log_z = nn.Parameter(torch.zeros((), dtype=data.dtype))
        if isinstance(self.noise, str):
            if self.noise != "gaussian":
                raise ValueError(f"noise must be 'gaussian' or a torch distribution, got {self.noise!r}.")
            state.noise = _fitted_gaussian(data.detach())
        elif isinstance(self.noise, torch.distributions.Distribution):
            state.noise = self.noise
        else:
            raise TypeError(f"noise must be 'gaussian' or a torch distribution, got {type(self.noise).__name__}.")
        state.shape = tuple(data.shape[1:])
        # a MultivariateNormal (the fitted default) lives on the flattened examples
        state.flat = isinstance(state.noise, torch.distributions.MultivariateNormal)
        return state

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        n = max(1, round(self.ratio * len(x)))
        with global_rng_from(generator):
            noise = state.noise.sample((n,)).reshape((n,) + state.shape).to(x.dtype)

        def log_q(v):
            return state.noise.log_prob(v.flatten(1) if state.flat else v).to(v.dtype)

        return nce_loss(energy, x, noise, log_q, state.log_z, n / len(x)), len(x) + n


@register_objective("margin")
@dataclasses.dataclass
class Margin(LangevinOptions, Objective):
    r"""Margin losses (:func:`margin_loss`) against the most offending wrong answer.

    Two settings: data ``(x, labels)`` with an energy returning ``(batch, classes)`` energies: the most offending
    answer is the lowest-energy wrong label (the generalised margin loss); or data ``x`` alone: the most offending
    points are found by ``k`` Langevin steps down the energy from the data (as in CD).
    """

    margin: float = 1.0
    kind: str = "hinge"


    def check(self) -> None:
        positive_float("Margin", "margin", self.margin)
        if self.kind not in MARGIN_KINDS:
            raise ValueError(f"Margin: unknown kind {self.kind!r}; choose one of {MARGIN_KINDS}.")
        super().check()

    def loss(self, energy, batch, state, generator):
        if isinstance(batch, torch.Tensor):
            neg = self.run(energy, batch, generator)
            e_pos, e_neg = energies_of(energy, batch), energies_of(energy, neg)
            return margin_loss(e_pos, e_neg, self.margin, self.kind), 2 * len(batch) + self.evaluations(len(batch))
        x, labels = batch
        e = energy(x)
        if e.dim() != 2 or e.shape[0] != len(x):
            raise ValueError(f"with labelled data the energy must return (batch, classes) energies, got {tuple(e.shape)}.")
        e_pos = e.gather(1, labels[:, None]).squeeze(1)
        wrong = e.scatter(1, labels[:, None], float("inf"))
        return margin_loss(e_pos, wrong.min(1).values, self.margin, self.kind), len(x) * e.shape[1]


@register_objective("infonce")
@dataclasses.dataclass
class InfoNCE(Objective):
    r"""InfoNCE on pairs ``(x, y)`` (:func:`infonce_loss`); ``temperature`` :math:`\tau`, optionally symmetric."""

    temperature: float = 1.0
    symmetric: bool = False


    def check(self) -> None:
        positive_float("InfoNCE", "temperature", self.temperature)
        super().check()

    def loss(self, energy, batch, state, generator):
        if isinstance(batch, torch.Tensor) or len(batch) != 2:
            raise TypeError("method 'infonce' trains on pairs: pass data=(x, y) with aligned first dimensions.")
        x, y = batch
        return infonce_loss(energy, x, y, self.temperature, self.symmetric), len(x) ** 2
