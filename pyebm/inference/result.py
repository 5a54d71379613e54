"""``Posterior``: the one result type of every method, and ``compare`` across methods."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..diagnostics import ess_bulk, split_rhat
from ..state import resolve_seed
from .approximations import Approximation, to_numpy

__all__ = ["Posterior", "compare", "to_arviz_data", "element_labels"]


class Posterior:
    """The result of :func:`pyebm.infer`, whatever the method.

    Attributes
    ----------
    method : str
        ``"map"``, ``"laplace"``, ``"svi"``, ``"nuts"`` or ``"hmc"``.
    approximation : Approximation
        What the posterior is made of (``kind``: ``"point"``, ``"gaussian"``, ``"draws"`` or ``"guide"``).
    mode : dict or None
        Site values at the mode, where the method defines one (MAP, Laplace).
    log_evidence : float or None
        An estimate of :math:`\\log Z = \\log \\int \\exp(-E)`, where the method gives one (Laplace).
        SVI's ELBO is a lower bound, kept in ``diagnostics["elbo"]``, not here.
    params : dict
        The model's Pyro params (constrained values) the method used (the caller's) or learned (SVI).
    diagnostics : dict
        Method-specific: optimiser convergence, ELBO history, divergences, r_hat, ESS, ...
    wall_time : float
        Seconds the method took.
    seed : int
        The seed the run used.
    """

    #: draws from which the moments of deterministic and discrete sites of a Gaussian or guide posterior are estimated
    #: (each draw runs the model once)
    extra_moment_draws = 1000

    def __init__(
        self,
        method: str,
        approximation: Approximation,
        *,
        site_shapes: dict,
        mode: dict | None = None,
        log_evidence: float | None = None,
        diagnostics: dict | None = None,
        wall_time: float = float("nan"),
        seed: int | None = None,
        view: Any = None,
    ):
        self.method = method
        self.approximation = approximation
        self.site_shapes = {k: tuple(v) for k, v in site_shapes.items()}
        self.mode = mode
        self.log_evidence = log_evidence
        self.diagnostics = dict(diagnostics or {})
        self.wall_time = wall_time
        self.seed = seed
        self.view = view
        self.params = view.params() if view is not None else {}

    def __repr__(self) -> str:
        sites = ", ".join(f"{k}: {tuple(v)}" for k, v in self.site_shapes.items())
        return f"Posterior(method={self.method!r}, sites={{{sites}}}, wall_time={self.wall_time:.3g}s)"

    @property
    def is_mcmc(self) -> bool:
        return self.approximation.kind == "draws"

    # --- draws ------------------------------------------------------------------------------------------------
    def _completes_on_sample(self) -> bool:
        """Whether draws need the model to add deterministic and discrete sites (stored draws already have them)."""
        return (self.view is not None and bool(self.view.extra_sites)
                and self.approximation.kind in ("gaussian", "guide"))

    def sample(self, n: int, seed: int | None = None) -> dict:
        """Draw ``n`` values per site, shaped ``(n, *site_shape)``, in the constrained space and the model's order.

        MCMC posteriors take ``n`` of their stored draws without replacement (at most as many as they hold; use
        :meth:`draws` for all of them in order). Deterministic sites and discrete ones (drawn from their conditional
        given the continuous draws) are included. The global RNG state is left untouched.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}.")
        seed = resolve_seed(seed)
        draws = self.approximation.sample(int(n), seed)
        if self._completes_on_sample():
            draws = self.view.complete(draws, seed, temperature=1.0)
        return draws

    def draws(self, group_by_chain: bool = False) -> dict:
        """The stored draws in order, never resampled: shape ``(chain, draw, *shape)`` with ``group_by_chain``, else
        ``(chain * draw, *shape)``. MCMC: every kept draw; MAP: the mode as one draw. Methods that store no draws
        (Laplace, SVI) raise: draw from them with :meth:`sample`."""
        if not isinstance(group_by_chain, bool):
            raise TypeError("group_by_chain must be True or False.")
        ordered = self.approximation.ordered(group_by_chain)
        if ordered is None:
            raise ValueError(f"a {self.method} posterior stores no draws; draw from it with post.sample(n, seed=...).")
        return ordered

    @property
    def _moments(self) -> tuple[dict, dict]:
        cached = self.__dict__.get("_moment_cache")
        if cached is None:
            mean, std = self.approximation.mean(), self.approximation.std()
            if self._completes_on_sample():
                extra = self.view.complete(self.approximation.sample(self.extra_moment_draws, 0), 0, temperature=1.0)
                for k in self.view.extra_sites:
                    v = extra[k] * 1.0
                    mean[k], std[k] = v.mean(0), (v.std(0) if hasattr(v, "detach") else v.std(0, ddof=1))
            order = list(self.site_shapes)
            cached = ({k: mean[k] for k in order if k in mean}, {k: std[k] for k in order if k in std})
            self.__dict__["_moment_cache"] = cached
        return cached

    def mean(self) -> dict:
        """Posterior mean per site (MAP: the point)."""
        return dict(self._moments[0])

    def std(self) -> dict:
        """Posterior standard deviation per site, elementwise (MAP: zeros)."""
        return dict(self._moments[1])

    def predictive(self, model=None, *args, num_samples: int | None = None, seed: int | None = None, **kwargs) -> dict:
        """The posterior predictive: every observed and deterministic site of ``model`` (default: the model inferred,
        on its own arguments) run on posterior draws, observed sites drawn anew.

        ``num_samples`` draws (default: every stored MCMC draw, else 1000); shape ``(num_samples, *site_shape)``.
        Pass the model and new arguments to predict elsewhere (new inputs, ``obs=None``).
        """
        if self.view is None:
            raise ValueError("this posterior was not made from a model (no predictive).")
        seed = resolve_seed(seed)
        draws = self._predictive_draws(num_samples, seed)
        if model is None and (args or kwargs):
            raise TypeError("pass the model along with new arguments: post.predictive(model, *args, **kwargs).")
        return self.view.predictive(draws, seed, model=model, args=args if model is not None else None,
                                    kwargs=kwargs if model is not None else None)

    def _predictive_draws(self, num_samples: int | None, seed: int) -> dict:
        if num_samples is None:
            stored = self.approximation.ordered(False)
            if stored is not None and self.approximation.kind == "draws":
                return stored
            num_samples = 1000
        return self.sample(num_samples, seed)

    # --- ArviZ and tables -----------------------------------------------------------------------------------------
    def _chains(self, num_samples: int, seed: int) -> dict:
        """Draws shaped (chain, draw, *shape): MCMC chains as they are, MAP one draw, else ``num_samples`` draws as
        one chain (the backend's arrays)."""
        ordered = self.approximation.ordered(True)
        if ordered is None:
            ordered = {k: v[None] for k, v in self.sample(num_samples, seed=seed).items()}
        return ordered

    def to_arviz(self, num_samples: int = 1000, seed: int = 0, *, log_likelihood: bool = True,
                 predictive: bool = False):
        """ArviZ data as ``az.from_pyro`` builds it: ``posterior`` (dims ``chain, draw``), ``sample_stats`` for MCMC,
        ``log_likelihood`` (pointwise, per observed site, for ``az.loo``/``az.waic``), ``observed_data``, and
        ``posterior_predictive`` with ``predictive=True``.

        Returns ``InferenceData`` with ArviZ 0.x and ``xarray.DataTree`` with ArviZ 1.x. MAP is one draw; Laplace
        and SVI give ``num_samples`` draws as one chain.
        """
        chains = self._chains(num_samples, seed)
        groups: dict = {"posterior": {k: to_numpy(v) for k, v in chains.items()}}
        stats = self.diagnostics.get("sample_stats")
        if stats:
            groups["sample_stats"] = {k: np.asarray(v) for k, v in stats.items()}
        if self.view is not None and self.view.observed:
            shape = tuple(next(iter(chains.values())).shape[:2])
            flat = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in chains.items()}
            if log_likelihood:
                ll = self.view.log_likelihood(flat)
                groups["log_likelihood"] = {k: to_numpy(v).reshape(shape + tuple(v.shape[1:])) for k, v in ll.items()}
            groups["observed_data"] = {k: to_numpy(v) for k, v in self.view.observed_data().items()}
            if predictive:
                pp = self.view.predictive(flat, seed)
                groups["posterior_predictive"] = {k: to_numpy(v).reshape(shape + tuple(v.shape[1:]))
                                                  for k, v in pp.items() if k in self.view.observed}
        return to_arviz_data(groups)

    def summary(self, hdi_prob: float = 0.94, num_samples: int = 4000, seed: int = 0):
        """A pandas DataFrame, one row per site element: mean, sd, HDI, and for MCMC ess_bulk and r_hat.

        Mean and sd come from :meth:`mean`/:meth:`std` (exact where the method has them); the HDI
        from draws (``num_samples`` for methods without stored draws).
        """
        import pandas as pd

        if not (isinstance(hdi_prob, float | int) and 0 < hdi_prob < 1):
            raise ValueError(f"hdi_prob must lie in (0, 1), got {hdi_prob!r}.")
        chains = {k: to_numpy(v) for k, v in self._chains(num_samples, seed).items()}
        means, stds = self.mean(), self.std()
        lo_name, hi_name = f"hdi_{(1 - hdi_prob) / 2:.0%}", f"hdi_{(1 + hdi_prob) / 2:.0%}"
        rows = {}
        for name, x in chains.items():
            m, s = to_numpy(means[name]).reshape(-1), to_numpy(stds[name]).reshape(-1)
            flat = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
            for j, label in enumerate(element_labels(name, x.shape[2:])):
                row = {"mean": float(m[j]), "sd": float(s[j])}
                row[lo_name], row[hi_name] = _hdi(flat[:, :, j].reshape(-1), hdi_prob)
                if self.is_mcmc:
                    row["ess_bulk"], row["r_hat"] = ess_bulk(flat[:, :, j]), split_rhat(flat[:, :, j])
                rows[label] = row
        return pd.DataFrame.from_dict(rows, orient="index")


def element_labels(name: str, shape: tuple) -> list[str]:
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
    """Build ArviZ data from ``{group: {var: array}}`` (sample groups shaped (chain, draw, ...)) for ArviZ 0.x and
    1.x."""
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
    ``log_evidence`` (and its Monte Carlo standard error ``("log_evidence", "se")`` where a sampler estimated it:
    zero for Laplace's deterministic value, NaN where there is none) and ``wall_time``; columns are the posteriors, labelled by method (made
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
    elif len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}.")
    columns, with_se = {}, any("log_evidence_se" in p.diagnostics for p in posteriors)
    for label, p in zip(labels, posteriors):
        col: dict[tuple[str, str], float] = {}
        means, stds = p.mean(), p.std()
        for name, shape in p.site_shapes.items():
            for j, el in enumerate(element_labels(name, tuple(shape))):
                col[(el, "mean")] = float(to_numpy(means[name]).reshape(-1)[j])
                col[(el, "sd")] = float(to_numpy(stds[name]).reshape(-1)[j])
        col[("log_evidence", "")] = np.nan if p.log_evidence is None else float(p.log_evidence)
        if with_se:
            col[("log_evidence", "se")] = (np.nan if p.log_evidence is None
                                           else float(p.diagnostics.get("log_evidence_se", 0.0)))
        col[("wall_time", "s")] = float(p.wall_time)
        columns[label] = col
    table = pd.DataFrame(columns)
    table.index = pd.MultiIndex.from_tuples(table.index, names=["quantity", "stat"])
    return table
