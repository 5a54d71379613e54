"""Free energies batched versus a naive per-point loop, timed in the same run.

1. Discrete: 10^4 points x 64 components (k-means energy in 2-D), pyebm.free_energy (one logsumexp) against a
   Python loop over the points.
2. Continuous: 10^3 points on the ellipse energy with a latent angle, Laplace free energy at beta = 4 and the
   minimum (beta = inf): one batched minimisation against a loop calling free_energy per point.

    python benchmarks/free_energy.py [--repeats 3] [--points 1000]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch

import pyebm
from pyebm.energies import Ellipse, KMeans


def median_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=1000, help="points for the continuous case")
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(0)
    print(f"# free-energy benchmark: medians of {args.repeats} runs (naive loops: 1 run)")
    print(f"# {platform.platform()}, {os.cpu_count()} cpus, python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"pyebm {pyebm.__version__}")
    header = f"{'case':48s} {'batched s':>10s} {'loop s':>9s} {'speed-up':>9s} {'max |diff|':>11s}"
    print(header)
    print("-" * len(header))

    km = KMeans(3 * torch.randn(64, 2, generator=g))
    x = 4 * torch.randn(10_000, 2, generator=g)
    beta = 2.0

    def loop_discrete():
        out = torch.empty(len(x))
        for i, xi in enumerate(x):
            e = ((xi - km.centres) ** 2).sum(-1)
            out[i] = -torch.logsumexp(-beta * e, 0) / beta
        return out

    t_b, f_b = median_time(lambda: km.free_energy(x, beta), args.repeats)
    t_l, f_l = median_time(loop_discrete, 1)
    print(f"{'discrete: 10^4 points x 64 components, beta=2':48s} {t_b:10.4f} {t_l:9.3f} {t_l / t_b:9.0f} "
          f"{float((f_b - f_l).abs().max()):11.2e}")

    el = Ellipse(2.0, 1.0)
    n = args.points
    angle = torch.rand(n, generator=g) * 2 * math.pi
    radius = 1.3 + torch.rand(n, generator=g)
    pts = torch.stack([2 * radius * torch.cos(angle), radius * torch.sin(angle)], -1)
    for beta in (4.0, float("inf")):
        def batched(beta=beta):
            return pyebm.free_energy(lambda theta: el(pts, theta), {"theta": ()}, beta,
                                     init={"theta": el.angle_guess(pts)}).detach()

        def loop(beta=beta):
            return torch.stack([pyebm.free_energy(lambda theta, p=p: el(p, theta), {"theta": ()}, beta,
                                                  init={"theta": el.angle_guess(p)}).detach() for p in pts])

        t_b, f_b = median_time(batched, args.repeats)
        t_l, f_l = median_time(loop, 1)
        label = f"continuous: {n} points, ellipse, beta={beta:g}"
        print(f"{label:48s} {t_b:10.4f} {t_l:9.3f} {t_l / t_b:9.0f} {float((f_b - f_l).abs().max()):11.2e}")


if __name__ == "__main__":
    main()
