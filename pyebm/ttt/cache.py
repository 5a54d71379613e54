"""Reuse of adapted posteriors: an input close to one already adapted gets that one's latents."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..infer.approximations import PointMass
from ..infer.result import Posterior
from .batched import BlockGaussian

__all__ = ["AdaptationCache"]


class AdaptationCache:
    """Adapted latents keyed by an embedding of the input; a new input within ``radius`` (Euclidean, in embedding
    space) of a cached key reuses that key's posterior instead of being adapted.

    Parameters
    ----------
    embed : callable
        ``embed(x) -> (batch, d)`` features, e.g. the trained network's penultimate layer.
    radius : float
        Reuse distance; 0 only reuses exact repeats.

    ``adapt(x, run)`` returns an independent posterior over the inputs ``x`` (as ``pyebm.ttt.adapt(...,
    independent=True)`` does), calling ``run(indices)`` only for the inputs that missed; ``hits`` and ``misses``
    count, ``hit_rate`` summarises.
    """

    def __init__(self, embed: Callable, radius: float):
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0, got {radius}.")
        self.embed, self.radius = embed, float(radius)
        self.keys: torch.Tensor | None = None
        self.entries: list[tuple[dict, torch.Tensor | None, torch.Tensor | None]] = []
        self.hits = self.misses = 0
        self._unflatten = None

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def adapt(self, x: torch.Tensor, run: Callable[[torch.Tensor], Posterior]) -> Posterior:
        with torch.no_grad():
            z = self.embed(x).flatten(1)
        source = torch.full((len(z),), -1, dtype=torch.long)
        if self.keys is not None:
            d, nearest = torch.cdist(z, self.keys).min(1)
            source = torch.where(d <= self.radius, nearest, source)
        miss = torch.nonzero(source < 0).flatten()
        self.hits += len(z) - len(miss)
        self.misses += len(miss)
        if len(miss):
            post = run(miss)
            approx = post.approximation
            for j, i in enumerate(miss.tolist()):
                mode = {k: v[j] for k, v in post.mode.items()}
                if isinstance(approx, BlockGaussian):
                    self.entries.append((mode, approx.loc[j], approx.scale_tril[j]))
                    self._unflatten = approx.unflatten
                else:
                    self.entries.append((mode, None, None))
                source[i] = len(self.entries) - 1
            self.keys = z[miss] if self.keys is None else torch.cat([self.keys, z[miss]])
            self._ttt = post.diagnostics.get("ttt")
        chosen = [self.entries[int(i)] for i in source]
        mode = {k: torch.stack([c[0][k] for c in chosen]) for k in chosen[0][0]}
        shapes = {k: v.shape for k, v in mode.items()}
        diagnostics = {"ttt": self._ttt, "cache_source": source}
        if chosen[0][1] is not None:
            approx = BlockGaussian(torch.stack([c[1] for c in chosen]), torch.stack([c[2] for c in chosen]),
                                   self._unflatten)
            return Posterior("laplace", approx, site_shapes=shapes, mode=mode, diagnostics=diagnostics)
        return Posterior("map", PointMass(mode), site_shapes=shapes, mode=mode, diagnostics=diagnostics)
