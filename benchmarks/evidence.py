"""log Z: SMC against Laplace and the exact answer, and against thermodynamic integration with NUTS.

Part 1, the zoo (flat priors, SMC from a Gaussian reference of scale 5): the Gaussian, the banana, the funnel, the
double well and a two-component mixture with weights 0.3 / 0.7, each with a closed-form or grid-exact log Z.
Part 2, the tempering path from a proper prior, x ~ N(0, 2^2) and an energy factor: log Z(1) by SMC against
thermodynamic integration (log Z(1) = -integral over beta of E_beta[E], NUTS at 20 fixed beta, trapezoid rule),
the exact answer by quadrature. Part 3, the same three on a 16-site phi^4 chain in its ordered phase (two modes),
exact by the transfer matrix, with the share of draws in each mode (SMC's particles against NUTS chains). Columns: the estimate's error, its standard error (SMC: from its runs; TI: from the
NUTS draws' ESS, propagated through the rule), the error in standard errors, and the wall time; medians over
`--seeds` seeds. Laplace has no Monte Carlo error: its error is its bias.

    python benchmarks/evidence.py [--seeds 3] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import pyebm
from pyebm.diagnostics import ess_bulk
from pyebm.energies import Banana, DoubleWell, Funnel, Gaussian, GaussianMixture

warnings.filterwarnings("ignore")


def zoo():
    return {
        "gaussian-2d": (Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([[2.0, 0.6], [0.6, 1.0]])), None),
        "banana": (Banana(), None),
        "funnel": (Funnel(), None),
        "double well": (DoubleWell(), torch.tensor([0.8])),
        "mixture 0.3/0.7": (GaussianMixture(torch.tensor([[-3.0, 0.0], [3.0, 1.0]]), 0.7, torch.tensor([0.3, 0.7])),
                            torch.tensor([3.0, 1.0])),
    }


def part_zoo(seeds: int, quick: bool) -> None:
    print("\n# the zoo: log Z, flat priors; SMC(reference=5) (8 runs x 512 particles), Laplace at a mode")
    header = f"{'energy':16s} {'exact':>8s} {'SMC err':>9s} {'SMC se':>8s} {'err/se':>7s} {'SMC s':>7s} {'Laplace err':>12s} {'Laplace s':>10s}"
    print(header)
    print("-" * len(header))
    particles = 128 if quick else 512
    for name, (energy, start) in zoo().items():
        sites = {"x": energy.dim}
        model = pyebm.model_from_energy(energy, sites)
        exact = energy.log_normalizer(1.0)
        runs = []
        for seed in range(seeds):
            post = pyebm.infer(model, method=pyebm.SMC(reference=5.0, num_particles=particles), seed=seed,
                               progress=False)
            se = post.diagnostics["log_evidence_se"]
            runs.append((post.log_evidence - exact, se, post.wall_time))
        lap = pyebm.infer(model, method=pyebm.Laplace(init=None if start is None else {"x": start}), seed=0,
                          progress=False)
        err, se, s = (statistics.median(abs(r[i]) if i == 0 else r[i] for r in runs) for i in range(3))
        print(f"{name:16s} {exact:8.3f} {err:9.4f} {se:8.4f} {err / se:7.2f} {s:7.2f} "
              f"{lap.log_evidence - exact:12.4f} {lap.wall_time:10.3f}", flush=True)


# --- part 2: the tempering path from a proper prior ---------------------------------------------------------------
PRIOR_SD = 2.0


def well_model():
    energy = DoubleWell()

    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(1), PRIOR_SD).to_event(1))
        pyebm.energy_factor("well", energy(x))

    return energy, model


def exact_log_z(energy, beta: float) -> float:
    """log of the integral of N(x; 0, 2^2) exp(-beta E(x)) dx by the trapezoid rule on [-12, 12]."""
    x = torch.linspace(-12.0, 12.0, 200001, dtype=torch.float64)
    log_f = dist.Normal(0.0, PRIOR_SD).log_prob(x) - beta * energy(x[:, None].to(torch.get_default_dtype())).double()
    m = log_f.max()
    return float(m + torch.log(torch.trapezoid(torch.exp(log_f - m), x)))


def thermodynamic_integration(model, energy, betas, seed: int, draws: int):
    """-integral over beta of E_beta[E] (trapezoid rule), NUTS at each beta; returns (log Z(1), its se, seconds)."""
    means, variances = [], []
    start = time.perf_counter()
    for i, b in enumerate(betas):
        post = pyebm.infer(pyebm.temper(model, float(b)), method=pyebm.NUTS(num_samples=draws, warmup_steps=draws // 2),
                           seed=seed * 1000 + i, progress=False)
        x = post.approximation.draws["x"]
        e = energy(x.reshape(-1, x.shape[-1])).double().reshape(x.shape[:2]).numpy()
        ess = ess_bulk(e)
        means.append(e.mean())
        variances.append(e.var() / ess)
    w = np.zeros(len(betas))
    d = np.diff(betas)
    w[:-1] += d / 2
    w[1:] += d / 2
    return -float(w @ np.array(means)), float(math.sqrt(w**2 @ np.array(variances))), time.perf_counter() - start


def part_path(seeds: int, quick: bool) -> None:
    energy, model = well_model()
    exact = exact_log_z(energy, 1.0)
    betas = np.concatenate([[0.0], np.geomspace(1e-3, 1.0, 19)])
    draws = 200 if quick else 500
    print(f"\n# the path from the prior: x ~ N(0, {PRIOR_SD:g}^2) with the double-well energy factor; exact log Z(1) = "
          f"{exact:.4f} (quadrature). TI: NUTS (2 chains x {draws}) at 20 beta (0 and 19 geometric in [1e-3, 1])")
    header = f"{'method':28s} {'|err|':>8s} {'se':>8s} {'err/se':>7s} {'wall s':>8s}"
    print(header)
    print("-" * len(header))
    smc = f"SMC (8 x {128 if quick else 512})"
    rows = {smc: [], "TI with NUTS, 20 beta": []}
    for seed in range(seeds):
        post = pyebm.infer(model, method=pyebm.SMC(num_particles=128 if quick else 512), seed=seed, progress=False)
        rows[smc].append((abs(post.log_evidence - exact), post.diagnostics["log_evidence_se"],
                                      post.wall_time))
        est, se, s = thermodynamic_integration(model, energy, betas, seed, draws)
        rows["TI with NUTS, 20 beta"].append((abs(est - exact), se, s))
    lap = pyebm.infer(model, method=pyebm.Laplace(init={"x": torch.tensor([0.8])}), seed=0, progress=False)
    for name, runs in rows.items():
        err, se, s = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{name:28s} {err:8.4f} {se:8.4f} {err / se:7.2f} {s:8.2f}", flush=True)
    print(f"{'Laplace (one well)':28s} {abs(lap.log_evidence - exact):8.4f} {'-':>8s} {'-':>7s} {lap.wall_time:8.2f}")


# --- part 3: a 16-site phi^4 chain in its ordered phase ------------------------------------------------------------
def phi_four_model(field):
    """The chain with a proper prior x ~ N(0, 2^2 I) (the path's start for SMC and TI): the same as the flat-prior
    field with mass 1/4, up to the prior's normaliser, so the transfer matrix gives its exact log Z too."""

    def model():
        x = pyro.sample("x", dist.Normal(torch.zeros(field.dim), PRIOR_SD).to_event(1))
        pyebm.energy_factor("phi4", field(x))

    return model


def part_phi_four(seeds: int, quick: bool) -> None:
    from pyebm.energies import PhiFour

    field = PhiFour(n=16, coupling=8.0)
    with_prior = PhiFour(n=16, coupling=8.0, mass=1 / PRIOR_SD**2)
    exact = with_prior.log_normalizer() - 8 * math.log(2 * math.pi * PRIOR_SD**2)
    model = phi_four_model(field)
    betas = np.concatenate([[0.0], np.geomspace(1e-3, 1.0, 19)])
    draws = 200 if quick else 500
    print(f"\n# a 16-site phi^4 chain, coupling 8, quartic 1 (ordered: two modes, all sites near +1 or all near -1), "
          f"prior N(0, {PRIOR_SD:g}^2 I); exact log Z = {exact:.4f} (transfer matrix). Mode share = fraction of draws "
          "with positive magnetisation (exact 0.5)")
    header = f"{'method':28s} {'|err|':>8s} {'se':>8s} {'err/se':>7s} {'wall s':>8s} {'mode share':>11s}"
    print(header)
    print("-" * len(header))
    smc = f"SMC (8 x {128 if quick else 512})"
    rows = {smc: [], "TI with NUTS, 20 beta": [], "NUTS, 4 chains (beta = 1)": []}
    for seed in range(seeds):
        post = pyebm.infer(model, method=pyebm.SMC(num_particles=128 if quick else 512), seed=seed, progress=False)
        share = float((post.draws()["x"].mean(-1) > 0).double().mean())
        rows[smc].append((abs(post.log_evidence - exact), post.diagnostics["log_evidence_se"],
                                      post.wall_time, share))
        est, se, s = thermodynamic_integration(model, field, betas, seed, draws)
        rows["TI with NUTS, 20 beta"].append((abs(est - exact), se, s, float("nan")))
        nuts = pyebm.infer(model, method=pyebm.NUTS(num_samples=draws, warmup_steps=draws, num_chains=4), seed=seed,
                           progress=False)
        per_chain = (nuts.approximation.draws["x"].mean(-1) > 0).double().mean(1)
        rows["NUTS, 4 chains (beta = 1)"].append((float("nan"), float("nan"), nuts.wall_time, float(per_chain.mean())))
        print(f"# seed {seed}: NUTS share per chain {[round(float(c), 2) for c in per_chain]}, "
              f"max r-hat {max(nuts.diagnostics['r_hat'].values()):.2f}", flush=True)
    for name, runs in rows.items():
        err, se, s, share = (statistics.median(r[i] for r in runs) for i in range(4))
        ratio = f"{err / se:7.2f}" if se == se else f"{'-':>7s}"
        print(f"{name:28s} {err:8.4f} {se:8.4f} {ratio} {s:8.2f} {share:11.2f}".replace("nan", "  -"), flush=True)
    lap = pyebm.infer(model, method=pyebm.Laplace(init={"x": torch.ones(16)}), seed=0, progress=False)
    print(f"{'Laplace (one mode)':28s} {abs(lap.log_evidence - exact):8.4f} {'-':>8s} {'-':>7s} {lap.wall_time:8.2f} "
          f"{'1 or 0':>11s}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one seed, fewer particles and draws: a smoke test")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 1
    print(f"# log Z benchmark, medians over {args.seeds} seeds")
    print(f"# {platform.platform()}, {os.cpu_count()} cpus, python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, pyebm {pyebm.__version__}")
    torch.set_default_dtype(torch.float64)
    part_zoo(args.seeds, args.quick)
    part_path(args.seeds, args.quick)
    part_phi_four(args.seeds, args.quick)


if __name__ == "__main__":
    main()
