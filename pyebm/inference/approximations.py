"""What a posterior is made of: a point, a Gaussian (in any curvature structure) or draws, for either backend.

Every approximation follows :class:`Approximation`: ``sample(n, seed) -> {site: (n, *shape)}`` in the constrained
space, ``mean()`` and ``std()`` per site (exact where the approximation has them), and ``ordered(group_by_chain)``,
the draws it stores in their order (``None`` where it stores none). Array maths goes through the backend's seam
(:mod:`pyebm.ops`), so one class serves torch and JAX.
"""

from __future__ import annotations

from functools import cached_property
from typing import Protocol

import numpy as np

from ..ops import ArrayOps
from .curvature import Structure

__all__ = ["Approximation", "PointMass", "Gaussian", "Draws", "to_numpy"]


def to_numpy(v) -> np.ndarray:
    """A torch tensor or any array (JAX, NumPy) as a NumPy array."""
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return np.asarray(v)


class Approximation(Protocol):
    """The protocol of every approximation a :class:`pyebm.Posterior` holds."""

    #: "point", "gaussian", "draws" or "guide"
    kind: str

    def sample(self, n: int, seed: int) -> dict: ...

    def mean(self) -> dict: ...

    def std(self) -> dict: ...

    def ordered(self, group_by_chain: bool) -> dict | None: ...


class PointMass:
    """A single configuration (MAP): every draw is the mode, the spread is zero."""

    kind = "point"

    def __init__(self, values: dict, ops: ArrayOps):
        self.values, self.ops = {k: ops.detach(v) for k, v in values.items()}, ops

    def sample(self, n: int, seed: int) -> dict:
        return {k: self.ops.broadcast_to(v, (n,) + tuple(v.shape)) * 1 for k, v in self.values.items()}

    def mean(self) -> dict:
        return dict(self.values)

    def std(self) -> dict:
        return {k: self.ops.zeros(tuple(v.shape), v) for k, v in self.values.items()}

    def ordered(self, group_by_chain: bool) -> dict:
        """The point as one draw (one chain of one draw)."""
        lead = (1, 1) if group_by_chain else (1,)
        return {k: v.reshape(lead + tuple(v.shape)) for k, v in self.values.items()}


class Gaussian:
    r"""A Gaussian :math:`\mathcal N(\mu, \Sigma)` over the packed unconstrained vector, pushed through the sites'
    transforms; :math:`\Sigma` in any :class:`~pyebm.inference.curvature.Structure`.

    ``loc`` may carry leading batch dimensions (independent Gaussians, one per problem); draws then have shape
    ``(n, *batch, *site_shape)``. Mean and sd are exact for sites on the reals and estimated from a fixed-seed batch of
    draws for constrained ones (reproducible numbers).

    Parameters
    ----------
    layout : Potential or similar
        Anything with ``sites`` (each with ``name`` and ``on_reals``), ``unpack(u)`` and ``constrain(u)``.
    """

    kind = "gaussian"
    num_moment_draws = 20000

    def __init__(self, layout, loc, structure: Structure):
        self.layout, self.loc, self.structure = layout, structure.ops.detach(loc), structure
        self.ops = structure.ops

    @property
    def covariance(self):
        """The dense covariance of the unconstrained vector (built on request)."""
        return self.structure.covariance()

    def sample(self, n: int, seed: int) -> dict:
        eps = self.ops.normal(seed, (n,) + tuple(self.loc.shape), self.loc)
        return self.layout.constrain(self.loc + self.structure.sample(eps))

    @cached_property
    def _moments(self) -> tuple[dict, dict]:
        locs = self.layout.unpack(self.loc)
        spread = getattr(self.layout, "unpack_spread", self.layout.unpack)
        sds = spread(self.structure.variance() ** 0.5)
        mean, std = {}, {}
        draws = None
        if not all(s.on_reals for s in self.layout.sites):
            draws = self.sample(self.num_moment_draws, seed=0)
        for s in self.layout.sites:
            if s.on_reals:
                mean[s.name], std[s.name] = locs[s.name], sds[s.name]
            else:
                mean[s.name], std[s.name] = draws[s.name].mean(0), _sd(draws[s.name])
        return mean, std

    def mean(self) -> dict:
        return dict(self._moments[0])

    def std(self) -> dict:
        return dict(self._moments[1])

    def ordered(self, group_by_chain: bool) -> None:
        return None


def _sd(x):
    """Sample standard deviation over axis 0 (n - 1 in the denominator) for torch or JAX."""
    return x.std(0) if hasattr(x, "detach") else x.std(0, ddof=1)


class Draws:
    """MCMC draws per site, shaped ``(chain, draw, *shape)`` (torch or JAX). ``sample`` takes draws without replacement."""

    kind = "draws"

    def __init__(self, draws: dict, ops: ArrayOps):
        self.draws, self.ops = {k: ops.detach(v) for k, v in draws.items()}, ops

    @property
    def total(self) -> int:
        v = next(iter(self.draws.values()))
        return int(v.shape[0] * v.shape[1])

    def ordered(self, group_by_chain: bool) -> dict:
        if group_by_chain:
            return dict(self.draws)
        return {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self.draws.items()}

    def sample(self, n: int, seed: int) -> dict:
        if n > self.total:
            raise ValueError(f"the posterior holds {self.total} draws; ask for at most that many, or use "
                             "post.draws() for all of them in order.")
        idx = np.random.default_rng(seed).permutation(self.total)[:n]
        flat = self.ordered(False)
        return {k: v[idx] for k, v in flat.items()}

    def mean(self) -> dict:
        return {k: (v * 1.0).mean(0) for k, v in self.ordered(False).items()}  # * 1.0: discrete sites as floats

    def std(self) -> dict:
        return {k: _sd(v * 1.0) for k, v in self.ordered(False).items()}
