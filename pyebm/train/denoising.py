r"""Reconstruction objectives: corrupt the data, reconstruct it, and read the reconstruction error as the energy.

No negatives and no normaliser: the corruption decides what the model must reconstruct. A denoising autoencoder
(Vincent et al., 2008) is trained on Gaussian noise and learns the score of the noised density (it is denoising score
matching with the score parameterised by a reconstruction); a masked model (BERT, Devlin et al., 2019) is trained
on hidden coordinates and learns their conditional means. See :mod:`pyebm.energies.reconstruction`.
"""

from __future__ import annotations

import dataclasses

import torch

from ..inference.registry import positive_float, positive_int
from .base import Objective, randn, register_objective, single

__all__ = ["dae_loss", "masked_loss", "random_masks", "DAE", "Masked"]


def dae_loss(energy, data: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    r"""The denoising loss :math:`\tfrac12\,\overline{\lVert r_\theta(x + \sigma\varepsilon) - x\rVert^2}`.

    Divided by :math:`\sigma^2` it is :func:`pyebm.train.dsm_loss` (without its control variate) for the score
    :math:`(r_\theta(\tilde x) - \tilde x)/\sigma^2`, draw by draw: the same minimiser. ``energy.reconstruct`` is
    :math:`r_\theta`; ``noise`` holds the standard normal draws :math:`\varepsilon`, shape of ``data``.
    """
    return 0.5 * ((energy.reconstruct(data + sigma * noise) - data) ** 2).flatten(1).sum(1).mean()


def masked_loss(energy, data: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""The masked-reconstruction loss :math:`\tfrac12\,\overline{\sum_{i \in m}(r_\theta(x, m)_i - x_i)^2}`: only
    the hidden coordinates (``mask`` True) are scored."""
    error = (energy.reconstruct(data, mask) - data) ** 2
    return 0.5 * (error * mask).flatten(1).sum(1).mean()


def random_masks(n: int, dim: int, count: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """``n`` boolean masks over ``dim`` coordinates, each hiding ``count`` of them chosen uniformly without
    replacement."""
    if not 1 <= count <= dim:
        raise ValueError(f"count must be between 1 and the number of coordinates {dim}, got {count}.")
    order = torch.rand(n, dim, generator=generator).argsort(-1)
    return (order < count).to(device)


def _needs(energy, attribute: str, method: str, example: str) -> None:
    if not callable(getattr(energy, attribute, None)):
        raise TypeError(f"method {method!r} needs an energy with a `{attribute}` method (the reconstruction it "
                        f"trains), e.g. {example}; got {type(energy).__name__}.")


@register_objective("dae")
@dataclasses.dataclass
class DAE(Objective):
    """A denoising autoencoder (:func:`dae_loss`) at noise level ``sigma``, for an energy with ``reconstruct(x)``
    such as :class:`pyebm.energies.DenoisingAutoencoder`."""

    sigma: float = 0.1

    def check(self) -> None:
        positive_float("DAE", "sigma", self.sigma)
        super().check()

    def setup(self, energy, data, generator):
        _needs(energy, "reconstruct", "dae", "pyebm.energies.DenoisingAutoencoder(dim)")
        return super().setup(energy, data, generator)

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        return dae_loss(energy, x, self.sigma, randn(x.shape, x, generator)), len(x)


@register_objective("masked")
@dataclasses.dataclass
class Masked(Objective):
    """Masked reconstruction (:func:`masked_loss`): ``count`` coordinates of each example hidden at random, for an
    energy with ``reconstruct(x, mask)`` such as :class:`pyebm.energies.MaskedReconstruction`. ``count=1`` fits
    the conditional means (pseudo-likelihood); BERT hides about 15% of a sequence."""

    count: int = 1

    def check(self) -> None:
        positive_int("Masked", "count", self.count)
        super().check()

    def setup(self, energy, data, generator):
        _needs(energy, "reconstruct", "masked", "pyebm.energies.MaskedReconstruction(dim)")
        x = single(data, self.name)
        if x.dim() != 2:
            raise ValueError(f"method 'masked' trains on vectors, shape (n, dim); got {tuple(x.shape)}.")
        if self.count > x.shape[1]:
            raise ValueError(f"count={self.count} hides more coordinates than an example has ({x.shape[1]}).")
        return super().setup(energy, data, generator)

    def loss(self, energy, batch, state, generator):
        x = single(batch, self.name)
        mask = random_masks(len(x), x.shape[1], self.count, generator, x.device)
        return masked_loss(energy, x, mask), len(x)
