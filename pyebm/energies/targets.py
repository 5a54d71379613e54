r"""2-D training targets with exact densities: 8 Gaussians, two moons, rings, checkerboard.

Each target is a normalised density written as an energy, :math:`E(x) = -\log p(x)` (so :math:`\log Z = 0` at
β = 1), with a sampler. They are the ground truth for judging learned energies: a learned energy normalised on a
grid has test negative log-likelihood :math:`\ge \mathbb H[p]`, with equality only when it is right
(see :func:`pyebm.train.evaluate_2d`). Densities are exact: closed forms where there are (mixtures, the rings
through the Bessel function :math:`I_0`, the checkerboard through :math:`\Phi`), Gauss–Legendre quadrature
along the arcs for the two moons (error far below 1e-8).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..state import resolve_seed
from .reference import GaussianMixture, ReferenceEnergy

__all__ = ["Target2D", "EightGaussians", "TwoMoons", "Rings", "Checkerboard"]

_LOG_2PI = math.log(2 * math.pi)


class Target2D(ReferenceEnergy):
    """A normalised 2-D density as an energy :math:`-\\log p`, with ``sample(n, seed)`` and ``entropy()``."""

    dim = 2
    grid_points = 401
    box = 4.0

    @property
    def bounds(self) -> list:
        return [(-self.box, self.box)] * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def log_normalizer(self, beta: float = 1.0) -> float:
        return 0.0 if beta == 1.0 else super().log_normalizer(beta)

    def sample(self, n: int, seed: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``n`` independent draws, shape ``(n, 2)``; the global RNG is not touched."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}.")
        g = torch.Generator().manual_seed(resolve_seed(seed))
        return self._sample(n, g).to(dtype or torch.get_default_dtype())

    def _sample(self, n: int, g: torch.Generator) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def grid(self, beta: float = 1.0, num: int | None = None):
        """As :meth:`ReferenceEnergy.grid`; the target's own density (β = 1) is computed once per grid size, since
        every evaluation of a learned energy compares against it."""
        if beta != 1.0:
            return super().grid(beta, num)
        num = num or self.grid_points
        cache = self.__dict__.setdefault("_grids", {})
        if num not in cache:
            cache[num] = super().grid(1.0, num)
        return cache[num]

    def entropy(self) -> float:
        r""":math:`\mathbb H[p] = -\int p \log p`, on the grid (the trapezoid rule over :attr:`bounds`)."""
        grid = self.grid()
        p = grid.density
        return float(-(grid._weights() * p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum())


class EightGaussians(Target2D):
    r"""Eight equal Gaussians of standard deviation ``scale`` on a circle of radius ``radius``."""

    def __init__(self, radius: float = 2.0, scale: float = 0.3):
        super().__init__()
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        self.mixture = GaussianMixture(radius * torch.stack([angles.cos(), angles.sin()], -1), scale)
        self.radius, self.scale = float(radius), float(scale)
        self.box = radius + 7 * scale

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -self.mixture(x.to(torch.float64)).to(x.dtype)

    def _sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        k = torch.randint(8, (n,), generator=g)
        return self.mixture.means[k] + self.scale * torch.randn(n, 2, dtype=torch.float64, generator=g)


def _smeared_curve_log_prob(x: torch.Tensor, points: torch.Tensor, log_weights: torch.Tensor,
                            noise: float) -> torch.Tensor:
    """log Σ_j w_j N(x; c_j, noise² I): a quadrature of a density spread along curves (in chunks of points)."""
    flat = x.reshape(-1, 2)
    out = torch.cat([
        torch.logsumexp(log_weights - 0.5 * torch.cdist(chunk, points) ** 2 / noise**2, -1)
        for chunk in flat.split(16384)
    ]) if len(flat) else flat.new_zeros(0)
    return out.reshape(x.shape[:-1]) - _LOG_2PI - 2 * math.log(noise)


class TwoMoons(Target2D):
    r"""scikit-learn's two moons, centred: the arcs :math:`(\cos t, \sin t)` and :math:`(1-\cos t, \tfrac12-\sin t)`,
    :math:`t \sim U(0, \pi)`, shifted by :math:`(-\tfrac12, -\tfrac14)`, plus Gaussian noise of sd ``noise``.

    The density integrates the noise kernel along both arcs by Gauss–Legendre quadrature (200 nodes per arc: node
    spacing 0.016 against a kernel width of 0.1, relative error below 1e-10).
    """

    box = 3.0

    def __init__(self, noise: float = 0.1, nodes: int = 200):
        super().__init__()
        self.noise = float(noise)
        t, w = np.polynomial.legendre.leggauss(nodes)
        t = torch.as_tensor((t + 1) * math.pi / 2)
        w = torch.as_tensor(w / 2)  # weights of the uniform law on [0, π]
        self.register_buffer("points", torch.cat([self._arcs(t, 0), self._arcs(t, 1)]))
        self.register_buffer("log_weights", torch.cat([w, w]).log() - math.log(2))

    @staticmethod
    def _arcs(t: torch.Tensor, moon) -> torch.Tensor:
        upper = torch.stack([t.cos(), t.sin()], -1)
        lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], -1)
        if isinstance(moon, int):
            pts = upper if moon == 0 else lower
        else:
            pts = torch.where(moon[:, None] == 0, upper, lower)
        return pts - torch.tensor([0.5, 0.25], dtype=pts.dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return _smeared_curve_log_prob(x.to(torch.float64), self.points, self.log_weights, self.noise).to(x.dtype)

    def _sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        t = torch.rand(n, dtype=torch.float64, generator=g) * math.pi
        moon = torch.randint(2, (n,), generator=g)
        return self._arcs(t, moon) + self.noise * torch.randn(n, 2, dtype=torch.float64, generator=g)


class Rings(Target2D):
    r"""Concentric rings of radii ``radii`` (equal mass each), uniform in angle, radial and tangential Gaussian noise
    of sd ``noise``. Exact: :math:`p(x) = \sum_r \frac{w_r}{2\pi\sigma^2} e^{-(|x|^2+r^2)/2\sigma^2} I_0(r|x|/\sigma^2)`."""

    def __init__(self, radii=(1.0, 2.0, 3.0), noise: float = 0.1):
        super().__init__()
        self.register_buffer("radii", torch.as_tensor(radii, dtype=torch.float64))
        self.noise = float(noise)
        self.box = float(self.radii.max()) + 8 * self.noise

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x64, s2 = x.to(torch.float64), self.noise**2
        rho = x64.norm(dim=-1, keepdim=True)
        z = rho * self.radii / s2
        terms = -(rho**2 + self.radii**2) / (2 * s2) + torch.special.i0e(z).log() + z
        log_p = torch.logsumexp(terms, -1) - math.log(len(self.radii)) - _LOG_2PI - math.log(s2)
        return log_p.to(x.dtype)

    def _sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        r = self.radii[torch.randint(len(self.radii), (n,), generator=g)]
        phi = torch.rand(n, dtype=torch.float64, generator=g) * 2 * math.pi
        return r[:, None] * torch.stack([phi.cos(), phi.sin()], -1) + self.noise * torch.randn(
            n, 2, dtype=torch.float64, generator=g)


class Checkerboard(Target2D):
    r"""Uniform on the dark squares of a ``squares`` × ``squares`` board over :math:`[-2, 2]^2`, blurred by Gaussian
    noise of sd ``noise``: :math:`p(x) = \frac1A\sum_{\rm dark} \prod_d [\Phi(\frac{h_d-x_d}\sigma)-\Phi(\frac{l_d-x_d}\sigma)]`."""

    box = 3.0

    def __init__(self, squares: int = 4, noise: float = 0.05):
        super().__init__()
        self.noise, self.squares = float(noise), int(squares)
        side = 4.0 / squares
        lows = [(-2 + i * side, -2 + j * side) for i in range(squares) for j in range(squares) if (i + j) % 2 == 0]
        self.register_buffer("lows", torch.tensor(lows, dtype=torch.float64))
        self.side = side

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x64 = x.to(torch.float64)[..., None, :]
        lo, hi = (self.lows - x64) / self.noise, (self.lows + self.side - x64) / self.noise
        mass = (torch.special.ndtr(hi) - torch.special.ndtr(lo)).prod(-1).sum(-1)
        area = len(self.lows) * self.side**2
        return (mass.clamp_min(1e-300).log() - math.log(area)).to(x.dtype)

    def _sample(self, n: int, g: torch.Generator) -> torch.Tensor:
        k = torch.randint(len(self.lows), (n,), generator=g)
        u = torch.rand(n, 2, dtype=torch.float64, generator=g)
        return self.lows[k] + self.side * u + self.noise * torch.randn(n, 2, dtype=torch.float64, generator=g)
