"""What a posterior is made of, one small class per kind: a point, a Gaussian, draws, a guide.

Each offers ``sample(n, seed) -> {site: (n, *shape)}`` in the constrained space, and exact
``mean``/``std`` where they have them. Torch-based ones draw inside a seeded scope that restores the
global RNG; :class:`Draws` works for any array backend (torch or JAX), so both backends share it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
import pyro.poutine as poutine
import torch

from ..state import isolated_param_store, seeded
from .space import LatentSpace

__all__ = ["PointMass", "UnconstrainedGaussian", "Draws", "GuideDraws", "to_numpy"]


def to_numpy(v) -> np.ndarray:
    """A torch tensor or any array (JAX, NumPy) as a NumPy array."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return np.asarray(v)


class _Seeded:
    """Torch-based approximations: ``_draw(n)`` runs under a seeded scope without gradients."""

    def sample(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        with seeded(seed), torch.no_grad():
            return self._draw(n)


class PointMass(_Seeded):
    """A single configuration (MAP): every draw is the mode, the spread is zero."""

    def __init__(self, values: dict[str, torch.Tensor]):
        self.values = {k: v.detach() for k, v in values.items()}

    def _draw(self, n: int) -> dict[str, torch.Tensor]:
        return {k: v.expand((n,) + v.shape).clone() for k, v in self.values.items()}

    def mean(self) -> dict[str, torch.Tensor]:
        return dict(self.values)

    def std(self) -> dict[str, torch.Tensor]:
        return {k: torch.zeros_like(v) for k, v in self.values.items()}


class UnconstrainedGaussian(_Seeded):
    r"""A Gaussian :math:`\mathcal N(\mu, LL^\top)` over the packed unconstrained latent vector.

    Laplace and the autoguide SVI methods produce one; draws are pushed through each site's
    transform. Mean and std are exact for sites on the reals; for constrained sites they are
    estimated from draws (a fixed, local seed, so the numbers are reproducible).
    """

    num_moment_draws = 20000

    def __init__(self, space: LatentSpace, loc: torch.Tensor, scale_tril: torch.Tensor):
        self.space = space
        self.loc = loc.detach()
        self.scale_tril = scale_tril.detach()

    @property
    def covariance(self) -> torch.Tensor:
        return self.scale_tril @ self.scale_tril.T

    def _draw(self, n: int) -> dict[str, torch.Tensor]:
        eps = torch.randn((n, self.loc.numel()), dtype=self.loc.dtype)
        return self.space.constrain(self.loc + eps @ self.scale_tril.T)

    @cached_property
    def _moments(self) -> tuple[dict, dict]:
        """Computed once: the approximation is immutable, and ``mean``/``std`` are often both asked for."""
        sd = self.covariance.diagonal().sqrt()
        locs, sds = self.space.unpack(self.loc), self.space.unpack(sd)
        mean, std = {}, {}
        need_mc = [s for s in self.space.sites if not s.is_real]
        if need_mc:
            draws = self.sample(self.num_moment_draws, seed=0)
        for s in self.space.sites:
            if s.is_real:
                mean[s.name], std[s.name] = locs[s.name], sds[s.name]
            else:
                mean[s.name], std[s.name] = draws[s.name].mean(0), draws[s.name].std(0)
        return mean, std

    def mean(self) -> dict[str, torch.Tensor]:
        return dict(self._moments[0])

    def std(self) -> dict[str, torch.Tensor]:
        return dict(self._moments[1])


class Draws:
    """MCMC draws per site, shaped ``(chain, draw, *shape)``, torch or JAX; ``sample`` resamples them."""

    def __init__(self, draws: dict):
        self.draws = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in draws.items()}

    def flat(self) -> dict:
        return {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self.draws.items()}

    def sample(self, n: int, seed: int) -> dict:
        flat = self.flat()
        total = next(iter(flat.values())).shape[0]
        rng = np.random.default_rng(seed)
        idx = rng.permutation(total)[:n] if n <= total else rng.integers(total, size=n)
        return {k: v[torch.as_tensor(idx)] if isinstance(v, torch.Tensor) else v[idx] for k, v in flat.items()}

    def mean(self) -> dict:
        return {k: v.mean(0) for k, v in self.flat().items()}

    def std(self) -> dict:
        return {k: v.std(0) if isinstance(v, torch.Tensor) else v.std(0, ddof=1) for k, v in self.flat().items()}


class GuideDraws(_Seeded):
    """A user-supplied Pyro guide: draws come from running it on its trained parameters
    (``params``, a param-store state), moments from a fixed-seed batch."""

    num_moment_draws = 4000

    def __init__(self, guide: Callable, names: list[str], args: tuple, kwargs: dict, params: dict):
        self.guide, self.names, self.args, self.kwargs, self.params = guide, names, args, kwargs, params

    def _draw(self, n: int) -> dict[str, torch.Tensor]:
        out: dict[str, list] = {k: [] for k in self.names}
        with isolated_param_store(self.params):
            for _ in range(n):
                trace = poutine.trace(self.guide).get_trace(*self.args, **self.kwargs)
                for k in self.names:
                    out[k].append(trace.nodes[k]["value"].detach())
        return {k: torch.stack(v) for k, v in out.items()}

    @cached_property
    def _draws(self) -> dict[str, torch.Tensor]:
        """Drawn once (running the guide is a Python loop): shared by ``mean`` and ``std``."""
        return self.sample(self.num_moment_draws, seed=0)

    def mean(self) -> dict[str, torch.Tensor]:
        return {k: v.mean(0) for k, v in self._draws.items()}

    def std(self) -> dict[str, torch.Tensor]:
        return {k: v.std(0) for k, v in self._draws.items()}
