r"""A zoo of reference energies with known answers.

Each energy :math:`E` defines the Gibbs density :math:`p_\beta(x) = \exp(-\beta E(x)) / Z(\beta)` and
knows its exact :math:`\log Z(\beta)`, mean and covariance, in closed form where there is one and
otherwise by quadrature (1-D) or on a grid (2-D), accurate to far below any Monte Carlo error.
Inputs have shape ``(*batch, dim)``; energies have shape ``batch``. Reference answers (means,
covariances) are float64 wherever they are computed rather than stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..diagnostics import check_beta
from ..energy import Energy

__all__ = [
    "ReferenceEnergy", "Gaussian", "Banana", "DoubleWell", "PhiFour", "Ring", "Funnel", "GaussianMixture",
    "GridDensity", "grid_density",
]


def _positive(owner: str, name: str, value) -> float:
    """A finite number > 0 (the zoo's closed forms hold only there), else a ValueError naming it."""
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}: {name} must be a finite number > 0, got {value!r}; the known answers hold only "
                         "there.")
    return value


def _quartic_box(beta: float, height: float, dim: int) -> list:
    """The box outside which a quartic well :math:`h(x^2-1)^2` at inverse temperature β holds under e^-60 of its
    peak density, per coordinate."""
    L = math.sqrt(1 + math.sqrt(60 / (beta * height)))
    return [(-L, L)] * dim


def _t(x, dtype=None) -> torch.Tensor:
    """A tensor in ``dtype``; floating tensors keep their own dtype unless one is asked for."""
    if dtype is None and isinstance(x, torch.Tensor) and x.dtype.is_floating_point:
        return x
    return torch.as_tensor(x, dtype=dtype or torch.get_default_dtype())


@dataclass
class GridDensity:
    r"""A 1-D or 2-D energy evaluated on a regular grid and normalised there.

    Attributes
    ----------
    axes : list of tensors
        Grid coordinates along each dimension.
    energy : tensor
        :math:`E` at the grid points, shape ``(num,)`` or ``(num, num)`` (``indexing="ij"``).
    log_normalizer : float
        :math:`\log \int \exp(-\beta E)` by the trapezoid rule (spectrally accurate for densities that
        vanish at the box's edges).
    density : tensor
        Normalised density at the grid points.
    """

    axes: list
    energy: torch.Tensor
    log_normalizer: float
    density: torch.Tensor
    beta: float

    def _weights(self) -> torch.Tensor:
        w = None
        for a in self.axes:
            wa = torch.full_like(a, float(a[1] - a[0]))
            wa[0] = wa[-1] = wa[0] / 2
            w = wa if w is None else w[:, None] * wa[None, :]
        return w

    def points(self) -> torch.Tensor:
        mesh = torch.meshgrid(*self.axes, indexing="ij")
        return torch.stack(mesh, -1)

    def mean(self) -> torch.Tensor:
        p = self.density * self._weights()
        return (self.points() * p[..., None]).reshape(-1, len(self.axes)).sum(0)

    def covariance(self) -> torch.Tensor:
        p = (self.density * self._weights()).reshape(-1)
        x = self.points().reshape(-1, len(self.axes)) - self.mean()
        return (x * p[:, None]).T @ x


def grid_density(energy, bounds, num: int = 401, beta: float = 1.0) -> GridDensity:
    r"""Normalise :math:`\exp(-\beta E)` on a regular grid over ``bounds`` (1-D or 2-D), in float64.

    Parameters
    ----------
    energy : callable
        Maps ``(*batch, d)`` to ``batch``.
    bounds : sequence of (low, high)
        One pair per dimension.
    num : int
        Points per dimension.
    """
    bounds = [tuple(map(float, b)) for b in bounds]
    if len(bounds) not in (1, 2):
        raise ValueError(f"grid_density handles 1-D and 2-D energies, got {len(bounds)} dimensions.")
    for lo, hi in bounds:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"grid_density: each bound must be (low, high) with finite low < high, got {(lo, hi)}.")
    if isinstance(num, bool) or not isinstance(num, int) or num < 3:
        raise ValueError(f"grid_density: num must be an int >= 3 (points per dimension), got {num!r}.")
    beta = check_beta(beta)
    axes = [torch.linspace(lo, hi, num, dtype=torch.float64) for lo, hi in bounds]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    with torch.no_grad():
        e = _to64(energy)(points)
    if not isinstance(e, torch.Tensor) or tuple(e.shape) != tuple(points.shape[:-1]):
        shape = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
        raise ValueError(f"grid_density: the energy must map the grid {tuple(points.shape)} to one energy per point, "
                         f"shape {tuple(points.shape[:-1])}; got {shape}.")
    e = e.to(torch.float64)
    tmp = GridDensity(axes, e, 0.0, torch.zeros_like(e), beta)
    logw = tmp._weights().log()
    log_z = float(torch.logsumexp((-beta * e + logw).reshape(-1), 0))
    return GridDensity(axes, e, log_z, torch.exp(-beta * e - log_z), beta)


def _to64(energy):
    if isinstance(energy, torch.nn.Module):
        import copy

        return copy.deepcopy(energy).double()
    return energy


class ReferenceEnergy(Energy):
    """An energy with known answers: ``log_normalizer(beta)``, ``mean(beta)``, ``covariance(beta)``.

    The defaults normalise on a grid over :attr:`bounds` (1-D and 2-D); subclasses override them
    with closed forms where those exist.
    """

    dim: int
    grid_points = 801

    @property
    def bounds(self) -> list:
        raise NotImplementedError

    def grid(self, beta: float = 1.0, num: int | None = None) -> GridDensity:
        if self.dim > 2:
            raise NotImplementedError(f"{type(self).__name__} has no grid answer in {self.dim} dimensions.")
        return grid_density(self, self.bounds_for(beta), num or self.grid_points, beta)

    def bounds_for(self, beta: float) -> list:
        """Box holding all but a negligible mass of :math:`p_\\beta` (wider when β is small)."""
        return self.bounds

    def log_normalizer(self, beta: float = 1.0) -> float:
        return self.grid(beta).log_normalizer

    def mean(self, beta: float = 1.0) -> torch.Tensor:
        return self.grid(beta).mean()

    def covariance(self, beta: float = 1.0) -> torch.Tensor:
        return self.grid(beta).covariance()


class Gaussian(ReferenceEnergy):
    r"""Quadratic energy :math:`E(x) = \tfrac12 (x-\mu)^\top A (x-\mu)`, :math:`A` the precision.

    Exact: :math:`p_\beta = \mathcal N(\mu, (\beta A)^{-1})`,
    :math:`\log Z(\beta) = \tfrac D2 \log 2\pi - \tfrac12 \log\det(\beta A)`.
    """

    def __init__(self, mean, precision=None, *, covariance=None):
        super().__init__()
        mean = _t(mean)
        if (precision is None) == (covariance is None):
            raise ValueError("pass exactly one of precision and covariance.")
        A = _t(precision, mean.dtype) if precision is not None else torch.linalg.inv(_t(covariance, mean.dtype))
        if A.shape != (mean.numel(), mean.numel()):
            raise ValueError(f"precision must have shape {(mean.numel(), mean.numel())}, got {tuple(A.shape)}.")
        if not bool(torch.isfinite(mean).all()) or not bool(torch.isfinite(A).all()):
            raise ValueError("Gaussian: the mean and precision must be finite.")
        if not torch.allclose(A, A.T, rtol=1e-6, atol=1e-12 * float(A.abs().max())):
            raise ValueError("Gaussian: the precision matrix must be symmetric.")
        if int(torch.linalg.cholesky_ex(A).info) != 0:
            raise ValueError("the precision matrix must be symmetric positive definite.")
        self.register_buffer("mu", mean)
        self.register_buffer("precision", 0.5 * (A + A.T))
        self.dim = mean.numel()

    @property
    def bounds(self) -> list:
        sd = self.covariance().diagonal().sqrt()
        return [(float(m - 8 * s), float(m + 8 * s)) for m, s in zip(self.mu, sd)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mu
        return 0.5 * ((d @ self.precision) * d).sum(-1)

    def log_normalizer(self, beta: float = 1.0) -> float:
        return 0.5 * self.dim * math.log(2 * math.pi) - 0.5 * float(torch.logdet(beta * self.precision.double()))

    def mean(self, beta: float = 1.0) -> torch.Tensor:
        return self.mu.clone()

    def covariance(self, beta: float = 1.0) -> torch.Tensor:
        return torch.linalg.inv(beta * self.precision)


class Banana(ReferenceEnergy):
    r"""A banana (Rosenbrock-type twist of a Gaussian) in 2-D:

    .. math:: E(x) = \frac{x_1^2}{2 s^2} + \frac12\bigl(x_2 - b\,(x_1^2 - s^2)\bigr)^2 .

    Exact, because the twist is a shear of unit Jacobian: :math:`\log Z(\beta) = \log(2\pi s/\beta)`,
    :math:`\mathbb E x = (0,\; b s^2(1/\beta - 1))`, :math:`\operatorname{Var} x_1 = s^2/\beta`,
    :math:`\operatorname{Var} x_2 = 1/\beta + 2 b^2 s^4/\beta^2`, :math:`\operatorname{Cov}(x_1,x_2) = 0`.
    """

    dim = 2

    def __init__(self, s: float = 1.0, b: float = 0.5):
        super().__init__()
        self.s, self.b = _positive("Banana", "s", s), float(b)
        if not math.isfinite(self.b):
            raise ValueError(f"Banana: b must be finite, got {b!r}.")

    @property
    def bounds(self) -> list:
        return self.bounds_for(1.0)

    def bounds_for(self, beta: float) -> list:
        w = 7 * self.s / math.sqrt(beta)
        lo2 = -self.b * self.s**2 - 8 / math.sqrt(beta)
        return [(-w, w), (lo2, self.b * (w**2 - self.s**2) * 0.6 + 8 / math.sqrt(beta))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        return 0.5 * (x1 / self.s) ** 2 + 0.5 * (x2 - self.b * (x1**2 - self.s**2)) ** 2

    def log_normalizer(self, beta: float = 1.0) -> float:
        return math.log(2 * math.pi * self.s / beta)

    def mean(self, beta: float = 1.0) -> torch.Tensor:
        return _t([0.0, self.b * self.s**2 * (1 / beta - 1)], torch.float64)

    def covariance(self, beta: float = 1.0) -> torch.Tensor:
        return torch.diag(_t([self.s**2 / beta, 1 / beta + 2 * self.b**2 * self.s**4 / beta**2], torch.float64))


class DoubleWell(ReferenceEnergy):
    r"""Independent double wells, :math:`E(x) = h \sum_i (x_i^2 - 1)^2`: minima at :math:`x_i = \pm 1`.

    Exact by 1-D quadrature (the density factorises): :math:`\log Z = D \log Z_1`, mean zero,
    diagonal covariance.
    """

    def __init__(self, dim: int = 1, height: float = 1.0):
        super().__init__()
        if isinstance(dim, bool) or int(dim) != dim or dim < 1:
            raise ValueError(f"DoubleWell: dim must be an int >= 1, got {dim!r}.")
        self.dim, self.height = int(dim), _positive("DoubleWell", "height", height)

    @property
    def bounds(self) -> list:
        return self.bounds_for(1.0)

    def bounds_for(self, beta: float) -> list:
        return _quartic_box(beta, self.height, self.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.height * ((x**2 - 1) ** 2).sum(-1)

    def _one_d(self, beta: float) -> GridDensity:
        return grid_density(lambda x: self.height * (x[..., 0] ** 2 - 1) ** 2, self.bounds_for(beta)[:1], 20001, beta)

    def log_normalizer(self, beta: float = 1.0) -> float:
        return self.dim * self._one_d(beta).log_normalizer

    def mean(self, beta: float = 1.0) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=torch.float64)

    def covariance(self, beta: float = 1.0) -> torch.Tensor:
        return float(self._one_d(beta).covariance()) * torch.eye(self.dim, dtype=torch.float64)


class PhiFour(ReferenceEnergy):
    r"""The :math:`\varphi^4` field on a periodic chain of :math:`n` sites,

    .. math:: E(\varphi) = \sum_{i=1}^{n} \Bigl[\tfrac\kappa2(\varphi_i - \varphi_{i+1})^2 + \tfrac{m^2}{2}\varphi_i^2
              + \lambda(\varphi_i^2 - 1)^2\Bigr], \qquad \varphi_{n+1} = \varphi_1 .

    With a strong coupling :math:`\kappa` the field orders: almost all mass sits near :math:`\varphi \approx +1` or
    :math:`\varphi \approx -1` on every site, two modes of equal weight separated by a barrier that single MCMC
    chains rarely cross. Exact by the transfer matrix: :math:`Z(\beta) = \operatorname{Tr} T^n` with the symmetric
    kernel :math:`T(a, b) = e^{-\beta[\frac\kappa2(a-b)^2 + \frac12 V(a) + \frac12 V(b)]}`, :math:`V` the on-site terms,
    discretised on a fine grid (spectral accuracy for this smooth kernel); the covariance
    :math:`\langle\varphi_i\varphi_j\rangle` from the same eigendecomposition; the mean is zero by symmetry.
    """

    grid_points = 1201

    def __init__(self, n: int = 16, coupling: float = 1.0, quartic: float = 1.0, mass: float = 0.0):
        super().__init__()
        if isinstance(n, bool) or int(n) != n or n < 2:
            raise ValueError(f"PhiFour: n must be an int >= 2, got {n!r}.")
        self.dim, self.coupling = int(n), _positive("PhiFour", "coupling", coupling)
        self.quartic = _positive("PhiFour", "quartic", quartic)
        self.mass = float(mass)
        if not (math.isfinite(self.mass) and self.mass >= 0):
            raise ValueError(f"PhiFour: mass must be a finite number >= 0, got {mass!r}.")

    @property
    def bounds(self) -> list:
        return self.bounds_for(1.0)

    def bounds_for(self, beta: float) -> list:
        return _quartic_box(beta, self.quartic, self.dim)

    def onsite(self, x: torch.Tensor) -> torch.Tensor:
        r"""The on-site terms :math:`\tfrac{m^2}{2}x^2 + \lambda(x^2 - 1)^2`, elementwise."""
        return 0.5 * self.mass * x**2 + self.quartic * (x**2 - 1) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hop = 0.5 * self.coupling * ((x - torch.roll(x, -1, dims=-1)) ** 2).sum(-1)
        return hop + self.onsite(x).sum(-1)

    def _spectrum(self, beta: float):
        """Eigenvalues and eigenvectors of the discretised transfer matrix, and the grid."""
        lo, hi = self.bounds_for(check_beta(beta))[0]
        a = torch.linspace(lo, hi, self.grid_points, dtype=torch.float64)
        h = float(a[1] - a[0])
        half = 0.5 * beta * self.onsite(a)
        log_t = -beta * 0.5 * self.coupling * (a[:, None] - a[None, :]) ** 2 - half[:, None] - half[None, :]
        shift = float(log_t.max())
        values, vectors = torch.linalg.eigh(h * torch.exp(log_t - shift))
        return values, vectors, a, shift

    def log_normalizer(self, beta: float = 1.0) -> float:
        values, _, _, shift = self._spectrum(beta)
        top = float(values.abs().max())
        return self.dim * (shift + math.log(top)) + math.log(float(((values / top) ** self.dim).sum()))

    def mean(self, beta: float = 1.0) -> torch.Tensor:
        return torch.zeros(self.dim, dtype=torch.float64)

    def covariance(self, beta: float = 1.0) -> torch.Tensor:
        values, vectors, a, _ = self._spectrum(beta)
        mu = values / values.abs().max()
        x = vectors.T @ (a[:, None] * vectors)  # <k|phi|l>
        n = self.dim
        d = torch.arange(n)
        corr = torch.stack([(mu[:, None] ** (n - k) * mu[None, :] ** k * x**2).sum() for k in range(n)])
        corr = corr / (mu**n).sum()
        return corr[(d[:, None] - d[None, :]).abs()].to(torch.float64)


class Ring(ReferenceEnergy):
    r"""A ring of radius :math:`r` and width :math:`w` in 2-D, :math:`E(x) = (\|x\| - r)^2 / (2w^2)`.

    Exact: with :math:`\sigma = w/\sqrt\beta`,
    :math:`Z(\beta) = 2\pi\bigl[\sigma^2 e^{-r^2/2\sigma^2} + r\sigma\sqrt{2\pi}\,\Phi(r/\sigma)\bigr]`;
    mean zero; covariance :math:`\tfrac12\mathbb E\|x\|^2 I` by radial quadrature.
    """

    dim = 2

    def __init__(self, radius: float = 2.0, width: float = 0.3):
        super().__init__()
        self.radius, self.width = _positive("Ring", "radius", radius), _positive("Ring", "width", width)

    @property
    def bounds(self) -> list:
        return self.bounds_for(1.0)

    def bounds_for(self, beta: float) -> list:
        L = self.radius + 9 * self.width / math.sqrt(beta)
        return [(-L, L)] * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.norm(dim=-1) - self.radius) ** 2 / (2 * self.width**2)

    def log_normalizer(self, beta: float = 1.0) -> float:
        s, r = self.width / math.sqrt(beta), self.radius
        phi = 0.5 * (1 + math.erf(r / (s * math.sqrt(2))))
        return math.log(2 * math.pi * (s**2 * math.exp(-(r**2) / (2 * s**2)) + r * s * math.sqrt(2 * math.pi) * phi))

    def mean(self, beta: float = 1.0) -> torch.Tensor:
        return torch.zeros(2, dtype=torch.float64)

    def covariance(self, beta: float = 1.0) -> torch.Tensor:
        rho = torch.linspace(0, self.bounds_for(beta)[0][1], 200001, dtype=torch.float64)
        w = rho * torch.exp(-beta * (rho - self.radius) ** 2 / (2 * self.width**2))
        second = float(torch.trapezoid(w * rho**2, rho) / torch.trapezoid(w, rho))
        return 0.5 * second * torch.eye(2, dtype=torch.float64)


class Funnel(ReferenceEnergy):
    r"""Neal's funnel: :math:`v \sim \mathcal N(0, s^2)`, :math:`x_i \mid v \sim \mathcal N(0, e^v)`, i < D.

    .. math:: E(v, x) = \frac{v^2}{2s^2} + \sum_{i=1}^{D-1}\Bigl(\frac{x_i^2}{2e^v} + \frac v2\Bigr).

    Exact for every β, with :math:`c = (D-1)(1-\beta)/2`: :math:`v \sim \mathcal N(c s^2/\beta, s^2/\beta)`,
    :math:`\log Z = \tfrac{D-1}2\log\tfrac{2\pi}\beta + \tfrac12\log\tfrac{2\pi s^2}\beta + \tfrac{c^2s^2}{2\beta}`,
    :math:`\operatorname{Var} x_i = \mathbb E[e^v]/\beta`. Coordinates are ordered ``(v, x_1, ...)``.
    """

    def __init__(self, dim: int = 2, scale: float = 3.0):
        super().__init__()
        if dim < 2:
            raise ValueError("the funnel needs dim >= 2 (v and at least one x).")
        self.dim, self.scale = int(dim), _positive("Funnel", "scale", scale)

    @property
    def bounds(self) -> list:
        return self.bounds_for(1.0)

    def bounds_for(self, beta: float) -> list:
        m, sd = self._v(beta)
        top = m + 6 * sd
        return [(m - 6 * sd, top)] + [(-8 * math.exp(top / 2), 8 * math.exp(top / 2))] * (self.dim - 1)

    def _v(self, beta: float) -> tuple[float, float]:
        c = (self.dim - 1) * (1 - beta) / 2
        return c * self.scale**2 / beta, self.scale / math.sqrt(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, rest = x[..., 0], x[..., 1:]
        return v**2 / (2 * self.scale**2) + (rest**2).sum(-1) / (2 * torch.exp(v)) + (self.dim - 1) * v / 2

    def log_normalizer(self, beta: float = 1.0) -> float:
        c = (self.dim - 1) * (1 - beta) / 2
        s2 = self.scale**2
        return ((self.dim - 1) / 2 * math.log(2 * math.pi / beta) + 0.5 * math.log(2 * math.pi * s2 / beta)
                + c**2 * s2 / (2 * beta))

    def mean(self, beta: float = 1.0) -> torch.Tensor:
        m = torch.zeros(self.dim, dtype=torch.float64)
        m[0] = self._v(beta)[0]
        return m

    def covariance(self, beta: float = 1.0) -> torch.Tensor:
        m, sd = self._v(beta)
        var_x = math.exp(m + sd**2 / 2) / beta
        return torch.diag(_t([sd**2] + [var_x] * (self.dim - 1), torch.float64))


class GaussianMixture(ReferenceEnergy):
    r"""Mixture energy :math:`E(x) = -\log \sum_k w_k \mathcal N(x; \mu_k, \sigma^2 I)`.

    Exact at β = 1 (a normalised density): :math:`\log Z = 0`, mean :math:`\sum_k w_k\mu_k`,
    covariance :math:`\sigma^2 I + \sum_k w_k (\mu_k - \bar\mu)(\mu_k - \bar\mu)^\top`; on a grid
    for other β in 1-2 D.
    """

    def __init__(self, means, scale: float = 1.0, weights=None):
        super().__init__()
        means = _t(means)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}.")
        K = means.shape[0]
        weights = torch.full((K,), 1.0 / K, dtype=means.dtype) if weights is None else _t(weights, means.dtype)
        if weights.shape != (K,) or bool((weights <= 0).any()):
            raise ValueError("weights must be K positive numbers.")
        self.register_buffer("means", means)
        self.register_buffer("log_weights", (weights / weights.sum()).log())
        if not bool(torch.isfinite(means).all()):
            raise ValueError("GaussianMixture: means must be finite.")
        self.scale = _positive("GaussianMixture", "scale", scale)
        self.dim = means.shape[1]

    @property
    def bounds(self) -> list:
        return self.bounds_for(1.0)

    def bounds_for(self, beta: float) -> list:
        pad = 9 * self.scale / math.sqrt(min(beta, 1.0))
        return [(float(self.means[:, d].min()) - pad, float(self.means[:, d].max()) + pad) for d in range(self.dim)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq = ((x[..., None, :] - self.means) ** 2).sum(-1)
        log_n = -0.5 * sq / self.scale**2 - 0.5 * self.dim * math.log(2 * math.pi * self.scale**2)
        return -torch.logsumexp(self.log_weights + log_n, -1)

    def log_normalizer(self, beta: float = 1.0) -> float:
        return 0.0 if beta == 1.0 else super().log_normalizer(beta)

    def mean(self, beta: float = 1.0) -> torch.Tensor:
        if beta != 1.0:
            return super().mean(beta)
        return (self.log_weights.exp()[:, None] * self.means).sum(0)

    def covariance(self, beta: float = 1.0) -> torch.Tensor:
        if beta != 1.0:
            return super().covariance(beta)
        w, d = self.log_weights.exp(), self.means - self.mean()
        return self.scale**2 * torch.eye(self.dim, dtype=d.dtype) + (w[:, None] * d).T @ d
