"""pyebm against hand-written Pyro on the same model, method by method, timed in the same run.

Model: a 50-D Gaussian energy with a flat prior (exact posterior N(mu, A^-1)). For every method the
table gives the median wall time of pyebm and of the raw Pyro code a user would write instead, their
ratio (pyebm / raw: below 1 is faster), and each one's error against the exact answer.

    python benchmarks/overhead.py [--repeats 3] [--dim 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, SVI, Trace_ELBO
from pyro.infer import NUTS as PyroNUTS
from pyro.infer.autoguide import AutoDelta, AutoLaplaceApproximation, AutoMultivariateNormal

import pyebm

warnings.filterwarnings("ignore")


def problem(dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    precision = (q * torch.logspace(-1, 1, dim, dtype=torch.float64)) @ q.T  # condition number 100
    mu = torch.randn(dim, generator=g, dtype=torch.float64)
    return pyebm.energies.Gaussian(mu, precision)


def raw_model(energy):
    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(energy.dim, dtype=torch.float64), 1.0).to_event(1).mask(False))
        pyro.factor("energy", -energy(x))

    return model


def timed(fn):
    pyro.clear_param_store()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# --- raw Pyro, written as the Pyro docs teach ----------------------------------------------------
def _fit(model, guide, optim, steps):
    svi = SVI(model, guide, optim, Trace_ELBO())
    for _ in range(steps):
        svi.step()
    return guide


def raw_map(energy, steps=2000):
    model = raw_model(energy)
    return _fit(model, AutoDelta(model), pyro.optim.Adam({"lr": 0.05}), steps).median()["x"].detach()


def raw_laplace(energy, steps=2000):
    model = raw_model(energy)
    guide = _fit(model, AutoLaplaceApproximation(model), pyro.optim.Adam({"lr": 0.05}), steps)
    return guide.laplace_approximation().get_posterior().covariance_matrix.detach()


def raw_svi(energy, steps):
    model = raw_model(energy)
    optim = pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.01 ** (1 / steps)})
    return _fit(model, AutoMultivariateNormal(model, init_scale=0.1), optim, steps).get_posterior().mean.detach()


def raw_nuts(energy, n, warmup):
    mcmc = MCMC(PyroNUTS(raw_model(energy)), num_samples=n, warmup_steps=warmup, disable_progbar=True)
    mcmc.run()
    return mcmc.get_samples()["x"]


def ess_min(x: torch.Tensor) -> float:
    from pyebm.diagnostics import ess_bulk

    return min(ess_bulk(x[None, :, j]) for j in range(x.shape[1]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--svi-steps", type=int, default=1000)
    parser.add_argument("--nuts", type=int, default=300, help="warmup steps and draws for NUTS")
    args = parser.parse_args(argv)
    e = problem(args.dim)
    cov = e.covariance()
    model = pyebm.model_from_energy(e, {"x": args.dim})
    q = lambda m: pyebm.infer(model, method=m, seed=0, progress=False)  # noqa: E731
    cases = {
        "MAP (pyebm L-BFGS vs AutoDelta+Adam 2000 steps)": (
            lambda: q("map").mode["x"], lambda: raw_map(e), lambda x: float((x - e.mu).abs().max())),
        "Laplace (pyebm vs AutoLaplaceApproximation)": (
            lambda: q("laplace").approximation.covariance, lambda: raw_laplace(e),
            lambda c: float((c - cov).abs().max() / cov.abs().max())),
        f"SVI ({args.svi_steps} steps, same guide; pyebm from Laplace)": (
            lambda: q(pyebm.SVI(steps=args.svi_steps)).mean()["x"], lambda: raw_svi(e, args.svi_steps),
            lambda x: float(((x - e.mu) / cov.diagonal().sqrt()).abs().max())),
        f"NUTS (1 chain, {args.nuts}+{args.nuts})": (
            lambda: q(pyebm.NUTS(num_samples=args.nuts, warmup_steps=args.nuts, num_chains=1)).approximation.draws["x"][0],
            lambda: raw_nuts(e, args.nuts, args.nuts), ess_min),
    }
    print(f"# pyebm overhead benchmark: {args.dim}-D Gaussian energy, medians of {args.repeats} runs")
    print(f"# {platform.platform()}, {os.cpu_count()} cpus, python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, pyebm {pyebm.__version__}")
    print("# error: MAP max|x - mu|; Laplace max|cov - exact| / max|exact|; SVI max|mean - mu|/sd; NUTS: min bulk-ESS")
    header = f"{'method':52s} {'pyebm s':>9s} {'raw s':>9s} {'ratio':>7s} {'pyebm err/ESS':>14s} {'raw err/ESS':>12s}"
    print(header)
    print("-" * len(header))
    for name, (ours, raw, err) in cases.items():
        t_ours, t_raw, e_ours, e_raw = [], [], [], []
        timed(ours), timed(raw)  # warm-up: one-off start-up costs land on neither side
        for r in range(args.repeats):
            for side in ((ours, t_ours, e_ours), (raw, t_raw, e_raw))[:: 1 if r % 2 == 0 else -1]:
                fn, times, errors = side
                dt, out = timed(fn)
                times.append(dt)
                errors.append(err(out))
        a, b = statistics.median(t_ours), statistics.median(t_raw)
        extra = ""
        if name.startswith("NUTS"):
            extra = f"   ESS/s ratio {statistics.median(e_ours) / a / (statistics.median(e_raw) / b):.2f}"
        print(f"{name:52s} {a:9.3f} {b:9.3f} {a / b:7.2f} {statistics.median(e_ours):14.3g} "
              f"{statistics.median(e_raw):12.3g}{extra}")


if __name__ == "__main__":
    main()
