"""Langevin throughput: 10^4 chains on a 2-layer MLP energy, batched (chains as a batch dimension) against a naive
per-chain Python loop, timed in the same run.

    python benchmarks/langevin.py [--chains 10000] [--steps 50] [--loop-steps 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

import pyebm
from pyebm.samplers import langevin_init, langevin_step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--loop-steps", type=int, default=2, help="steps of the (slow) per-chain loop")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(2, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128), torch.nn.SiLU(),
                              torch.nn.Linear(128, 1))
    energy = lambda x: mlp(x).squeeze(-1)  # noqa: E731
    x0 = torch.randn(args.chains, 2)
    g = torch.Generator().manual_seed(1)

    state = langevin_init(energy, x0)
    langevin_step(state, energy, 0.01, generator=g)  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        state, _ = langevin_step(state, energy, 0.01, generator=g)
    batched = time.perf_counter() - start

    chains = [langevin_init(energy, x0[i : i + 1]) for i in range(args.chains)]
    start = time.perf_counter()
    for _ in range(args.loop_steps):
        chains = [langevin_step(s, energy, 0.01, generator=g)[0] for s in chains]
    loop = time.perf_counter() - start

    per_step_batched, per_step_loop = batched / args.steps, loop / args.loop_steps
    print(f"# Langevin throughput, {args.chains} chains, MLP 2-128-128-1 (SiLU), float32")
    print(f"# {platform.platform()}, {os.cpu_count()} cpus, python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"pyebm {pyebm.__version__}")
    print(f"{'runner':28s} {'s/step':>10s} {'chain-steps/s':>15s}")
    print(f"{'batched (pyebm.samplers)':28s} {per_step_batched:10.4f} {args.chains / per_step_batched:15.0f}")
    print(f"{'per-chain Python loop':28s} {per_step_loop:10.4f} {args.chains / per_step_loop:15.0f}")
    print(f"speed-up: {per_step_loop / per_step_batched:.0f}x")


if __name__ == "__main__":
    main()
