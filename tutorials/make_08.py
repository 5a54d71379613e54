"""Writes tutorials/08_concepts_from_a_demonstration.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 08 · Concepts from a demonstration

**Goal.** Learn a concept (a shape) from a handful of its instances, as inference over the concept's parameters
under an energy: infer it by MAP, by Laplace and by NUTS; watch its posterior narrow as the demonstration grows from
1 to 3 to 10 points; then generate new instances by minimising the energy of a point under the inferred concept.

**What it shows, with the numbers printed beside each claim:** the posterior sd of a circle's radius from 1, 3 and 10
points (Laplace and NUTS, NUTS with its Monte Carlo error); posterior circles drawn over the demonstration; 200 new
points generated on the inferred circle, and how far they lie from it; a line learned from three points.

**References.** Mordatch, *Concept learning with energy-based models* (2018); Lake, Salakhutdinov & Tenenbaum,
*Human-level concept learning through probabilistic program induction* (Science, 2015); LeCun et al., *A tutorial
on energy-based learning* (2006).

**Run time:** about two minutes on 2 CPU cores (less with `CI=1`, the test suite's small settings)."""),
    code("""import math
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import pandas as pd
import torch

import pyebm
from pyebm.examples import concepts

torch.set_default_dtype(torch.float64)
SMOKE_TEST = "CI" in os.environ  # the test suite runs this notebook with small settings
# Pyro's NUTS with its potential compiled by torch.jit: the one-point posterior is a ridge, where trees grow deep
NUTS = pyebm.NUTS(num_samples=100 if SMOKE_TEST else 500, warmup_steps=100 if SMOKE_TEST else 300, num_chains=2,
                  jit_compile=True)"""),
    md("""## The energy of a concept

A circle with centre $c$ and radius $r$ scores a point by its squared distance to the circle,
$e_\\theta(x) = (\\lVert x - c\\rVert - r)^2 / 2\\sigma^2$ with $\\sigma = 0.05$. A demonstration $x_{1:n}$ gives the
concept $\\theta = (c, r)$ the energy $E(\\theta) = \\sum_i e_\\theta(x_i)$; with weak priors
($c \\sim \\mathcal N(0, 3^2 I)$, $r \\sim \\mathrm{LogNormal}(0, 1)$) `concepts.concept_model` is an ordinary Pyro
model with one energy factor, so every method of `pyebm.infer` applies. The demonstration: ten points around the
circle $c = (1, -0.5)$, $r = 1.5$, each moved by noise of sd 0.05 across it."""),
    code("""truth = {"centre": [1.0, -0.5], "radius": 1.5}
points = concepts.demonstration("circle", truth, 10, seed=1)
rows, posts = [], {}
for n in (1, 3, 10):
    lap = pyebm.infer(concepts.concept_model, points[:n], method="laplace", seed=0, progress=False)
    nuts = pyebm.infer(concepts.concept_model, points[:n], method=NUTS, seed=0, progress=False)
    posts[n] = (lap, nuts)
    draws = nuts.approximation.draws["radius"].reshape(-1)
    ess = nuts.diagnostics["ess_bulk"]["radius"]
    rows.append({"points": n, "MAP radius": float(lap.mode["radius"]), "Laplace sd": float(lap.std()["radius"]),
                 "NUTS mean": float(draws.mean()), "± MC se": float(draws.std() / math.sqrt(ess)),
                 "NUTS sd": float(draws.std()), "ESS": ess, "max r_hat": max(nuts.diagnostics["r_hat"].values())})
table = pd.DataFrame(rows).set_index("points")
print(table.round(3))"""),
    md("""One point says almost nothing: any circle through it fits, and the radius's posterior is spread over the
prior's range, with its mean far above the MAP radius (a skewed posterior: the MAP is not its centre). Laplace, a
Gaussian in $\\log r$, gets the scale of this spread but not its shape: its sd and NUTS's differ by a factor of about
two (table, first row). Three points pin the circle only loosely: the sd falls by a quarter (NUTS) to a half
(Laplace). Ten points all around fix the radius to a few hundredths, the noise's scale over $\\sqrt{n}$, and there
Laplace and NUTS agree (the sds to the printed digits, NUTS's mean within its Monte Carlo error of the MAP radius).
On the loose posteriors NUTS warns (above): a divergent transition or two, and an $\\hat r$ of about 1.02 and 1.07
for one and three points: the ridge of circles through few points is long and curved and these chains are short,
so those two rows' NUTS numbers are rough (their ESS, in the table, is a hundred or so); the ten-point row has
$\\hat r$ 1.00. The picture: thirty circles drawn from each NUTS posterior over the demonstration."""),
    code("""fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), sharex=True, sharey=True)
angle = torch.linspace(0, 2 * math.pi, 200)
for ax, n in zip(axes, (1, 3, 10)):
    nuts = posts[n][1]
    centre = nuts.approximation.draws["centre"].reshape(-1, 2)
    radius = nuts.approximation.draws["radius"].reshape(-1)
    for k in torch.linspace(0, len(radius) - 1, 30).long():
        ax.plot(centre[k, 0] + radius[k] * torch.cos(angle), centre[k, 1] + radius[k] * torch.sin(angle),
                color="C0", alpha=0.25, lw=1)
    ax.plot(1.0 + 1.5 * torch.cos(angle), -0.5 + 1.5 * torch.sin(angle), "k--", lw=1, label="true concept")
    ax.scatter(points[:n, 0], points[:n, 1], color="C3", zorder=3, label="demonstration")
    ax.set(title=f"{n} point{'s' if n > 1 else ''}: posterior circles", aspect="equal", xlim=(-4, 6), ylim=(-5, 5))
axes[0].legend(loc="lower left", fontsize=8)
fig.tight_layout()"""),
    md("""## Generating new instances

At a fixed concept every point of the circle minimises $e_\\theta$: the energy has a set of minima, not one. Gradient
descent (`concepts.generate`, L-BFGS) from 200 random starts lands each start on the nearest point of the circle, so
the new instances cover the whole shape, not one favourite. Drawing the concept from its posterior first (a
different circle per start) generates with the concept's uncertainty; the MAP concept generates the cleanest
instances."""),
    code("""g = torch.Generator().manual_seed(0)
starts = 2.5 * torch.randn(200, 2, generator=g) + torch.tensor([1.0, -0.5])
mode = posts[10][0].mode
new = concepts.generate("circle", mode, starts)
print(f"largest distance of a generated point to the MAP circle: {float(concepts.distance('circle', new, mode).max()):.1e}")
angles = torch.atan2(new[:, 1] - mode["centre"][1], new[:, 0] - mode["centre"][0])
print("generated points per 45° sector:", torch.histc(angles, bins=8, min=-math.pi, max=math.pi).long().tolist())
nuts = posts[3][1]
pick = torch.randint(nuts.approximation.draws["radius"].numel(), (200,), generator=g)
drawn = {k: v.reshape((-1,) + tuple(v.shape[2:]))[pick] for k, v in nuts.approximation.draws.items()}
uncertain = concepts.generate("circle", drawn, starts)
fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
for ax, pts, title in [(axes[0], new, "MAP concept (10 points)"), (axes[1], uncertain, "posterior concepts (3 points)")]:
    ax.scatter(starts[:, 0], starts[:, 1], s=6, color="0.75", label="starts")
    ax.scatter(pts[:, 0], pts[:, 1], s=8, color="C0", label="generated")
    ax.set(title=title, aspect="equal", xlim=(-5, 7), ylim=(-6, 5))
axes[0].legend(loc="lower left", fontsize=8)
fig.tight_layout()
spread = concepts.distance("circle", uncertain, {"centre": torch.tensor(truth["centre"]), "radius": torch.tensor(1.5)})
print(f"posterior-concept instances (3 points): median distance to the true circle {float(spread.median()):.3f}")"""),
    md("""Every generated point lies on the MAP circle to round-off and every 45° sector gets its share (printed above).
With the three-point concept drawn from its posterior, the instances scatter about the true circle by the
posterior's own spread (the median distance printed above): what the learner does not know shows in what it
generates.

## A line from three points

The same energy with a line's parameters, angle $\\phi$ and offset $b$ ($e_\\theta(x) = (x\\cdot n(\\phi) - b)^2/2\\sigma^2$),
learned by Laplace from three points: its direction is known to about $\\sigma$ over the points' spread."""),
    code("""line = {"angle": 0.6, "offset": 0.3}
pts = concepts.demonstration("line", line, 3, seed=2)
lap = pyebm.infer(concepts.concept_model, pts, "line", method="laplace", seed=0, progress=False)
print(f"angle {float(lap.mode['angle']):.3f} ± {float(lap.std()['angle']):.3f} (true 0.6; the line (φ + π, -b) is the "
      f"same), offset {float(lap.mode['offset']):.3f} ± {float(lap.std()['offset']):.3f} (true ±0.3)")"""),
    md("""## What to try next

* `concepts.distance` takes any shape written as a distance: add a square's corners (the minimum over four point
  distances) and watch MAP pick among its symmetric modes.
* Raise `noise` (the temperature of the demonstration): the posterior widens and the generated instances stray.
* `pyebm.compare(lap, nuts)` puts the Laplace and NUTS posteriors side by side, with their evidence."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "tutorials/08_concepts_from_a_demonstration.ipynb")
