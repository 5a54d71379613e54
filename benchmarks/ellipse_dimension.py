"""An ellipse learned two ways as the ambient dimension grows: how many negatives does a contrastive energy need?

The data (4000 points) lie near an ellipse (semi-axes 2 and 1, in-plane noise sd 0.02) in a random 2-D plane of
R^D (pyebm.examples.ellipse). Two energies, the same optimiser budget:

* latent: a decoder from a 1-D angle (2-64-64-D), trained by F_inf = min over 64 angles (fit "free_energy");
* contrastive: an MLP energy (D-128-128-1) trained by NCE against isotropic Gaussian noise of sd 1.2 (the data's
  spread), with `ratio` negatives per data point.

Quality without a grid: the separation (AUC) between 500 points on the ellipse and 500 points moved 0.3 off it in
random directions of R^D (1: every off point has the higher energy; 0.5: blind). The latent model in the same run
and dimension is the anchor. Per dimension the table gives each row's separation and training time, and the fewest
negatives (of those tried) with which NCE reaches a fixed quality, separation >= --quality (0.8), "-" if none does.

    python benchmarks/ellipse_dimension.py [--dims 2 8 32] [--ratios 1 16 64] [--steps 1500] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

import pyebm
from pyebm.examples import ellipse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 8, 32])
    parser.add_argument("--ratios", nargs="+", type=int, default=[1, 16, 64])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--quality", type=float, default=0.8, help="the separation NCE must reach")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="dims 2 and 8, ratios 1 and 16, 100 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.dims, args.ratios, args.steps = [2, 8], [1, 16], 100
    print(f"# pyebm {pyebm.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}, "
          f"{platform.platform()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}")
    print(f"# {args.steps} Adam steps, batch 128, 4000 training points; separation = AUC of on- versus 0.3-off "
          "points (500 each)")
    print(f"{'D':>4s} {'energy':22s} {'separation':>10s} {'wall s':>7s}  note")
    for dim in args.dims:
        data = ellipse.sample(4000, dim, seed=args.seed)
        on = ellipse.sample(500, dim, noise=0.0, seed=args.seed + 7)
        off = ellipse.off_manifold(500, dim, 0.3, seed=args.seed + 8)
        decoder, f_inf, wall = ellipse.train_latent(data, args.steps, seed=args.seed)
        anchor = ellipse.separation(f_inf, on, off)
        with torch.no_grad():
            curve = float(ellipse.distance(decoder.curve()).mean())
        print(f"{dim:4d} {'latent (1-D angle)':22s} {anchor:10.3f} {wall:7.1f}  decoded curve {curve:.4f} from the "
              "ellipse", flush=True)
        enough = None
        for ratio in args.ratios:
            energy, wall = ellipse.train_contrastive(data, ratio, args.steps, hidden=(128, 128), seed=args.seed)
            sep = ellipse.separation(energy, on, off)
            if enough is None and sep >= args.quality:
                enough = ratio
            print(f"{dim:4d} {'NCE, ' + str(ratio) + ' negatives':22s} {sep:10.3f} {wall:7.1f}", flush=True)
        print(f"{dim:4d} {'negatives for ' + str(args.quality):22s} {str(enough) if enough else '-':>10s}")


if __name__ == "__main__":
    main()
