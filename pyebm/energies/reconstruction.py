r"""Reconstruction energies: a denoising autoencoder and a masked (BERT-style) model read as energies.

Both learn a reconstruction :math:`r_\theta` of a corrupted input and score a point by how badly it is
reconstructed; neither needs negatives, because the corruption, not a normaliser, decides what must be
reconstructed well.

* :class:`DenoisingAutoencoder`: :math:`E(x) = \tfrac12\lVert x - r_\theta(x)\rVert^2`, trained by
  :math:`\lVert r_\theta(x + \sigma\varepsilon) - x\rVert^2` (``fit(..., method="dae")``). Its optimum is the
  posterior mean :math:`r^\star(\tilde x) = \mathbb E[x \mid \tilde x]`, so by Tweedie's formula the vector field
  :math:`r^\star(x) - x = \sigma^2\nabla_x\log p_\sigma(x)` is the score of the noised data density scaled by
  :math:`\sigma^2`: the DAE *is* denoising score matching (:func:`pyebm.train.dsm_loss`) with the score
  parameterised as :math:`(r_\theta(x) - x)/\sigma^2` (pyebm's DSM loss is the denoising loss over
  :math:`\sigma^2`; Vincent, 2011; Alain & Bengio, 2014). For Gaussian data :math:`\mathcal N(\mu, \Sigma)`,
  :math:`r^\star(x) = \mu + \Sigma(\Sigma + \sigma^2 I)^{-1}(x - \mu)`.
* :class:`MaskedReconstruction`: a coordinate hidden behind a mask is predicted from the others,
  :math:`E(x) = \tfrac12\sum_i (x_i - r_\theta(x_{\setminus i})_i)^2`, trained by reconstructing the masked part of
  randomly masked inputs (``fit(..., method="masked")``). With one coordinate masked at a time the optimum is the
  conditional mean :math:`\mathbb E[x_i \mid x_{\setminus i}]`, the quantity of Besag's pseudo-likelihood: for
  Gaussian data with precision :math:`\Lambda`, :math:`\mu_i - \sum_{j\ne i}\Lambda_{ij}(x_j - \mu_j)/\Lambda_{ii}`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..energy import Energy
from .networks import mlp

__all__ = ["DenoisingAutoencoder", "MaskedReconstruction"]


class DenoisingAutoencoder(Energy):
    r"""A denoising autoencoder as an energy, :math:`E(x) = \tfrac12\lVert x - r_\theta(x)\rVert^2`.

    Parameters
    ----------
    dim : int
        Dimension of :math:`x` (inputs of shape ``(..., dim)``).
    hidden : sequence of int
        Widths of the reconstruction MLP (SiLU); ``()`` is linear, :math:`r(x) = Ax + b`, whose optimum is known in
        closed form for Gaussian data (module docstring).

    Notes
    -----
    :meth:`vector_field` :math:`r_\theta(x) - x` points from a point towards the data; after training with noise
    level :math:`\sigma` it estimates :math:`\sigma^2\nabla_x\log p_\sigma(x)`, and :meth:`score` divides it by
    :math:`\sigma^2`. The energy is low on the data (reconstructed well) but is not :math:`-\log p`: for Gaussian
    data it is :math:`\tfrac12\sigma^4 (x-\mu)^\top(\Sigma+\sigma^2I)^{-2}(x-\mu)`.
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp(dim, dim, hidden)
        self.dim = dim

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`r_\\theta(x)`."""
        return self.net(x)

    def vector_field(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`r_\\theta(x) - x`, the step from ``x`` to its reconstruction."""
        return self.net(x) - x

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """The score estimate :math:`(r_\\theta(x) - x)/\\sigma^2` of the data noised at ``sigma`` (the training
        noise level)."""
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0 (the noise level the autoencoder was trained at), got {sigma}.")
        return self.vector_field(x) / sigma**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.vector_field(x) ** 2).sum(-1)


class MaskedReconstruction(Energy):
    r"""A masked model as an energy: each coordinate predicted from the others,
    :math:`E(x) = \tfrac12\sum_i (x_i - r_\theta(x \odot (1 - e_i), e_i)_i)^2`.

    The reconstruction sees the input with the masked coordinates set to zero and the mask itself (the "mask
    token"): :math:`r_\theta(x, m) = \mathrm{MLP}_\theta([x \odot (1 - m), m])`.

    Parameters
    ----------
    dim : int
        Number of coordinates (positions of a sequence, entries of a vector).
    hidden : sequence of int
        Widths of the MLP; ``()`` is linear, whose single-mask optimum for Gaussian data is the conditional-mean
        regression (module docstring).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp(2 * dim, dim, hidden)
        self.dim = dim

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:math:`r_\\theta(x, m)` for a boolean ``mask`` broadcastable to ``x`` (True: hidden)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected inputs with {self.dim} coordinates in the last dimension, got "
                             f"{tuple(x.shape)}.")
        mask = torch.broadcast_to(mask, x.shape).to(x.dtype)
        return self.net(torch.cat([x * (1 - mask), mask], -1))

    def conditional_means(self, x: torch.Tensor) -> torch.Tensor:
        """Each coordinate predicted with only itself masked: entry ``i`` of the result is
        :math:`r_\\theta(x \\odot (1 - e_i), e_i)_i` (``dim`` passes, batched)."""
        eye = torch.eye(self.dim, dtype=torch.bool, device=x.device)
        masked = self.reconstruct(x.unsqueeze(-2).expand(*x.shape[:-1], self.dim, self.dim), eye)
        return masked.diagonal(dim1=-2, dim2=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.conditional_means(x)) ** 2).sum(-1)
