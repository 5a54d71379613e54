"""Test-time training as latent inference on scikit-learn's digits under synthetic shifts.

A small MLP (64-64-BN-SiLU-64-BN-SiLU-10 (smooth, so the energy has a Hessian)) is trained on clean digits; at test time each shifted test set is one
batch (one domain) whose BatchNorm scales and shifts (256 weights) are the latents. Shifts: Gaussian noise,
contrast, blur, rotation, translation at three severities; two validation shifts (brightness, zoom), disjoint
from the test shifts, are used to choose the prior scale and nothing else. Rows:

  none                 trained net, running BatchNorm statistics
  norm-stats           BatchNorm statistics of the test batch, no weights changed
  tent                 TENT: one Adam step (lr 1e-3) on the batch's mean prediction entropy, from batch statistics
  map                  pyebm.ttt.adapt(method="map"): entropy energy + prior N(trained, s^2), s tuned on validation
  laplace              the same posterior's Laplace approximation, predictions averaged over 30 draws
  nuts (subset)        NUTS on the second BatchNorm's shifts (64-D), others at trained values
  neighbours-map       per input, the head's bias and the 2nd BN shift re-fit on its 10 nearest training digits
  neighbours-laplace   the same, Laplace (all test inputs adapted at once, vectorised)

(nuts and the neighbour rows run on the clean and middle-severity batches only, for time.)
  latents-on + map     network trained by pyebm.ttt.fit (entropy adaptation inside training), then map
  latents-on + laplace

Columns: accuracy, NLL, ECE (15 bins), Brier, wall time per test batch; mean +- sd over seeds, averaged over the
shifts of each family. A second table times batched independent adaptation of 512 inputs against a per-input loop.

    python benchmarks/ttt_digits.py            # 5 seeds, about 15 minutes on 2 cores
    python benchmarks/ttt_digits.py --quick    # 1 seed, fewer shifts, about 2 minutes
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
import warnings
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

import pyebm
from pyebm import ttt
from pyebm.examples.digits import HEAD, LATENTS, SHIFTS, VALIDATION, domain, load, make_net, train
from pyebm.metrics import classification_metrics as metrics
from pyebm.ttt import batch_statistics

warnings.simplefilter("ignore", pyebm.ConvergenceWarning)


# --- the methods ------------------------------------------------------------------------------------------------
def norm_stats(net, x):
    with batch_statistics(net), torch.no_grad():
        return torch.softmax(net(x), -1)


def posterior_predict(net, x, method, s, seed, latents=LATENTS):
    with batch_statistics(net):
        post = ttt.adapt(net, x, latents, "entropy", method, prior_scale=s, seed=seed)
        return ttt.predict(net, post, x, num_samples=30, seed=seed)


def neighbour_predict(net, train_data, x, laplace: bool):
    features = nn.Sequential(*list(net.children())[:-1])  # penultimate layer (eval mode)
    ctx, energy = ttt.neighbours(features, train_data[0], train_data[1], x, k=10)
    post = ttt.adapt(net, ctx, HEAD, energy, "laplace" if laplace else "map", prior_scale=0.5, independent=True)
    return ttt.predict(net, post, x, num_samples=30, seed=0)


def tune_prior_scale(net, val, seed) -> float:
    """The prior scale with the best mean validation NLL over the validation shifts (grid of five)."""
    best = None
    g = torch.Generator().manual_seed(seed)
    for s in (0.01, 0.03, 0.1, 0.3, 1.0):
        nll = []
        for shifts in VALIDATION.values():
            for shift in shifts:
                xv = shift(val[0], g)
                try:
                    nll.append(metrics(posterior_predict(net, xv, "map", s, seed), val[1])["nll"])
                except pyebm.InferenceError:
                    nll.append(float("inf"))
        score = float(np.mean(nll))
        if best is None or score < best[0]:
            best = (score, s)
    return best[1]


def method_table(base, on, train_data, x, s_base, s_on, seed, nuts: bool, middle: bool) -> dict:
    """Each row's prediction for one shifted test batch ``x``, as a thunk to time. The per-input rows (neighbours,
    and NUTS) run on the clean and middle-severity batches only (``middle``), to keep the run near 15 minutes."""
    methods = {
        "none": lambda: torch.softmax(base(x), -1),
        "norm-stats": lambda: norm_stats(base, x),
        "tent": lambda: ttt.tent(base, x, LATENTS),
        "map": lambda: posterior_predict(base, x, "map", s_base, seed),
        "laplace": lambda: posterior_predict(base, x, "laplace", s_base, seed),
        "latents-on + map": lambda: posterior_predict(on, x, "map", s_on, seed),
        "latents-on + laplace": lambda: posterior_predict(on, x, "laplace", s_on, seed),
    }
    if middle:
        methods["neighbours-map"] = lambda: neighbour_predict(base, train_data, x, False)
        methods["neighbours-laplace"] = lambda: neighbour_predict(base, train_data, x, True)
    if nuts and middle:
        methods["nuts (subset)"] = lambda: posterior_predict(
            base, x, pyebm.NUTS(num_samples=100, warmup_steps=100), s_base, seed, latents=["5.bias"])
    return methods


# --- the run ----------------------------------------------------------------------------------------------------
def run_seed(seed: int, args) -> dict:
    train_data, val, test = load(seed)
    base = train(make_net(seed), train_data, args.train_steps, seed)
    on = make_net(seed)
    train(on, train_data, args.train_steps // 2, seed)  # warm start, then latents-on training
    on.train()
    fit = ttt.fit(on, train_data, LATENTS, "entropy", prior_scale=0.1, domain=domain, steps=args.ttt_steps, lr=1e-3,
                  inner_steps=2, batch_size=128, seed=seed, progress=False)
    on.eval()
    s_base = tune_prior_scale(base, val, seed)
    s_on = fit.prior_scale
    rows = {}
    g = torch.Generator().manual_seed(seed + 100)
    conditions = [("clean", 0, lambda x, g: x)] + [
        (fam, sev + 1, fn) for fam, fns in SHIFTS.items() for sev, fn in enumerate(fns) if sev + 1 in args.severities
        and fam in args.shifts]
    for fam, sev, shift in conditions:
        x = shift(test[0], g)
        y = test[1]
        methods = method_table(base, on, train_data, x, s_base, s_on, seed, args.nuts, sev in (0, 2))
        for name, fn in methods.items():
            start = time.perf_counter()
            try:
                with torch.no_grad() if name == "none" else nullcontext():
                    probs = fn().detach()
                m = metrics(probs, y)
            except pyebm.InferenceError as err:
                m = {"acc": float("nan"), "nll": float("nan"), "ece": float("nan"), "brier": float("nan")}
                print(f"# seed {seed} {fam}-{sev} {name}: {str(err)[:120]}", file=sys.stderr)
            m["wall"] = time.perf_counter() - start
            rows[(name, fam, sev)] = m
    rows["_prior_scales"] = (s_base, s_on)
    return rows


def batched_timing(seed: int, n: int = 512) -> tuple[float, float, float, float]:
    """Independent adaptation of n inputs: one vectorised call versus per-input loops (timed on 32 inputs, scaled):
    pyebm.ttt.adapt per input (the Pyro model and pyebm.infer), and the vectorised engine called on one input."""
    train_data, _, test = load(seed)
    net = train(make_net(seed), train_data, 300, seed)
    features = nn.Sequential(*list(net.children())[:-1])
    x = test[0][:n] if len(test[0]) >= n else test[0].repeat(math.ceil(n / len(test[0])), 1, 1)[:n]
    ctx, energy = ttt.neighbours(features, train_data[0], train_data[1], x, k=10)
    start = time.perf_counter()
    batched = ttt.adapt(net, ctx, HEAD, energy, "map", prior_scale=0.5, independent=True)
    t_batched = time.perf_counter() - start
    loop_n = 32
    start = time.perf_counter()
    worst = 0.0
    for i in range(loop_n):
        one = ttt.adapt(net, ttt.Neighbourhood(ctx.inputs[i : i + 1], ctx.targets[i : i + 1]), HEAD, energy, "map",
                        prior_scale=0.5, seed=0)
        worst = max(worst, max(float((one.mode[k] - batched.mode[k][i]).abs().max()) for k in HEAD))
    t_loop = (time.perf_counter() - start) / loop_n * n
    start = time.perf_counter()
    for i in range(loop_n):
        ttt.adapt(net, ttt.Neighbourhood(ctx.inputs[i : i + 1], ctx.targets[i : i + 1]), HEAD, energy, "map",
                  prior_scale=0.5, independent=True)
    t_loop_engine = (time.perf_counter() - start) / loop_n * n
    return t_batched, t_loop, t_loop_engine, worst


def _table(results: list, names: list, columns: list, select, metric: str, fmt: str) -> None:
    """One table: rows = methods, columns = labels; ``select(column, (shift, severity))`` picks the cells averaged
    within a seed; mean ± sd over seeds."""
    print(f"{'method':22s}" + "".join(f"{c:>16s}" for c in columns))
    for name in names:
        cells = []
        for col in columns:
            per_seed = [[v[metric] for (n, f, sev), v in r.items() if n == name and select(col, (f, sev))]
                        for r in results]
            per_seed = [float(np.nanmean(v)) for v in per_seed if v and not all(math.isnan(x) for x in v)]
            cells.append(f"{fmt.format(np.mean(per_seed))} ± {fmt.format(np.std(per_seed)).strip():<5s}"
                         if per_seed else f"{'—':>14s}")
        print(f"{name:22s}" + "".join(f"{c:>16s}" for c in cells))


def report(results: list, families: list) -> None:
    """The tables: each metric averaged over the severities of each shift family (rows run on every batch), then
    every row at the middle severity, where the per-input rows (neighbours, NUTS) were run too."""
    names = list(dict.fromkeys(k[0] for k in results[0]))
    full = [n for n in names if all((n, f, 1) in results[0] for f in families)] or names
    columns = ["clean", *families]
    for metric, fmt in [("acc", "{:5.1f}"), ("nll", "{:5.3f}"), ("ece", "{:5.1f}"), ("brier", "{:5.3f}"),
                        ("wall", "{:5.2f}")]:
        unit = " (%)" if metric in ("acc", "ece") else " (s per test batch)" if metric == "wall" else ""
        print(f"\n## {metric}{unit}, averaged over severities")
        _table(results, full, columns, lambda col, key: key[0] == col, metric, fmt)
    for metric, fmt in [("acc", "{:5.1f}"), ("nll", "{:5.3f}"), ("ece", "{:5.1f}")]:
        print(f"\n## {metric} at the middle severity (2), every row")
        _table(results, names, columns, lambda col, key: key[0] == col and key[1] in (0, 2), metric, fmt)


def from_json(path: str) -> None:
    """Print the tables of a finished run from its ``--json`` file."""
    import json

    with open(path) as fh:
        data = json.load(fh)
    seeds = sorted({r["seed"] for r in data["rows"]})
    results = [{(r["method"], r["shift"], r["severity"]): r for r in data["rows"] if r["seed"] == s} for s in seeds]
    families = [f for f in SHIFTS if any(r["shift"] == f for r in data["rows"])]
    print(f"# {len(seeds)} seed(s), from {path}; prior scales (tuned, learned): {data['prior_scales']}")
    report(results, families)
    if "batched" in data:
        print_batched(*data["batched"])


def print_batched(t_b: float, t_l: float, t_e: float, worst: float) -> None:
    print("\n## batched independent adaptation (neighbour recipe, 512 inputs, 74 latents each, MAP)")
    print(f"vectorised, one call                      {t_b:8.2f} s")
    print(f"per-input loop of adapt() (pyebm.infer)   {t_l:8.2f} s   {t_l / t_b:6.1f}x   (32 timed, scaled to 512)")
    print(f"per-input loop of the vectorised engine   {t_e:8.2f} s   {t_e / t_b:6.1f}x")
    print(f"max |difference| between batched and per-input modes: {worst:.1e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write every (seed, method, shift, severity) result to this file")
    parser.add_argument("--from-json", help="only print the tables of a finished run's --json file")
    args = parser.parse_args(argv)
    if args.from_json:
        return from_json(args.from_json)
    args.train_steps, args.ttt_steps, args.nuts = 1500, 600, True
    args.severities, args.shifts = (1, 2, 3), tuple(SHIFTS)
    if args.quick:
        args.seeds, args.train_steps, args.ttt_steps, args.nuts = 1, 600, 150, False
        args.severities, args.shifts = (2,), ("noise", "contrast", "blur")
    torch.set_default_dtype(torch.float64)  # float32 line searches stall at round-off on these energies
    import sklearn

    print(f"# pyebm {pyebm.__version__}, torch {torch.__version__}, scikit-learn {sklearn.__version__}, python "
          f"{sys.version.split()[0]}, {platform.platform()}, {os.cpu_count()} cpus")
    print(f"# {args.seeds} seed(s); severities {args.severities}; test batch = the whole shifted test set (497)")
    start = time.perf_counter()
    results = []
    for seed in range(args.seeds):
        results.append(run_seed(seed, args))
        print(f"# seed {seed} done at {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    scales = [r.pop("_prior_scales") for r in results]
    print(f"# prior scale tuned on validation shifts (base net): {[s for s, _ in scales]}; "
          f"learned by latents-on training: {[round(s, 3) for _, s in scales]}")
    report(results, [f for f in SHIFTS if f in args.shifts])
    batched = batched_timing(0)
    print_batched(*batched)
    if args.json:
        import json

        flat = [{"seed": seed, "method": n, "shift": f, "severity": sev, **m}
                for seed, r in enumerate(results) for (n, f, sev), m in r.items()]
        with open(args.json, "w") as fh:
            json.dump({"prior_scales": scales, "rows": flat, "batched": batched}, fh, indent=1)
    print(f"\n# total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
