"""What a posterior is made of, one small class per kind: a point, a Gaussian, draws, a guide.

Each offers ``sample(n) -> {site: (n, *shape)}`` in the constrained space (called inside a
seeded scope by :class:`pyebm.Posterior`), and exact ``mean``/``std`` where they have them.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.poutine as poutine
import torch

from ..state import isolated_param_store
from .space import LatentSpace

__all__ = ["PointMass", "UnconstrainedGaussian", "Draws", "GuideDraws"]


class PointMass:
    """A single configuration (MAP): every draw is the mode, the spread is zero."""

    def __init__(self, values: dict[str, torch.Tensor]):
        self.values = {k: v.detach() for k, v in values.items()}

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        return {k: v.expand((n,) + v.shape).clone() for k, v in self.values.items()}

    def mean(self) -> dict[str, torch.Tensor]:
        return dict(self.values)

    def std(self) -> dict[str, torch.Tensor]:
        return {k: torch.zeros_like(v) for k, v in self.values.items()}


class UnconstrainedGaussian:
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

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        eps = torch.randn((n, self.loc.numel()), dtype=self.loc.dtype)
        return self.space.constrain(self.loc + eps @ self.scale_tril.T)

    def _moments(self) -> tuple[dict, dict]:
        sd = self.covariance.diagonal().sqrt()
        locs, sds = self.space.unpack(self.loc), self.space.unpack(sd)
        mean, std = {}, {}
        need_mc = [s for s in self.space.sites if not s.is_real]
        if need_mc:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                draws = self.sample(self.num_moment_draws)
        for s in self.space.sites:
            if s.is_real:
                mean[s.name], std[s.name] = locs[s.name], sds[s.name]
            else:
                mean[s.name], std[s.name] = draws[s.name].mean(0), draws[s.name].std(0)
        return mean, std

    def mean(self) -> dict[str, torch.Tensor]:
        return self._moments()[0]

    def std(self) -> dict[str, torch.Tensor]:
        return self._moments()[1]


class Draws:
    """MCMC draws per site, shaped ``(chain, draw, *shape)``; ``sample`` resamples them."""

    def __init__(self, draws: dict[str, torch.Tensor]):
        self.draws = {k: v.detach() for k, v in draws.items()}

    @property
    def num_chains(self) -> int:
        return next(iter(self.draws.values())).shape[0]

    def flat(self) -> dict[str, torch.Tensor]:
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.draws.items()}

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        flat = self.flat()
        total = next(iter(flat.values())).shape[0]
        idx = torch.randperm(total)[:n] if n <= total else torch.randint(total, (n,))
        return {k: v[idx] for k, v in flat.items()}

    def mean(self) -> dict[str, torch.Tensor]:
        return {k: v.mean(0) for k, v in self.flat().items()}

    def std(self) -> dict[str, torch.Tensor]:
        return {k: v.std(0) for k, v in self.flat().items()}


class GuideDraws:
    """A user-supplied Pyro guide: draws come from running it on its trained parameters
    (``params``, a param-store state), moments from a fixed-seed batch."""

    num_moment_draws = 4000

    def __init__(self, guide: Callable, names: list[str], args: tuple, kwargs: dict, params: dict):
        self.guide, self.names, self.args, self.kwargs, self.params = guide, names, args, kwargs, params

    def sample(self, n: int) -> dict[str, torch.Tensor]:
        out: dict[str, list] = {k: [] for k in self.names}
        with torch.no_grad(), isolated_param_store(self.params):
            for _ in range(n):
                trace = poutine.trace(self.guide).get_trace(*self.args, **self.kwargs)
                for k in self.names:
                    out[k].append(trace.nodes[k]["value"].detach())
        return {k: torch.stack(v) for k, v in out.items()}

    def _draws(self) -> dict[str, torch.Tensor]:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return self.sample(self.num_moment_draws)

    def mean(self) -> dict[str, torch.Tensor]:
        return {k: v.mean(0) for k, v in self._draws().items()}

    def std(self) -> dict[str, torch.Tensor]:
        return {k: v.std(0) for k, v in self._draws().items()}
