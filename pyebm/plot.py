"""Pictures: energy landscapes and posteriors from several methods over the exact density.

matplotlib is imported inside the functions, so ``import pyebm`` does not need it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["landscape", "compare", "log_z_path"]

_COLORS = {"map": "#d62728", "laplace": "#1f77b4", "svi": "#2ca02c", "nuts": "#9467bd", "hmc": "#8c564b",
           "chees": "#e377c2", "smc": "#ff7f0e"}


def _plt():
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - matplotlib is a dependency of the plot extra
        raise ImportError("pyebm.plot needs matplotlib: pip install 'pyro-ebm[plot]'.") from err
    return plt


def _interactive() -> bool:
    import sys

    return "ipykernel" in sys.modules or hasattr(sys, "ps1")


def landscape(energy, bounds, *, beta: float | None = None, num: int = 200, ax=None, levels: int = 30):
    """Filled contours of an energy on a 2-D box; with ``beta``, of the normalised density instead.

    Parameters
    ----------
    energy : callable
        Maps ``(*batch, 2)`` to ``batch``.
    bounds : [(x_lo, x_hi), (y_lo, y_hi)]
    beta : float, optional
        Plot :math:`p_\\beta = e^{-\\beta E}/Z` normalised on the grid rather than :math:`E`.
    """
    from .energies import grid_density

    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4))
    g = grid_density(energy, bounds, num, 1.0 if beta is None else beta)
    X, Y = (a.numpy() for a in torch.meshgrid(*g.axes, indexing="ij"))
    Z = g.energy.numpy() if beta is None else g.density.numpy()
    if beta is None:
        Z = np.minimum(Z, np.quantile(Z, 0.9))  # keep the low-energy basin readable
    cs = ax.contourf(X, Y, Z, levels=levels, cmap="viridis_r" if beta is None else "Greys")
    ax.figure.colorbar(cs, ax=ax, label="energy" if beta is None else f"density (β={beta:g})")
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    return ax


def _flat_draws(post, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    from .inference.approximations import to_numpy
    from .inference.result import element_labels

    # MCMC: every stored draw (at most n of them); others: n fresh draws
    draws = post.sample(min(n, post.approximation.total), seed=seed) if post.is_mcmc else post.sample(n, seed=seed)
    cols, labels = [], []
    for name, v in draws.items():
        cols.append(to_numpy(v).reshape(v.shape[0], -1).astype(np.float64))
        labels += element_labels(name, tuple(v.shape[1:]))
    return np.concatenate(cols, axis=1), labels


def compare(*posteriors, energy=None, bounds=None, beta: float = 1.0, num_samples: int = 2000, seed: int = 0,
            labels: list[str] | None = None):
    """Posteriors from several methods side by side, over the exact density where one is given.

    Two-dimensional latents: one panel per posterior, its draws (MAP: a star) over the grid-normalised
    exact density of ``energy`` (if given) at inverse temperature ``beta``. Otherwise: one panel per
    latent element with the marginal histograms of all posteriors overlaid (MAP as a vertical line).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .energies import grid_density

    plt = _plt()
    if not posteriors:
        raise ValueError("plot.compare needs at least one Posterior.")
    labels = labels or [p.method for p in posteriors]
    flat = [_flat_draws(p, num_samples, seed) for p in posteriors]
    names = flat[0][1]
    if len(names) == 2:
        fig, axes = plt.subplots(1, len(posteriors), figsize=(3.6 * len(posteriors), 3.6), squeeze=False,
                                 sharex=True, sharey=True)
        if bounds is None:
            both = np.concatenate([f[0] for f in flat])
            lo, hi = np.quantile(both, 0.002, axis=0), np.quantile(both, 0.998, axis=0)
            pad = 0.15 * (hi - lo) + 1e-3
            bounds = [(lo[i] - pad[i], hi[i] + pad[i]) for i in range(2)]
        grid = grid_density(energy, bounds, 200, beta) if energy is not None else None
        for ax, p, label, (x, _) in zip(axes[0], posteriors, labels, flat):
            if grid is not None:
                X, Y = (a.numpy() for a in torch.meshgrid(*grid.axes, indexing="ij"))
                ax.contourf(X, Y, grid.density.numpy(), levels=12, cmap="Greys")
            color = _COLORS.get(p.method, "C0")
            if p.method == "map":
                ax.plot(x[0, 0], x[0, 1], marker="*", ms=16, color=color, mec="white")
            else:
                ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.35, color=color, lw=0)
            ax.set_title(label)
            ax.set_xlabel(names[0])
            ax.set_xlim(*bounds[0])
            ax.set_ylim(*bounds[1])
        axes[0, 0].set_ylabel(names[1])
    else:
        ncol = min(4, len(names))
        nrow = int(np.ceil(len(names) / ncol))
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
        for j, name in enumerate(names):
            ax = axes.flat[j]
            for p, label, (x, _) in zip(posteriors, labels, flat):
                color = _COLORS.get(p.method, None)
                if p.method == "map":
                    ax.axvline(x[0, j], color=color, label=label)
                else:
                    ax.hist(x[:, j], bins=40, density=True, histtype="step", color=color, label=label)
            ax.set_title(name)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def log_z_path(post, *, laplace: dict | None = None, exact: dict | None = None, ax=None):
    r"""log Z along the tempering path of an SMC posterior, with a band of two standard errors.

    Parameters
    ----------
    post : Posterior
        From ``method="smc"`` started at the prior (``diagnostics["path"] == "prior"``), where the path parameter is
        the inverse temperature of the model's observed terms: for a model whose only observed terms are energy
        factors, ``pyebm.temper``'s β.
    laplace, exact : dict, optional
        ``{beta: log Z}`` to draw against it as points (e.g. Laplace's ``log_evidence`` of ``temper(model, beta)``
        at a few β) or as a line.

    Returns
    -------
    matplotlib.axes.Axes
    """
    d = post.diagnostics
    if d.get("path") != "prior":
        raise ValueError("plot.log_z_path needs an SMC posterior whose path starts at the prior (method='smc' "
                         "without `reference`): along a reference path, log Z in between is no tempered model's.")
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    beta, lz, se = (np.asarray(d[k], dtype=float) for k in ("beta", "log_Z", "log_Z_se"))
    ax.plot(beta, lz, color=_COLORS["smc"], marker=".", label="SMC")
    ax.fill_between(beta, lz - 2 * se, lz + 2 * se, color=_COLORS["smc"], alpha=0.3, lw=0)
    if exact:
        b = sorted(exact)
        ax.plot(b, [exact[k] for k in b], color="k", lw=1, ls="--", label="exact")
    if laplace:
        b = sorted(laplace)
        ax.plot(b, [laplace[k] for k in b], ls="none", marker="o", mfc="none", color=_COLORS["laplace"],
                label="Laplace")
    ax.set_xlabel("β")
    ax.set_ylabel("log Z(β)")
    ax.legend(fontsize=8)
    return ax
