r"""Latent-variable energies :math:`E(x, z)` with the exact limits of their free energies."""

from __future__ import annotations

import math

import torch

from ..energy import Energy
from .reference import _t

__all__ = ["KMeans", "Ellipse", "SparseCoding"]


def _store(module: torch.nn.Module, name: str, value: torch.Tensor, learnable: bool) -> None:
    """Register ``value`` as a parameter (learnable) or a buffer (fixed)."""
    if learnable:
        module.register_parameter(name, torch.nn.Parameter(value.clone()))
    else:
        module.register_buffer(name, value)


class KMeans(Energy):
    r"""k-means energy with a discrete latent (the centre), :math:`E(x, k) = \|x - \mu_k\|^2`.

    ``forward(x, centres)`` returns ``(K, *batch)``: one energy per support point. Its free energy over
    the centres links the two classic models exactly:

    * :math:`\beta = \infty`: :math:`F_\infty(x) = \min_k \|x-\mu_k\|^2`, the k-means cost;
    * finite :math:`\beta`: :math:`-\beta F_\beta(x) - \log K - \tfrac D2\log 2\pi\sigma^2 = \log p_{\rm GMM}(x)`,
      the log-density of the equal-weight Gaussian mixture with shared variance :math:`\sigma^2 = 1/(2\beta)`.

    ``learnable=True`` makes the centres a parameter (``pyebm.train.fit(..., method="kmeans")`` learns them).
    """

    def __init__(self, centres, learnable: bool = False):
        super().__init__()
        centres = _t(centres)
        if centres.dim() != 2:
            raise ValueError(f"centres must have shape (K, D), got {tuple(centres.shape)}.")
        _store(self, "centres", centres, learnable)

    def forward(self, x: torch.Tensor, centres: torch.Tensor | None = None) -> torch.Tensor:
        c = self.centres if centres is None else centres
        return ((x - c.reshape(c.shape[:1] + (1,) * (x.dim() - 1) + c.shape[1:])) ** 2).sum(-1)

    def free_energy(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """:math:`F_\\beta(x)` over the centres (exact logsumexp; ``beta=inf``: the k-means cost)."""
        from ..latent import free_energy

        return free_energy(lambda c: self(x, c), self.centres, beta)

    def mixture_log_density(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        r"""The equal-weight mixture log-density with :math:`\sigma^2 = 1/(2\beta)`, through the free energy."""
        K, D = self.centres.shape
        return -beta * self.free_energy(x, beta) - math.log(K) - 0.5 * D * math.log(math.pi / beta)


class Ellipse(Energy):
    r"""The ellipse manifold with a latent angle: :math:`E(x, \theta) = \|x - (a\cos\theta,\; b\sin\theta)\|^2`.

    ``forward(x, theta)``: ``x`` of shape ``(*batch, 2)``, ``theta`` of shape ``batch``. Exact limit:
    :math:`F_\infty(x) = \min_\theta E` is the squared distance from :math:`x` to the ellipse
    (:meth:`distance_squared`, by a dense search over the angle). At finite β the free energy integrates
    over the circle :math:`\theta \in [0, 2\pi)` (:meth:`free_energy_exact`, 1-D quadrature).
    """

    def __init__(self, a: float = 2.0, b: float = 1.0):
        super().__init__()
        self.a, self.b = float(a), float(b)

    def forward(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return (x[..., 0] - self.a * torch.cos(theta)) ** 2 + (x[..., 1] - self.b * torch.sin(theta)) ** 2

    def angle_guess(self, x: torch.Tensor) -> torch.Tensor:
        """The angle of ``x`` in the ellipse's own coordinates: a start next to the nearest point."""
        return torch.atan2(x[..., 1] / self.b, x[..., 0] / self.a)

    def _angles(self, num: int, dtype) -> torch.Tensor:
        return torch.linspace(0, 2 * math.pi, num + 1, dtype=dtype)[:-1]

    def distance_squared(self, x: torch.Tensor, num: int = 20000) -> torch.Tensor:
        """Squared distance to the ellipse by a dense search over ``num`` angles (in chunks of points, so memory
        stays near 2e7 grid values), refined by Newton steps."""
        theta = self._angles(num, torch.float64)
        x64 = x.double()
        flat = x64.reshape(-1, 2)
        chunk = max(1, 20_000_000 // num)
        best = torch.cat([self(part[:, None, :], theta).argmin(-1) for part in flat.split(chunk)])
        t = theta[best].reshape(x64.shape[:-1]).clone()
        with torch.enable_grad():  # Newton on dE/dθ from the best grid angle (also under torch.no_grad)
            for _ in range(5):
                t = t.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self(x64.detach(), t).sum(), t, create_graph=True)
                (h,) = torch.autograd.grad(g.sum(), t)
                t = (t - g / h).detach()
        return self(x64, t)

    def free_energy_exact(self, x: torch.Tensor, beta: float, num: int = 20000) -> torch.Tensor:
        r""":math:`-\frac1\beta\log\int_0^{2\pi} e^{-\beta E(x,\theta)}d\theta` by the periodic trapezoid rule."""
        theta = self._angles(num, torch.float64)
        e = self(x.double()[..., None, :], theta)
        return -(torch.logsumexp(-beta * e, -1) + math.log(2 * math.pi / num)) / beta


class SparseCoding(Energy):
    r"""Sparse coding: :math:`E(x, z) = \tfrac12\|x - Wz\|^2 + \lambda\|z\|_1`, dictionary :math:`W` (D×M).

    ``forward(x, z)``. Exact limit: :math:`F_\infty(x) = \min_z E(x,z)` is the lasso; :meth:`codes` finds
    its minimiser by FISTA (the L1 term is not smooth, so L-BFGS and Laplace do not apply). For an
    orthonormal dictionary the codes are the soft-thresholded :math:`W^\top x`.

    ``learnable=True`` makes the dictionary a parameter (``pyebm.train.fit(..., method="sparse_coding")``).
    """

    def __init__(self, dictionary, lam: float = 0.1, learnable: bool = False):
        super().__init__()
        _store(self, "dictionary", _t(dictionary), learnable)
        if lam < 0:
            raise ValueError("lam must be >= 0.")
        self.lam = float(lam)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        residual = x - z @ self.dictionary.T
        return 0.5 * (residual**2).sum(-1) + self.lam * z.abs().sum(-1)

    def codes(self, x: torch.Tensor, steps: int = 500) -> torch.Tensor:
        """Lasso codes :math:`\\arg\\min_z E(x, z)` by FISTA, batched over ``x``."""
        W = self.dictionary.detach()
        step = 1.0 / float(torch.linalg.matrix_norm(W, ord=2) ** 2)
        z = y = torch.zeros(x.shape[:-1] + (W.shape[1],), dtype=x.dtype)
        t = 1.0
        for _ in range(steps):
            grad = (y @ W.T - x) @ W
            z_next = torch.nn.functional.softshrink(y - step * grad, step * self.lam)
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            y = z_next + (t - 1) / t_next * (z_next - z)
            z, t = z_next, t_next
        return z

    def min_energy(self, x: torch.Tensor, steps: int = 500) -> torch.Tensor:
        """:math:`F_\\infty(x)`: the energy at the lasso codes."""
        return self(x, self.codes(x, steps))
