"""A small network energy for learning densities: :math:`E_\\theta(x) = \\mathrm{MLP}_\\theta(x)`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..energy import Energy

__all__ = ["MLPEnergy", "GaussianDecoder", "mlp"]

_LOG_2PI = math.log(2 * math.pi)

_ACTIVATIONS = {"silu": nn.SiLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(dim_in: int, dim_out: int, hidden: Sequence[int] = (), activation: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """A fully connected network ``dim_in -> hidden... -> dim_out`` with ``activation`` between layers (``hidden=()``:
    one linear layer); the building block of the network energies and the examples' decoders."""
    layers, width = [], dim_in
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, dim_out))


class MLPEnergy(Energy):
    """A fully connected energy ``dim -> hidden... -> 1``, smooth activations (Langevin and score matching need
    second derivatives), plus an optional confining term ``confine * |x|^2`` that keeps exp(-E) integrable.

    Parameters
    ----------
    dim : int
        Input dimension.
    hidden : sequence of int
        Hidden widths.
    activation : {"silu", "softplus", "tanh", "elu"}
    confine : float
        Weight of the fixed quadratic term (0 to leave it out).
    """

    def __init__(self, dim: int = 2, hidden: Sequence[int] = (128, 128), activation: str = "silu",
                 confine: float = 0.0):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}.")
        self.net = mlp(dim, 1, hidden, _ACTIVATIONS[activation])
        self.confine = float(confine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.net(x).squeeze(-1)
        return e + self.confine * (x**2).sum(-1) if self.confine else e


class GaussianDecoder(Energy):
    r"""The joint energy of a Gaussian latent-variable model, normalised in :math:`x`:

    .. math:: E(x, z) = -\log\bigl[\mathcal N(x;\, g(z),\, \sigma^2 I)\,\mathcal N(z;\, 0, I)\bigr],

    with decoder :math:`g` an MLP of widths ``hidden`` (``()``: linear, :math:`g(z) = Wz + b`, probabilistic PCA)
    and a learnable noise scale :math:`\sigma`. ``normalized = True`` tells pyebm that this energy carries its
    own normaliser (the VAE objective and the collapse guard read it).
    """

    normalized = True

    def __init__(self, latent_dim: int, dim: int, hidden: Sequence[int] = (), noise: float = 1.0):
        super().__init__()
        self.decoder = mlp(latent_dim, dim, hidden)
        self.log_noise = nn.Parameter(torch.tensor(float(noise)).log())
        self.latent_dim, self.dim = latent_dim, dim

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        var = (2 * self.log_noise).exp()
        nll_x = 0.5 * ((x - self.decoder(z)) ** 2).sum(-1) / var + self.dim * (self.log_noise + 0.5 * _LOG_2PI)
        return nll_x + 0.5 * (z**2).sum(-1) + 0.5 * self.latent_dim * _LOG_2PI

    def marginal_covariance(self) -> torch.Tensor:
        """:math:`WW^\\top + \\sigma^2 I` of a linear decoder (the model's covariance of :math:`x`)."""
        if len(self.decoder) != 1:
            raise ValueError("marginal_covariance is closed-form only for a linear decoder (hidden=()).")
        W = self.decoder[0].weight
        return W @ W.T + (2 * self.log_noise).exp() * torch.eye(self.dim, dtype=W.dtype)
