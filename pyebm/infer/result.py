"""``Posterior``: the one result type of every method, and ``compare`` across methods."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..diagnostics import ess_bulk, split_rhat
from ..state import resolve_seed
from .approximations import Draws, to_numpy

__all__ = ["Posterior", "compare", "to_arviz_data"]


class Posterior:
    """The result of :func:`pyebm.infer`, whatever the method.

    Attributes
    ----------
    method : str
        ``"map"``, ``"laplace"``, ``"svi"``, ``"nuts"`` or ``"hmc"``.
    mode : dict or None
        Site values at the mode, where the method defines one (MAP, Laplace).
    log_evidence : float or None
        An estimate of :math:`\\log Z = \\log \\int \\exp(-E)`, where the method gives one (Laplace).
        SVI's ELBO is a lower bound, kept in ``diagnostics["elbo"]``, not here.
    diagnostics : dict
        Method-specific: optimiser convergence, ELBO history, divergences, r_hat, ESS, ...
    wall_time : float
        Seconds the method took.
    """

    def __init__(
        self,
        method: str,
        approximation: Any,
        *,
        site_shapes: dict[str, torch.Size],
        mode: dict[str, torch.Tensor] | None = None,
        log_evidence: float | None = None,
        diagnostics: dict | None = None,
        wall_time: float = float("nan"),
        seed: int | None = None,
    ):
        self.method = method
        self.approximation = approximation
        self.site_shapes = dict(site_shapes)
        self.mode = mode
        self.log_evidence = log_evidence
        self.diagnostics = dict(diagnostics or {})
        self.wall_time = wall_time
        self.seed = seed

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}: {tuple(v)}" for k, v in self.site_shapes.items())
        return f"Posterior(method={self.method!r}, sites={{{sites}}}, wall_time={self.wall_time:.3g}s)"

    @property
    def is_mcmc(self) -> bool:
        return isinstance(self.approximation, Draws)

    def sample(self, n: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Draw ``n`` values per site, shaped ``(n, *site_shape)``, in the constrained space.

        MCMC posteriors resample their draws (without replacement while ``n`` allows).
        The global RNG state is left untouched.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}.")
        return self.approximation.sample(n, resolve_seed(seed))

    def mean(self) -> dict[str, torch.Tensor]:
        """Posterior mean per site (MAP: the point)."""
        return self.approximation.mean()

    def std(self) -> dict[str, torch.Tensor]:
        """Posterior standard deviation per site, elementwise (MAP: zeros)."""
        return self.approximation.std()

    # --- ArviZ and tables -----------------------------------------------------------------
    def _chains(self, num_samples: int, seed: int) -> dict[str, np.ndarray]:
        """Draws shaped (chain, draw, *shape) as numpy: MCMC chains as they are, else one chain."""
        if self.is_mcmc:
            return {k: to_numpy(v) for k, v in self.approximation.draws.items()}
        return {k: to_numpy(v)[None] for k, v in self.sample(num_samples, seed=seed).items()}

    def to_arviz(self, num_samples: int = 1000, seed: int = 0):
        """ArviZ data: a ``posterior`` group (and ``sample_stats`` for MCMC) with dims ``chain, draw``.

        Returns ``InferenceData`` with ArviZ 0.x and ``xarray.DataTree`` with ArviZ 1.x. Methods
        without chains (MAP, Laplace, SVI) give ``num_samples`` draws as one chain.
        """
        groups = {"posterior": self._chains(num_samples, seed)}
        stats = self.diagnostics.get("sample_stats")
        if stats:
            groups["sample_stats"] = {k: np.asarray(v) for k, v in stats.items()}
        return to_arviz_data(groups)

    def summary(self, hdi_prob: float = 0.94, num_samples: int = 4000, seed: int = 0):
        """A pandas DataFrame, one row per site element: mean, sd, HDI, and for MCMC ess_bulk and r_hat.

        Mean and sd come from :meth:`mean`/:meth:`std` (exact where the method has them); the HDI
        from draws (``num_samples`` for methods without stored draws).
        """
        import pandas as pd

        chains = self._chains(num_samples, seed)
        means, stds = self.mean(), self.std()
        lo_name, hi_name = f"hdi_{(1 - hdi_prob) / 2:.0%}", f"hdi_{(1 + hdi_prob) / 2:.0%}"
        rows = {}
        for name, x in chains.items():
            m, s = to_numpy(means[name]).reshape(-1), to_numpy(stds[name]).reshape(-1)
            flat = x.reshape(x.shape[0], x.shape[1], -1)
            for j, label in enumerate(_element_labels(name, x.shape[2:])):
                row = {"mean": float(m[j]), "sd": float(s[j])}
                row[lo_name], row[hi_name] = _hdi(flat[:, :, j].reshape(-1), hdi_prob)
                if self.is_mcmc:
                    row["ess_bulk"], row["r_hat"] = ess_bulk(flat[:, :, j]), split_rhat(flat[:, :, j])
                rows[label] = row
        return pd.DataFrame.from_dict(rows, orient="index")


def _element_labels(name: str, shape: tuple) -> list[str]:
    if len(shape) == 0:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def _hdi(x: np.ndarray, prob: float) -> tuple[float, float]:
    """Shortest interval holding ``prob`` of the draws."""
    x = np.sort(x)
    k = int(np.floor(prob * len(x)))
    if k >= len(x) or k == 0:
        return float(x[0]), float(x[-1])
    widths = x[k:] - x[: len(x) - k]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + k])


def to_arviz_data(groups: dict[str, dict[str, np.ndarray]]):
    """Build ArviZ data from ``{group: {var: array (chain, draw, ...)}}`` for ArviZ 0.x and 1.x."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ArviZ 0.23's import-time notice about 1.0
        import arviz as az
    major = int(az.__version__.split(".")[0])
    if major >= 1:
        return az.from_dict(groups)
    return az.from_dict(**groups)


def compare(*posteriors: Posterior, labels: list[str] | None = None):
    """One table of the same quantities across posteriors.

    Rows are ``(quantity, statistic)``: ``mean`` and ``sd`` of every site element, then
    ``log_evidence`` and ``wall_time``; columns are the posteriors, labelled by method (made
    unique with a suffix) or by ``labels``.

    Examples
    --------
    >>> pyebm.compare(map_post, laplace_post, nuts_post)   # doctest: +SKIP
    """
    import pandas as pd

    if not posteriors:
        raise ValueError("compare needs at least one Posterior.")
    for p in posteriors:
        if not isinstance(p, Posterior):
            raise TypeError(f"compare takes Posterior objects, got {type(p).__name__}.")
    if labels is None:
        labels, seen = [], {}
        for p in posteriors:
            seen[p.method] = seen.get(p.method, 0) + 1
            labels.append(p.method if seen[p.method] == 1 else f"{p.method}_{seen[p.method]}")
    elif len(labels) != len(posteriors):
        raise ValueError(f"got {len(labels)} labels for {len(posteriors)} posteriors.")
    columns = {}
    for label, p in zip(labels, posteriors):
        col: dict[tuple[str, str], float] = {}
        means, stds = p.mean(), p.std()
        for name, shape in p.site_shapes.items():
            for j, el in enumerate(_element_labels(name, tuple(shape))):
                col[(el, "mean")] = float(to_numpy(means[name]).reshape(-1)[j])
                col[(el, "sd")] = float(to_numpy(stds[name]).reshape(-1)[j])
        col[("log_evidence", "")] = np.nan if p.log_evidence is None else float(p.log_evidence)
        col[("wall_time", "s")] = float(p.wall_time)
        columns[label] = col
    table = pd.DataFrame(columns)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["quantity", "stat"])
    return table
