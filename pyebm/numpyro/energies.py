"""The reference-energy zoo for JAX: the same energies as :mod:`pyebm.energies`, written in ``jax.numpy``.

Each wraps its torch twin for the known answers (``log_normalizer``, ``mean``, ``covariance``), so the
closed forms live in one place; only the energy itself is written again, in JAX.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.nn import logsumexp

from .. import energies as torch_zoo
from ..inference.approximations import to_numpy

__all__ = ["Gaussian", "Banana", "DoubleWell", "Ring", "Funnel", "GaussianMixture"]


class _Reference:
    """Answers from the torch twin, as NumPy/JAX arrays."""

    def __init__(self, reference):
        self.reference = reference
        self.dim = reference.dim

    def log_normalizer(self, beta: float = 1.0) -> float:
        return self.reference.log_normalizer(beta)

    def mean(self, beta: float = 1.0):
        return jnp.asarray(to_numpy(self.reference.mean(beta)))

    def covariance(self, beta: float = 1.0):
        return jnp.asarray(to_numpy(self.reference.covariance(beta)))


class Gaussian(_Reference):
    r""":math:`E(x) = \tfrac12(x-\mu)^\top A(x-\mu)` (see :class:`pyebm.energies.Gaussian`)."""

    def __init__(self, mean, precision=None, *, covariance=None):
        import torch

        as_t = lambda a: None if a is None else torch.tensor(np.array(a), dtype=torch.float64)  # noqa: E731
        super().__init__(torch_zoo.Gaussian(as_t(mean), as_t(precision), covariance=as_t(covariance)))
        self.mu = jnp.asarray(to_numpy(self.reference.mu))
        self.precision = jnp.asarray(to_numpy(self.reference.precision))

    def __call__(self, x):
        d = x - self.mu
        return 0.5 * jnp.sum((d @ self.precision) * d, -1)


class Banana(_Reference):
    """The banana of :class:`pyebm.energies.Banana`."""

    def __init__(self, s: float = 1.0, b: float = 0.5):
        super().__init__(torch_zoo.Banana(s, b))
        self.s, self.b = s, b

    def __call__(self, x):
        x1, x2 = x[..., 0], x[..., 1]
        return 0.5 * (x1 / self.s) ** 2 + 0.5 * (x2 - self.b * (x1**2 - self.s**2)) ** 2


class DoubleWell(_Reference):
    """Independent double wells of :class:`pyebm.energies.DoubleWell`."""

    def __init__(self, dim: int = 1, height: float = 1.0):
        super().__init__(torch_zoo.DoubleWell(dim, height))
        self.height = height

    def __call__(self, x):
        return self.height * jnp.sum((x**2 - 1) ** 2, -1)


class Ring(_Reference):
    """The ring of :class:`pyebm.energies.Ring`."""

    def __init__(self, radius: float = 2.0, width: float = 0.3):
        super().__init__(torch_zoo.Ring(radius, width))
        self.radius, self.width = radius, width

    def __call__(self, x):
        return (jnp.linalg.norm(x, axis=-1) - self.radius) ** 2 / (2 * self.width**2)


class Funnel(_Reference):
    """Neal's funnel of :class:`pyebm.energies.Funnel`, coordinates ``(v, x_1, ...)``."""

    def __init__(self, dim: int = 2, scale: float = 3.0):
        super().__init__(torch_zoo.Funnel(dim, scale))
        self.scale = scale

    def __call__(self, x):
        v, rest = x[..., 0], x[..., 1:]
        return v**2 / (2 * self.scale**2) + jnp.sum(rest**2, -1) / (2 * jnp.exp(v)) + (self.dim - 1) * v / 2


class GaussianMixture(_Reference):
    """The mixture energy of :class:`pyebm.energies.GaussianMixture`."""

    def __init__(self, means, scale: float = 1.0, weights=None):
        import torch

        super().__init__(torch_zoo.GaussianMixture(torch.tensor(np.array(means), dtype=torch.float64), scale,
                                                   None if weights is None else torch.tensor(np.array(weights))))
        self.means = jnp.asarray(to_numpy(self.reference.means))
        self.log_weights = jnp.asarray(to_numpy(self.reference.log_weights))
        self.scale = scale

    def __call__(self, x):
        sq = jnp.sum((x[..., None, :] - self.means) ** 2, -1)
        log_n = -0.5 * sq / self.scale**2 - 0.5 * self.dim * jnp.log(2 * jnp.pi * self.scale**2)
        return -logsumexp(self.log_weights + log_n, -1)
