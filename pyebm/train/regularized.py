r"""Regularized latent-variable objectives: no negatives; the latent's limited capacity limits the volume of low
energy.

For an energy :math:`E_\theta(x, z)` the training loss is the free energy of the data,
:math:`F_\beta(x) = -\frac1\beta\log\int e^{-\beta E_\theta(x,z)}dz`: at :math:`\beta=\infty` the minimum over the
latent (k-means, sparse coding), at :math:`\beta=1` a marginal likelihood, bounded by the amortised variational
free energy (the VAE). Without a normaliser in :math:`x` nothing stops :math:`F` from falling everywhere; what
keeps these models honest is a latent that cannot reconstruct every point: K centres, an L1 code on unit-norm
atoms, a decoder that is a normalised density in :math:`x`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..diagnostics import check_beta
from ..inference.registry import positive_int
from ..latent import free_energy
from .base import Objective, global_rng_from, randn, register_objective, single

__all__ = ["kmeans_loss", "sparse_coding_loss", "vae_loss", "latent_free_energy", "latent_free_energy_loss",
           "KMeansObjective",
           "SparseCodingObjective", "VAEObjective", "LatentFreeEnergy"]


def kmeans_loss(energies: torch.Tensor, beta: float = math.inf) -> torch.Tensor:
    r"""Mean free energy over a discrete latent, from energies of shape ``(K, batch)``:
    :math:`\min_k E(x, k)` at β = ∞ (the k-means cost), :math:`-\frac1\beta\log\sum_k e^{-\beta E(x,k)}` otherwise
    (the shared-variance mixture's negative log-likelihood, up to constants; see :class:`pyebm.energies.KMeans`)."""
    if energies.dim() != 2:
        raise ValueError(f"expected energies over the latent of shape (K, batch), got {tuple(energies.shape)}.")
    if math.isinf(beta):
        return energies.min(0).values.mean()
    return (-torch.logsumexp(-beta * energies, 0) / beta).mean()


def sparse_coding_loss(energy, data: torch.Tensor, steps: int = 200) -> torch.Tensor:
    r""":math:`\overline{\min_z E(x, z)}` with the codes found by FISTA (``energy.codes``); by the envelope theorem
    the gradient in the dictionary is that of :math:`E` at the fixed codes."""
    return energy(data, energy.codes(data, steps)).mean()


def vae_loss(energy, data: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    r"""The amortised variational free energy (negative ELBO) of :math:`E(x, z) = -\log p(x, z)`:

    .. math:: F_q(x) = \mathbb E_{q(z\mid x)}[E(x, z) + \log q(z\mid x)] \;\ge\; -\log \int e^{-E(x,z)}\,dz,

    one reparameterised draw :math:`z = \mu(x) + \sigma(x)\varepsilon` per example, the estimator of Pyro's
    ``Trace_ELBO`` with an amortised Gaussian guide.
    """
    z = loc + log_scale.exp() * eps
    log_q = (-0.5 * eps**2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
    return (energy(data, z) + log_q).mean()


def latent_free_energy(energy, batch: torch.Tensor | tuple, latent, beta: float = math.inf,
                       steps: int = 100) -> torch.Tensor:
    r"""The free energy of each example over a latent, :math:`F_\beta = -\frac1\beta\log\int e^{-\beta
    E(\text{example}, z)}dz` (:func:`pyebm.free_energy`): shape ``(n,)``.

    ``energy(*batch, z=...)`` (a tuple batch is unpacked: pairs ``(x, y)`` for a conditional energy). ``latent`` is
    a tensor of discrete support points along dim 0 (exact: each is broadcast over the batch as ``z``), or a dict
    ``{name: shape}`` of continuous latents (one per example, minimised by Newton's method from zero; Laplace at
    finite β). Gradients in the energy's parameters are exact (envelope theorem and implicit differentiation).
    """
    parts = (batch,) if isinstance(batch, torch.Tensor) else tuple(batch)
    if isinstance(latent, torch.Tensor):
        n = len(parts[0])

        def support_energies(points):  # one call on every (support point, example) pair: batch K * n
            k = len(points)
            tiled = [p.repeat(k, *([1] * (p.dim() - 1))) for p in parts]
            return energy(*tiled, z=points.repeat_interleave(n, 0)).reshape(k, n)

        return free_energy(support_energies, latent, beta)
    return free_energy(lambda **z: energy(*parts, **z), dict(latent), beta, steps=steps)


def latent_free_energy_loss(energy, batch: torch.Tensor | tuple, latent, beta: float = math.inf,
                            steps: int = 100) -> torch.Tensor:
    r"""The mean of :func:`latent_free_energy` over the batch: the training loss of ``fit(..., "free_energy")``."""
    return latent_free_energy(energy, batch, latent, beta, steps).mean()


@register_objective("kmeans")
@dataclasses.dataclass
class KMeansObjective(Objective):
    r"""Free energy over a discrete latent (:func:`kmeans_loss`); ``energy(x)`` returns ``(K, batch)`` energies, as
    :class:`pyebm.energies.KMeans` with ``learnable=True`` does. ``beta=inf`` is k-means, finite β a mixture."""

    beta: float = math.inf


    def check(self) -> None:
        check_beta(self.beta, allow_zero=False, allow_inf=True, name="KMeans: beta")
        super().check()

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        e = energy(x)
        return kmeans_loss(e, self.beta), e.numel()


@register_objective("sparse_coding")
@dataclasses.dataclass
class SparseCodingObjective(Objective):
    r"""Dictionary learning (:func:`sparse_coding_loss`, codes by ``fista_steps`` FISTA iterations) for :class:`pyebm.energies.SparseCoding` with
    ``learnable=True``. After each step the atoms are projected back to unit norm: otherwise growing atoms with
    shrinking codes drive the L1 term, and with it the energy, to zero everywhere (the collapse in this family)."""

    fista_steps: int = 200


    def check(self) -> None:
        positive_int("SparseCoding", "fista_steps", self.fista_steps)
        super().check()

    def setup(self, energy, data, generator):
        if not (hasattr(energy, "codes") and isinstance(getattr(energy, "dictionary", None), nn.Parameter)):
            raise TypeError("method 'sparse_coding' needs an energy with codes(x) and a learnable `dictionary`, "
                            "e.g. pyebm.energies.SparseCoding(W0, lam, learnable=True).")
        self.after_step(energy, None)
        return nn.Module()

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        return sparse_coding_loss(energy, x, self.fista_steps), len(x) * (self.fista_steps + 1)

    def after_step(self, energy, state):
        with torch.no_grad():
            energy.dictionary /= energy.dictionary.norm(dim=0, keepdim=True).clamp_min(1e-12)


class _Encoder(nn.Module):
    def __init__(self, dim: int, latent_dim: int, hidden: Sequence[int], dtype: torch.dtype):
        super().__init__()
        layers, width = [], dim
        for h in hidden:
            layers += [nn.Linear(width, h, dtype=dtype), nn.SiLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * latent_dim, dtype=dtype)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self.head(self.body(x.flatten(1))).split(self.latent_dim, -1)
        return loc, log_scale.clamp(-12, 6)


@register_objective("vae")
@dataclasses.dataclass
class VAEObjective(Objective):
    r"""A VAE: amortised marginalisation of the latent by SVI (:func:`vae_loss`).

    ``energy(x, z)`` must be :math:`-\log p_\theta(x, z)`, a *normalised* density in :math:`x` (e.g.
    :class:`pyebm.energies.GaussianDecoder`): the bound is on :math:`\log p_\theta(x)` only then. The encoder
    (``result.state.encoder``), a Gaussian :math:`q(z\mid x)` from an MLP with widths ``hidden`` (``()``: linear),
    is trained jointly.
    """

    latent_dim: int = 2
    hidden: tuple = (64,)


    def check(self) -> None:
        positive_int("VAE", "latent_dim", self.latent_dim)
        super().check()

    def setup(self, energy, data, generator):
        data = single(data, self.name)
        if not getattr(energy, "normalized", False):
            raise ValueError("method 'vae' needs an energy that is a normalised -log p(x, z) (attribute "
                             "`normalized = True`, e.g. pyebm.energies.GaussianDecoder); with an unnormalised "
                             "energy the ELBO ignores log Z and training collapses.")
        state = nn.Module()
        with global_rng_from(generator):
            state.encoder = _Encoder(data[0].numel(), self.latent_dim, tuple(self.hidden), data.dtype)
        return state

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        loc, log_scale = state.encoder(x)
        return vae_loss(energy, x, loc, log_scale, randn(loc.shape, loc, generator)), len(x)


@register_objective("free_energy")
@dataclasses.dataclass
class LatentFreeEnergy(Objective):
    r"""Any energy :math:`E(x, z)` (or a conditional :math:`E(x, y, z)` on pairs) trained by the free energy of
    the data over its latent (:func:`latent_free_energy_loss`): ``latent`` a tensor of discrete support points or a
    dict ``{name: shape}`` of continuous latents; ``beta=inf`` minimises over the latent (the latent-variable
    reading of k-means and sparse coding), finite β marginalises.

    No negatives: only the latent's limited capacity keeps the energy from being low everywhere. Too much capacity
    (a continuous latent as large as the data, no penalty) lets every point be reconstructed, and the energy
    collapses to a constant: measure it by comparing the free energy of the data with that of off-data points.
    """

    latent: object = None
    beta: float = math.inf
    steps: int = 100

    def check(self) -> None:
        if not (isinstance(self.latent, torch.Tensor) or isinstance(self.latent, dict) and self.latent):
            raise ValueError("method 'free_energy' needs `latent`: a tensor of discrete support points (e.g. "
                             "torch.eye(2) for a choice of two) or a dict of continuous latent shapes ({'z': 2}).")
        check_beta(self.beta, allow_zero=False, allow_inf=True, name="LatentFreeEnergy: beta")
        positive_int("LatentFreeEnergy", "steps", self.steps)
        super().check()

    def loss(self, energy, batch, state, generator):
        n = len(batch) if isinstance(batch, torch.Tensor) else len(batch[0])
        return latent_free_energy_loss(energy, batch, self.latent, self.beta, self.steps), n
