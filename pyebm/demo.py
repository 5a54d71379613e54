"""The quick-start demo: one banana energy, four rungs of the ladder, one table and one picture."""

from __future__ import annotations

import time

import torch

from .energies import Banana
from .energy import model_from_energy
from .inference import MAP, NUTS, SVI, Laplace, compare, infer

__all__ = ["run"]


def run(out: str | None = "pyebm_demo.png", seed: int = 0, progress: bool = True, quick: bool = False):
    """Run MAP, Laplace, SVI and NUTS on a mild banana; print the comparison table against the exact
    moments and save a picture of the four results over the exact density.

    Returns
    -------
    (pandas.DataFrame, list of Posterior)
    """
    import pandas as pd

    energy = Banana(s=1.0, b=0.5)
    with _float64():
        model = model_from_energy(energy, {"x": 2})
        methods = [
            MAP(),
            Laplace(),
            SVI(steps=300 if quick else 1500),
            NUTS(num_samples=200 if quick else 1500, warmup_steps=200 if quick else 500, num_chains=2),
        ]
        start = time.perf_counter()
        posts = [infer(model, method=m, seed=seed, progress=progress) for m in methods]
        table = compare(*posts)
    mean, cov = energy.mean(), energy.covariance()
    exact = {("x[0]", "mean"): float(mean[0]), ("x[0]", "sd"): float(cov[0, 0].sqrt()),
             ("x[1]", "mean"): float(mean[1]), ("x[1]", "sd"): float(cov[1, 1].sqrt()),
             ("log_evidence", ""): energy.log_normalizer(), ("wall_time", "s"): float("nan")}
    table["exact"] = pd.Series(exact)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print("Banana energy E(x) = x1^2/2 + (x2 - 0.5 (x1^2 - 1))^2 / 2, flat prior; exact column from "
              "its closed-form normaliser\n")
        print(table)
    print(f"\nall four methods: {time.perf_counter() - start:.1f} s")
    if out:
        from . import plot

        fig = plot.compare(*posts, energy=energy, bounds=[(-3.5, 3.5), (-2.5, 5.5)])
        fig.savefig(out, dpi=110)
        print(f"picture: {out}")
    return table, posts


class _float64:
    """Run the demo in float64 and restore the caller's default dtype."""

    def __enter__(self):
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.old)
