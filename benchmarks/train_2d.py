"""Training energies on 2-D targets whose density is known, scored exactly on a grid.

For each target and method: an MLP energy (2-128-128-1, SiLU) is trained from the same initial weights with the
same budget of optimiser steps; the learned density exp(-E)/Z is normalised on a 401x401 grid over the target's box
and scored by the test negative log-likelihood minus the target's entropy (= KL(p||q) + Monte Carlo error; the
grid KL has no sampling error), by squared MMD of 2000 draws, wall time and energy evaluations. The regularized
latent-variable row is k-means (K=16, beta=inf) turned into the shared-variance mixture it implies.

    python benchmarks/train_2d.py [--steps 3000] [--targets eight_gaussians two_moons] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys

import torch

import pyebm
from pyebm.energies import Checkerboard, EightGaussians, KMeans, MLPEnergy, Rings, TwoMoons
from pyebm.train import evaluate_2d, fit

TARGETS = {"eight_gaussians": EightGaussians, "two_moons": TwoMoons, "rings": Rings, "checkerboard": Checkerboard}

# settings per method; the learning rate and schedule are shared
METHODS = {
    "cd": dict(k=20, step_size=0.005, grad_clip=None),
    "pcd": dict(k=20, step_size=0.005, buffer_size=10_000),
    "nce": dict(ratio=4),
    "dsm": dict(sigma=0.05),
    "ssm": dict(projections=1),
    "generator": dict(),
}


def kmeans_mixture(data: torch.Tensor, steps: int, seed: int) -> tuple[callable, dict]:
    """k-means (beta = inf) by pyebm.train, then the mixture it implies: sigma^2 = mean squared distance / D."""
    g = torch.Generator().manual_seed(seed)
    km = KMeans(data[torch.randperm(len(data), generator=g)[:16]], learnable=True)
    res = fit(km, data, "kmeans", steps=steps, lr=0.02, lr_decay=0.01, seed=seed, progress=False)
    with torch.no_grad():
        var = float(km(data).min(0).values.mean()) / data.shape[1]
    beta = 1 / (2 * var)
    return (lambda x: -km.mixture_log_density(x, beta)), {"wall": res.wall_time, "evals": res.evaluations}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--targets", nargs="+", default=["eight_gaussians", "two_moons"], choices=sorted(TARGETS))
    parser.add_argument("--methods", nargs="+", default=[*METHODS, "kmeans"])
    parser.add_argument("--train", type=int, default=20_000, help="training points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="300 steps, one target (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.targets = 300, args.targets[:1]
    print(f"# pyebm {pyebm.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}, "
          f"{platform.platform()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}")
    print(f"# {args.steps} Adam steps (lr 1e-3 decayed to 1e-4), batch 256, {args.train} training points, "
          "MLP 2-128-128-1 SiLU with a 1e-3|x|^2 confining term, float32 training, float64 evaluation")
    header = f"{'target':16s} {'method':8s} {'NLL-H':>8s} {'(se)':>7s} {'grid KL':>8s} {'MMD^2':>9s} {'wall s':>8s} {'E evals':>10s}"
    print(header)
    for tname in args.targets:
        target = TARGETS[tname]()
        data = target.sample(args.train, seed=args.seed, dtype=torch.float32)
        test = target.sample(10_000, seed=args.seed + 1, dtype=torch.float64)
        torch.manual_seed(args.seed)
        init = MLPEnergy(confine=1e-3)
        for method in args.methods:
            if method == "kmeans":
                energy, info = kmeans_mixture(data.double(), args.steps, args.seed)
            else:
                energy = copy.deepcopy(init)
                res = fit(energy, data, method, steps=args.steps, lr=1e-3, lr_decay=0.1, batch_size=256,
                          seed=args.seed, progress=False, **METHODS[method])
                info = {"wall": res.wall_time, "evals": res.evaluations}
            r = evaluate_2d(energy, target, test)
            print(f"{tname:16s} {method:8s} {r['excess_nll']:8.3f} {r['nll_se']:7.3f} {r['kl']:8.3f} "
                  f"{r['mmd']:9.2e} {info['wall']:8.1f} {info['evals']:10.3g}", flush=True)
        print(f"{tname:16s} {'truth':8s} {'0 (H = ' + format(target.entropy(), '.3f') + ')':>26s}")


if __name__ == "__main__":
    main()
