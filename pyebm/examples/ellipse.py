r"""Learning a manifold two ways: an ellipse, embedded in a space of growing dimension.

The data lie near an ellipse with semi-axes 2 and 1, placed in a random 2-D plane of :math:`\mathbb R^D`
(:func:`embedding`). Two energies can learn it:

* **regularized latent variable**: a decoder from a 1-D angle, :math:`E(x, \theta) = \tfrac12\lVert x -
  g_\phi(\cos\theta, \sin\theta)\rVert^2` (:class:`AngleDecoder`), trained by :math:`F_\infty(x) = \min_\theta E` over a
  grid of angles (``fit(..., "free_energy", latent=angles(K))``). Only a closed curve can have zero energy, whatever
  :math:`D` is: the latent's one dimension is the regulariser;
* **contrastive**: any energy network pushed down on the data and up on negatives (NCE with isotropic Gaussian noise,
  ``ratio`` negatives per data point). Off the plane the energy is shaped only where negatives land, and the share of
  noise that lands near a curve in :math:`D` dimensions falls exponentially with :math:`D`.

The quality measure needs no grid: :func:`separation` is the probability that a point at a given distance off the
manifold gets a higher energy than a point on it (an AUC; 1 is perfect, 0.5 is blind).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from ..energies.latent import Ellipse
from ..energies.networks import mlp
from ..energy import Energy

__all__ = ["embedding", "sample", "distance", "angles", "AngleDecoder", "off_manifold", "separation", "train_latent",
           "train_contrastive"]

_ELLIPSE = Ellipse(2.0, 1.0)


def embedding(dim: int, seed: int = 0) -> torch.Tensor:
    """A ``(dim, 2)`` matrix with orthonormal columns (the identity for ``dim = 2``): the ellipse's plane."""
    if dim < 2:
        raise ValueError(f"the ellipse needs at least 2 dimensions, got {dim}.")
    if dim == 2:
        return torch.eye(2, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=torch.float64))[0]


def sample(n: int, dim: int = 2, noise: float = 0.02, seed: int = 0) -> torch.Tensor:
    """``n`` points of the ellipse, uniform in angle, moved by isotropic in-plane Gaussian noise of sd ``noise``,
    placed in ``R^dim`` by :func:`embedding`; default dtype."""
    g = torch.Generator().manual_seed(seed)
    theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    plane = torch.stack([2 * theta.cos(), theta.sin()], -1) + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return (plane @ embedding(dim).T).to(torch.get_default_dtype())


def distance(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Exact Euclidean distance of points ``x`` (``(..., dim)``) to the embedded ellipse: the in-plane distance by a
    search over 2000 angles refined by Newton steps (equal to a 20000-angle search to 1e-13), plus the out-of-plane
    part."""
    Q = embedding(dim or x.shape[-1]).to(x.dtype)
    inplane = x @ Q
    out = ((x - inplane @ Q.T) ** 2).sum(-1)
    return (_ELLIPSE.distance_squared(inplane, num=2000).to(x.dtype) + out).sqrt()


def angles(num: int = 128, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``num`` equally spaced angles as support points ``(num, 2)`` of :math:`(\\cos\\theta, \\sin\\theta)`."""
    theta = torch.linspace(0, 2 * math.pi, num + 1, dtype=dtype or torch.get_default_dtype())[:-1]
    return torch.stack([theta.cos(), theta.sin()], -1)


class AngleDecoder(Energy):
    r""":math:`E(x, z) = \tfrac12\lVert x - g_\phi(z)\rVert^2` with :math:`z = (\cos\theta, \sin\theta)` and
    :math:`g_\phi` an MLP ``2 -> hidden -> dim`` (SiLU): a one-dimensional latent, so its zero set is a closed
    curve. :meth:`curve` decodes a grid of angles."""

    def __init__(self, dim: int = 2, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp(2, dim, hidden)

    def curve(self, num: int = 256) -> torch.Tensor:
        """The decoded curve :math:`g_\\phi(\\theta)` at ``num`` angles: ``(num, dim)``."""
        return self.net(angles(num, self.net[0].weight.dtype))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.net(z)) ** 2).sum(-1)


def off_manifold(n: int, dim: int, radius: float, seed: int = 0) -> torch.Tensor:
    """``n`` points moved off the (noise-free) ellipse by ``radius`` in a uniformly random direction of
    ``R^dim``; their exact distance is at most ``radius`` (:func:`distance` gives it)."""
    g = torch.Generator().manual_seed(seed)
    on = sample(n, dim, noise=0.0, seed=seed + 1).double()
    direction = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return (on + radius * direction / direction.norm(dim=-1, keepdim=True)).to(torch.get_default_dtype())


def separation(energy: Callable[[torch.Tensor], torch.Tensor], on: torch.Tensor, off: torch.Tensor) -> float:
    """The probability that a point of ``off`` has a higher energy than a point of ``on`` (ties count half): the AUC
    of the energy as a detector of off-manifold points."""
    with torch.no_grad():
        e_on, e_off = energy(on).flatten(), energy(off).flatten()
    greater = (e_off[:, None] > e_on[None]).double().mean()
    ties = (e_off[:, None] == e_on[None]).double().mean()
    return float(greater + 0.5 * ties)


def train_latent(data: torch.Tensor, steps: int = 600, num_angles: int = 64, hidden: Sequence[int] = (64, 64),
                 seed: int = 0) -> tuple[AngleDecoder, Callable, float]:
    r"""The regularized latent-variable energy: an :class:`AngleDecoder` trained by :math:`F_\infty` over
    ``num_angles`` angles (``fit(..., "free_energy")``, batch 128, Adam 3e-3 decayed to 1.5e-4). Returns the decoder,
    :math:`F_\infty` as a function of ``x`` and the training wall time in seconds."""
    from ..train import fit, latent_free_energy

    torch.manual_seed(seed)
    decoder = AngleDecoder(data.shape[1], hidden)
    support = angles(num_angles, data.dtype)
    start = time.perf_counter()
    fit(decoder, data, "free_energy", latent=support, steps=steps, batch_size=128, lr=3e-3, lr_decay=0.05, seed=seed,
        progress=False)
    wall = time.perf_counter() - start

    return decoder, lambda x: latent_free_energy(decoder, x, support), wall


def train_contrastive(data: torch.Tensor, ratio: int = 1, steps: int = 600, hidden: Sequence[int] = (64, 64),
                      noise: float | str = 1.2, seed: int = 0) -> tuple[Energy, float]:
    """The contrastive energy: an MLP energy trained by NCE with ``ratio`` negatives per data point, drawn from an
    isotropic Gaussian of sd ``noise`` (or ``"gaussian"``: the Gaussian fitted to the data, degenerate off the
    ellipse's plane), batch 128, Adam 1e-3 decayed to 1e-4. Returns the energy and the training wall time."""
    from ..energies import MLPEnergy
    from ..train import fit

    dim = data.shape[1]
    if not isinstance(noise, str):
        scale = torch.full((dim,), float(noise), dtype=data.dtype)
        noise = torch.distributions.Independent(torch.distributions.Normal(torch.zeros_like(scale), scale), 1)
    torch.manual_seed(seed)
    energy = MLPEnergy(dim, hidden)
    start = time.perf_counter()
    fit(energy, data, "nce", noise=noise, ratio=ratio, steps=steps, batch_size=128, lr=1e-3, lr_decay=0.1, seed=seed,
        progress=False)
    return energy, time.perf_counter() - start
