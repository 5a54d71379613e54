r"""Generator negatives: a GAN read as a contrastive energy-based model.

The energy is the discriminator: it pushes the data down and the generator's samples up,
:math:`\overline{E(x^+)} - \overline{E(G(z))}`, whose parameter gradient is the maximum-likelihood gradient when the
generator samples the model :math:`p_E \propto e^{-E}`. The generator descends the energy, and, so that it samples
:math:`p_E` rather than collapsing onto its minima, keeps its entropy: it minimises
:math:`\overline{E(G(z)) + \log q(G(z))} = \mathrm{KL}(q \,\|\, p_E) - \log Z`, the reverse KL to the model
(Kim & Bengio, *Deep directed generative models with energy-based probability estimation*, 2016; Kumar et al.,
*Maximum entropy generators for energy-based models*, 2019). Here the generator is a small normalising flow (affine
couplings, Dinh et al. 2017), so :math:`\log q` is exact; it starts as the Gaussian fitted to the data. Compared with
CD's Langevin negatives, the sampler is amortised: one forward pass per negative instead of ``k`` gradient steps.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..inference.registry import positive_float, positive_int
from .base import Objective, energies_of, global_rng_from, randn, register_objective, single

__all__ = ["FlowGenerator", "GeneratorNegatives", "generator_negatives_loss"]


class _Coupling(nn.Module):
    """One affine coupling: the coordinates outside ``mask`` are scaled and shifted by functions of those inside."""

    def __init__(self, mask: torch.Tensor, hidden: int):
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * dim))
        nn.init.zeros_(self.net[-1].weight)  # the identity at the start
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.net(x * self.mask).chunk(2, -1)
        scale = 2.0 * torch.tanh(scale / 2.0) * (1 - self.mask)  # bounded log-scales: a stable start
        return x * self.mask + (1 - self.mask) * (x * scale.exp() + shift), scale.sum(-1)


class FlowGenerator(nn.Module):
    r"""A normalising flow :math:`x = \mu + \sigma \odot f(z)`, :math:`z \sim \mathcal N(0, I)`, ``f`` a stack of affine
    couplings over alternating halves of the coordinates: samples and their exact log-density in one pass."""

    def __init__(self, mean: torch.Tensor, sd: torch.Tensor, layers: int = 6, hidden: int = 64):
        super().__init__()
        dim = mean.numel()
        if dim < 2:
            raise ValueError("the generator's couplings need at least 2 coordinates per example.")
        self.register_buffer("mean", mean.detach().reshape(-1))
        self.register_buffer("sd", sd.detach().reshape(-1))
        half = torch.arange(dim) < dim // 2
        self.couplings = nn.ModuleList(_Coupling((half if i % 2 == 0 else ~half).to(mean.dtype), hidden)
                                       for i in range(layers))

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``(n, D)`` and their log-density under the flow ``(n,)``."""
        z = randn((n, self.mean.numel()), self.mean, generator)
        log_q = -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        x = z
        for layer in self.couplings:
            x, log_det = layer(x)
            log_q = log_q - log_det
        return self.mean + self.sd * x, log_q - self.sd.log().sum()


def generator_negatives_loss(energy: nn.Module, data: torch.Tensor, negatives: torch.Tensor, log_q: torch.Tensor,
                             alpha: float = 0.0) -> torch.Tensor:
    r"""The energy's contrastive loss :math:`\overline{E(x^+)} - \overline{E(x^-)}` (negatives held fixed, plus
    :math:`\alpha\,\overline{E^2}`) and the generator's :math:`\overline{E(x^-) + \log q(x^-)}` (energy held fixed),
    summed: one backward pass gives each its own gradient."""
    e_pos, e_neg = energies_of(energy, data), energies_of(energy, negatives.detach())
    loss = e_pos.mean() - e_neg.mean()
    if alpha:
        loss = loss + alpha * (e_pos**2 + e_neg**2).mean()
    fixed = {k: v.detach() for k, v in energy.named_parameters()}
    e_gen = torch.func.functional_call(energy, fixed, (negatives,))
    return loss + (e_gen + log_q).mean()


@register_objective("generator")
@dataclasses.dataclass
class GeneratorNegatives(Objective):
    """Negatives from a generator trained alongside the energy (:func:`generator_negatives_loss`); the generator
    is ``result.state.generator``, a :class:`FlowGenerator` on the data's shape (flattened).

    Parameters
    ----------
    layers, hidden : int
        Affine couplings in the flow, and the width of each coupling's network.
    negatives : int, optional
        Generator samples per step (default: the batch size).
    alpha : float
        Energy-magnitude regulariser, as for CD.
    """

    layers: int = 6
    hidden: int = 64
    negatives: int | None = None
    alpha: float = 0.0

    def check(self) -> None:
        positive_int("GeneratorNegatives", "layers", self.layers)
        positive_int("GeneratorNegatives", "hidden", self.hidden)
        if self.negatives is not None:
            positive_int("GeneratorNegatives", "negatives", self.negatives)
        positive_float("GeneratorNegatives", "alpha", self.alpha, allow_zero=True)

    def setup(self, energy, data, generator):
        x = single(data, self.name).detach()
        state = nn.Module()
        flat = x.reshape(len(x), -1)
        with global_rng_from(generator):  # the couplings' initial weights
            state.generator = FlowGenerator(flat.mean(0), flat.std(0), self.layers, self.hidden).to(x.dtype)
        state.shape = tuple(x.shape[1:])
        return state

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        n = self.negatives or len(x)
        neg, log_q = state.generator.sample(n, generator)
        neg = neg.reshape((n,) + state.shape)
        return generator_negatives_loss(energy, x, neg, log_q, self.alpha), len(x) + 2 * n
