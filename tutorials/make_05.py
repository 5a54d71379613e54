"""Writes tutorials/05_test_time_training.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 05 · Test-time training is latent inference

Test-time training (TTT) takes a trained network and, for each test batch, nudges a few of its weights by a few
gradient steps on an unsupervised loss before predicting. Read as an energy-based model, those weights θ are
**latent variables** and the steps a crude minimisation of an energy. So infer them properly:

$$p(\\theta \\mid x_{\\rm test}) \\;\\propto\\; \\underbrace{\\mathcal N(\\theta;\\,\\theta_0,\\,s^2 I)}_{\\text{stay near the trained weights}}
\\;\\exp\\Bigl(-\\beta\\sum_i E(\\theta;\\,x_i)\\Bigr)$$

with $E$ e.g. the prediction entropy (TENT) or the free energy $-\\log\\sum_c e^{f_c(x)}$ (JEM). MAP is TTT done to
convergence with an explicit anchor; Laplace and NUTS add the uncertainty a point estimate throws away, and
predictions average over it. `pyebm.ttt.adapt` builds exactly this Pyro model (weights through
`torch.func.functional_call`; your network is never modified) and runs any `pyebm.infer` method on it."""),
    code("""import json
import os
import pathlib
import sys
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import pandas as pd
import torch

import pyebm
from pyebm import ttt

warnings.simplefilter("ignore", pyebm.ConvergenceWarning)
torch.set_default_dtype(torch.float64)
SMOKE_TEST = "CI" in os.environ
sys.path.insert(0, str(pathlib.Path.cwd().parent / "benchmarks"))
import ttt_digits as bench  # the benchmark's data, shifts, network and metrics"""),
    md("""## Two extremes of one recipe: a global line and k-nearest neighbours

The classic neighbour recipe of test-time training (local learning): for a test input, gather its $k$ nearest
training examples and re-fit some weights on *their* supervised loss, anchored at the trained values. With
`pyebm.ttt.neighbours` the neighbours' loss is the energy, and every test input gets its own latents, all adapted
at once (`independent=True`, vectorised). Here a straight line is fitted to a sine; each test point re-fits the
line's slope and intercept on its 15 nearest training points. The prior scale slides between the extremes:
$s\\to0$ keeps the global line, a wide prior on the intercept alone is (up to the slope's tilt) the
k-nearest-neighbour average, a wide prior on both is local linear regression."""),
    code("""g = torch.Generator().manual_seed(0)
tx = torch.rand(200, 1, generator=g) * 6 - 3
ty = torch.sin(tx[:, 0]) + 0.1 * torch.randn(200, generator=g)
line = torch.nn.Linear(1, 1)
with torch.no_grad():
    sol = torch.linalg.lstsq(torch.cat([tx, torch.ones(200, 1)], 1), ty[:, None]).solution
    line.weight.copy_(sol[:1].T)
    line.bias.copy_(sol[1])
grid = torch.linspace(-3, 3, 121)[:, None]
ctx, energy = ttt.neighbours(lambda v: v, tx, ty, grid, k=15, kind="squared", noise=0.1)

def local_fit(latents, s):
    post = ttt.adapt(line, ctx, latents, energy, "laplace", prior_scale=s, independent=True)
    w = post.mode.get("weight", line.weight.detach().expand(len(grid), 1, 1))[:, 0, 0]
    b = post.mode["bias"][:, 0]
    sd_b = post.std()["bias"][:, 0]
    return w * grid[:, 0] + b, sd_b

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(tx[:, 0], ty, ".", color="0.7", label="training data")
ax.plot(grid, line(grid).detach(), label="trained global line (s → 0)")
knn, _ = local_fit("bias", 100.0)
ax.plot(grid, knn, label="intercept re-fit, wide prior (≈ kNN)")
local, _ = local_fit(["weight", "bias"], 100.0)
ax.plot(grid, local, label="slope and intercept re-fit (local regression)")
mid, sd = local_fit(["weight", "bias"], 0.3)
ax.plot(grid, mid, "--", label="s = 0.3: in between")
ax.legend(fontsize=8)
ax.set_xlabel("x")
fig.tight_layout()"""),
    md("""## Digits under a shift: adapt the BatchNorm weights

The benchmark's setting, live and small: an MLP with two BatchNorm layers is trained on clean digits
(scikit-learn's bundled `load_digits`); the test set is shifted as one batch (here: contrast reduced to 30%). The
latents are the BatchNorm scales and shifts (256 weights). Rows: no adaptation; the test batch's own normalisation
statistics (no weights changed); TENT's single entropy step; MAP and Laplace of the latent posterior."""),
    code("""train_data, val, test = bench.load(0)
net = bench.train(bench.make_net(0), train_data, 300 if SMOKE_TEST else 1500, 0)
shift = bench.SHIFTS["contrast"][1]
x_test = shift(test[0], torch.Generator().manual_seed(1))
y_test = test[1]
s = 0.1
rows = {"none": torch.softmax(net(x_test), -1).detach(),
        "norm-stats": bench._batch_stats_predict(net, x_test),
        "tent": bench.tent(net, x_test)}
posts = {}
for method in ("map", "laplace"):
    with bench.batch_statistics(net):
        posts[method] = ttt.adapt(net, x_test, bench.LATENTS, "entropy", method, prior_scale=s, seed=0)
        rows[method] = ttt.predict(net, posts[method], x_test, num_samples=30, seed=0)
pd.DataFrame({k: bench.metrics(v, y_test) for k, v in rows.items()}).T.round(3)"""),
    md("""Most of the gain comes from the batch's own normalisation statistics: a contrast change is, to the first
layer, a rescaling that BatchNorm undoes. The adapted weights then move little, because the prior keeps them close
and the entropy has little left to gain. The Laplace posterior says how little (posterior sd relative to the prior's):"""),
    code("""sd = torch.cat([v.reshape(-1) for v in posts["laplace"].std().values()])
print(f"posterior sd / prior sd: median {float((sd / s).median()):.2f}, min {float((sd / s).min()):.2f}")"""),
    md("""## When entropy minimisation hurts

Minimising prediction entropy rewards confidence, right or wrong. With a weak prior and a shift the network
misreads, the adapted weights slide towards predicting few classes with certainty: the energy falls, accuracy with
it. The prior is what stops this, and its scale is a modelling choice to be tuned on shifts you can afford to label
(the benchmark tunes it on two validation shifts that are not among the test shifts)."""),
    code("""x_rot = bench.SHIFTS["rotation"][2](test[0], None)  # 30 degrees
out = []
for s in (0.03, 0.3, 3.0, 30.0):
    with bench.batch_statistics(net):
        try:
            post = ttt.adapt(net, x_rot, bench.LATENTS, "entropy", "map", prior_scale=s, seed=0)
            probs = ttt.predict(net, post, x_rot)
        except pyebm.InferenceError as err:
            out.append({"prior scale": s, "accuracy %": float("nan"), "note": str(err)[:60]})
            continue
    ent = float(-(probs * probs.clamp_min(1e-12).log()).sum(1).mean())
    out.append({"prior scale": s, "accuracy %": bench.metrics(probs, y_test)["acc"], "mean entropy": ent,
                "classes predicted": int(probs.argmax(1).unique().numel())})
pd.DataFrame(out).set_index("prior scale").round(3)"""),
    md("""## Reusing adaptations: a cache keyed by the input's embedding

Per-input adaptation costs one optimisation per input. `pyebm.ttt.AdaptationCache` keys adapted posteriors by the
network's own features and reuses one when a new input falls within a radius of an input already adapted. Inputs
arrive here as a stream of batches of 50 noisy digits; each is adapted by the neighbour recipe (the head's bias and the
second BatchNorm shift re-fit on its 10 nearest training digits) unless the cache has a close enough key. The radius
trades hit rate against accuracy:"""),
    code("""features = torch.nn.Sequential(*list(net.children())[:-1])  # penultimate layer, running statistics
x_noisy = bench.SHIFTS["noise"][1](test[0], torch.Generator().manual_seed(2))
ctx, nb_energy = ttt.neighbours(features, train_data[0], train_data[1], x_noisy, k=10)
with torch.no_grad():
    f = features(x_noisy)
    nearest = torch.cdist(f, f).fill_diagonal_(float("inf")).min(1).values.median()

def stream(radius):
    cache = ttt.AdaptationCache(features, radius) if radius is not None else None
    probs = []
    for start in range(0, len(x_noisy), 50):
        chunk = slice(start, start + 50)
        def run(idx, offset=start):
            rows = idx + offset
            return ttt.adapt(net, ttt.Neighbourhood(ctx.inputs[rows], ctx.targets[rows]), bench.HEAD, nb_energy,
                             "map", prior_scale=0.5, independent=True)
        post = run(torch.arange(len(x_noisy[chunk]))) if cache is None else cache.adapt(x_noisy[chunk], run)
        probs.append(ttt.predict(net, post, x_noisy[chunk]))
    return torch.cat(probs), (cache.hit_rate if cache else 0.0)

rows = []
for label, radius in [("no cache", None), ("radius 0.5×", 0.5 * nearest), ("radius 1×", nearest),
                      ("radius 2×", 2 * nearest), ("radius 4×", 4 * nearest)]:
    probs, hit = stream(radius)
    rows.append({"cache": label, "hit rate %": 100 * hit, **bench.metrics(probs, y_test)})
pd.DataFrame(rows).set_index("cache").round(3)"""),
    md("""The radius is in units of the median distance from a test input to its nearest other test input, in feature
space. Here reuse is free: at a 2× radius nine inputs in ten reuse another's adaptation and accuracy and NLL do not
move, because this adaptation (re-fitting on *clean* neighbours) changes the predictions very little in the first
place. A cache pays where adaptation is expensive and the inputs are redundant; the same table, run where
adaptation changes predictions more, is the way to choose its radius."""),
    md("""## The benchmark in pictures

`python benchmarks/ttt_digits.py --json benchmarks/results/ttt_digits.json` (5 seeds, five shift families at three
severities; the prior scale tuned on validation shifts only) wrote the file read below. Accuracy and expected
calibration error against severity, per shift family, for the main rows:"""),
    code("""results = json.loads((pathlib.Path.cwd().parent / "benchmarks" / "results" / "ttt_digits.json").read_text())
df = pd.DataFrame(results["rows"])
main_rows = ["none", "norm-stats", "tent", "map", "laplace", "latents-on + map"]
families = ["noise", "contrast", "blur", "rotation", "translation"]
clean = df[df["shift"] == "clean"].groupby("method")[["acc", "ece"]].mean()
fig, axes = plt.subplots(2, len(families), figsize=(3 * len(families), 5.5), sharey="row")
for col, fam in enumerate(families):
    sub = df[df["shift"] == fam]
    for name in main_rows:
        m = sub[sub["method"] == name].groupby("severity")[["acc", "ece"]].mean()
        if m.empty:
            continue
        sev = [0, *m.index]
        axes[0, col].plot(sev, [clean.loc[name, "acc"], *m["acc"]], "o-", label=name)
        axes[1, col].plot(sev, [clean.loc[name, "ece"], *m["ece"]], "o-", label=name)
    axes[0, col].set_title(fam)
    axes[1, col].set_xlabel("severity (0 = clean)")
axes[0, 0].set_ylabel("accuracy %")
axes[1, 0].set_ylabel("ECE %")
axes[0, -1].legend(fontsize=7)
fig.tight_layout()"""),
    md("""Accuracy of every row at the middle severity, where the per-input rows (neighbours, NUTS) also ran:"""),
    code("""middle = df[df["severity"].isin([0, 2])]
summary = middle.groupby(["method", "shift"])["acc"].mean().unstack("shift")
summary.loc[main_rows + ["nuts (subset)", "neighbours-map", "neighbours-laplace", "latents-on + laplace"],
            ["clean", *families]].round(1)"""),
    md("""## What this shows, honestly

* **The batch's own normalisation statistics do almost all of the work.** Contrast and blur are, to a network
  with BatchNorm, near-affine changes of its features, and renormalising with the test batch's statistics undoes
  them (contrast: about 50% → 97.5% accuracy). TENT's single step and the MAP/Laplace posterior of the BatchNorm
  weights add a few tenths of a point on top, at no cost in clean accuracy (≤ 0.1 point).
* **Laplace improves calibration and NLL over MAP at equal accuracy** on every shift family (the same predictions
  on average, less overconfident); the full posterior of a 64-weight subset by NUTS matches the batch-statistics
  baseline, it does not beat it.
* **Entropy cannot fix what is not an affine change of features.** Additive pixel noise gains under 10% relative
  error; rotations and translations move strokes across pixels, and entropy minimisation then mostly becomes more
  confident about wrong classes (see the rotation table above: with a weak prior the predictions collapse onto few
  classes). The tuned prior scale is small for this reason: the validation shifts prefer staying near the trained
  weights.
* **Latents-on training did not pay off here**: a network trained with two inner adaptation steps per batch
  (random gain/offset domains, prior scale learned ≈ 0.11) is slightly *worse* after post-hoc MAP than the plainly
  trained one. Its training domains are exactly what BatchNorm's batch statistics already remove, so the latents
  have nothing left to learn; and two inner steps at training time are not the converged MAP used at test time.
* **The neighbour recipe** re-fits the head on clean training neighbours: it improves calibration under noise
  (ECE 7.7% → 5.8% with Laplace) but cannot touch a shift the neighbours do not share.

These are the numbers of one small network on 8×8 digits; they say which pieces matter here, not in general."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "tutorials/05_test_time_training.ipynb")
