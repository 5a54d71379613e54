"""Reuse of adapted posteriors: an input close to one already adapted gets that one's latents."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..inference.approximations import Gaussian, PointMass
from ..inference.curvature import DensePrecision
from ..inference.result import Posterior
from ..ops import TORCH

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

    Notes
    -----
    ``adapt(x, run)`` returns an independent posterior over the inputs ``x`` (as ``pyebm.ttt.adapt(...,
    independent=True)`` does), calling ``run(indices)`` only for the inputs that missed; ``hits`` and ``misses``
    count, ``hit_rate`` summarises.
    """

    def __init__(self, embed: Callable, radius: float):
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0, got {radius}.")
        self.embed, self.radius = embed, float(radius)
        self.keys: torch.Tensor | None = None
        self.entries: list[tuple[dict, tuple | None]] = []  # (mode, (loc, precision, its Cholesky factor) or None)
        self.hits = self.misses = 0
        self._layout = None

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
                gaussian = None
                if approx.kind == "gaussian":
                    s = approx.structure
                    gaussian = (approx.loc[j], s.precision[j], s.chol[j])
                    self._layout = approx.layout
                self.entries.append((mode, gaussian))
                source[i] = len(self.entries) - 1
            self.keys = z[miss] if self.keys is None else torch.cat([self.keys, z[miss]])
            self._ttt = post.diagnostics.get("ttt")
        chosen = [self.entries[int(i)] for i in source]
        mode = {k: torch.stack([c[0][k] for c in chosen]) for k in chosen[0][0]}
        shapes = {k: v.shape for k, v in mode.items()}
        diagnostics = {"ttt": self._ttt, "cache_source": source}
        if chosen[0][1] is not None:
            loc, precision, chol = (torch.stack(parts) for parts in zip(*(c[1] for c in chosen)))
            approx = Gaussian(self._layout, loc, DensePrecision(precision, chol, TORCH))
            return Posterior("laplace", approx, site_shapes=shapes, mode=mode, diagnostics=diagnostics)
        return Posterior("map", PointMass(mode, TORCH), site_shapes=shapes, mode=mode, diagnostics=diagnostics)
