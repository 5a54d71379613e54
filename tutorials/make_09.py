"""Writes tutorials/09_generator_negatives.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 09 · Generator negatives: a GAN as a contrastive energy-based model

**Goal.** Read a GAN as a contrastive EBM: the discriminator is an energy that pushes the data down and the
generator's samples up; the generator descends the energy. Train it with `fit(..., method="generator")` beside
NCE's fixed noise, on a target whose density is known, and score both exactly on a grid.

**What it shows, with the numbers printed beside each claim:** the learned densities of the generator-trained and
the NCE-trained energies on eight Gaussians against the truth (grid KL, test NLL with its standard error); the
generator's own samples over the learned density; the cost of each (energy evaluations, seconds); what happens to
the generator without its entropy term.

**References.** Goodfellow et al., *Generative adversarial nets* (2014); Kim & Bengio, *Deep directed generative
models with energy-based probability estimation* (2016); Kumar et al., *Maximum entropy generators for energy-based
models* (2019); Gutmann & Hyvärinen, *Noise-contrastive estimation* (2010); LeCun et al., *A tutorial on
energy-based learning* (2006).

**Run time:** about half a minute on 2 CPU cores (less with `CI=1`, the test suite's small settings)."""),
    code("""import copy
import math
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import pandas as pd
import torch

import pyebm
from pyebm.energies import EightGaussians, MLPEnergy, grid_density
from pyebm.train import evaluate_2d, fit

SMOKE_TEST = "CI" in os.environ  # the test suite runs this notebook with small settings
STEPS = 200 if SMOKE_TEST else 1500"""),
    md("""## The objective

With the energy $E_\\theta$ as the discriminator and a generator $G_\\phi$ with density $q_\\phi$,

$$\\mathcal L_\\theta = \\overline{E_\\theta(x^+)} - \\overline{E_\\theta(G_\\phi(z))}, \\qquad
\\mathcal L_\\phi = \\overline{E_\\theta(G_\\phi(z)) + \\log q_\\phi(G_\\phi(z))}
= \\mathrm{KL}(q_\\phi \\,\\|\\, p_\\theta) - \\log Z_\\theta .$$

The energy's gradient is the maximum-likelihood gradient once the generator samples the model
$p_\\theta \\propto e^{-E_\\theta}$, which is what the generator's loss drives it to: descend the energy, keep its
entropy. pyebm's generator is a small normalising flow, so $\\log q_\\phi$ is exact. NCE, for comparison, contrasts
the data with fixed noise (a Gaussian fitted to the data). Same energy network, same initial weights, same
optimiser and steps."""),
    code("""target = EightGaussians()
data = target.sample(20_000, seed=0, dtype=torch.float32)
test = target.sample(10_000, seed=1, dtype=torch.float64)
torch.manual_seed(0)
init = MLPEnergy(confine=1e-3)
runs, rows = {}, []
for method, options in [("generator", {}), ("nce", {"ratio": 4})]:
    energy = copy.deepcopy(init)
    res = fit(energy, data, method, steps=STEPS, lr=1e-3, lr_decay=0.1, batch_size=256, seed=0, progress=False,
              **options)
    runs[method] = (energy, res)
    r = evaluate_2d(energy, target, test, num=201)
    rows.append({"method": method, "grid KL": r["kl"], "NLL - H": r["excess_nll"], "(se)": r["nll_se"],
                 "energy evals": res.evaluations, "seconds": res.wall_time})
table = pd.DataFrame(rows).set_index("method")
print(table.round(3))"""),
    md("""The table says how close each learned density is to the truth: the grid KL has no sampling error, the test
NLL minus the target's entropy estimates the same KL, with its standard error beside it. With this budget the
generator-trained energy is further from the truth than NCE's (the table), for fewer energy evaluations per step:
a generator is a sampler that learns alongside the energy, and it lags it. The benchmark
(`benchmarks/train_2d.py`, 3000 steps, its table in `docs/benchmarks.md`) puts it beside CD's Langevin negatives
as well. The pictures: the learned densities, and the generator's samples over its energy's density."""),
    code("""fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
truth = target.grid(num=201)
extent = [*target.bounds[0], *target.bounds[1]]
axes[0].imshow(truth.density.T, origin="lower", extent=extent, cmap="viridis")
axes[0].set(title="target density")
for ax, method in zip(axes[1:], ("generator", "nce")):
    grid = grid_density(runs[method][0], target.bounds, 201)
    ax.imshow(grid.density.T, origin="lower", extent=extent, cmap="viridis")
    ax.set(title=f"learned by {method}: KL {table.loc[method, 'grid KL']:.3f}")
gen = runs["generator"][1].state.generator
with torch.no_grad():
    draws, _ = gen.sample(1000, torch.Generator().manual_seed(0))
axes[1].scatter(draws[:, 0], draws[:, 1], s=2, color="w", alpha=0.6)
fig.tight_layout()
inside = [(draws - c.to(draws.dtype)).norm(dim=-1) < 0.5 for c in target.mixture.means]
print("share of 1000 generator samples within 0.5 of each of the eight centres:",
      [round(float(m.double().mean()), 3) for m in inside])
print(f"the target's own share per centre: {(1 - math.exp(-0.5**2 / (2 * target.scale**2))) / 8:.3f}")"""),
    md("""At this budget neither energy has separated the eight modes: both learned densities are rings through them
(the pictures; their KLs in the titles). The generator's samples (white, middle panel) spread over the whole ring
its energy learned, the neighbourhood of every centre getting a similar share (printed), below the target's own
share (printed beneath them): the generator samples its energy's density, not the data's. What its entropy term
buys is that spread: without it, a generator collapses onto a few points, the failure GANs are known for. Remove
the term and see.

## Without the entropy term

The same run with the generator minimising $\\overline{E_\\theta(G_\\phi(z))}$ alone, a GAN generator's usual goal:
it descends into the energy's minima and its spread shrinks; the energy, contrasted against those few negatives,
learns less of the data's shape."""),
    code("""class NoEntropy(pyebm.train.GeneratorNegatives):
    def loss(self, energy, batch, state, generator):
        neg, _ = state.generator.sample(self.negatives or len(batch), generator)
        return pyebm.train.generator_negatives_loss(energy, batch, neg, torch.zeros(len(neg))), 3 * len(batch)


energy = copy.deepcopy(init)
res = fit(energy, data, NoEntropy(), steps=STEPS, lr=1e-3, lr_decay=0.1, batch_size=256, seed=0, progress=False)
r = evaluate_2d(energy, target, test, num=201)
with torch.no_grad():
    collapsed, _ = res.state.generator.sample(1000, torch.Generator().manual_seed(0))
print(f"grid KL without the entropy term: {r['kl']:.3f} (with it: {table.loc['generator', 'grid KL']:.3f})")
print(f"generator samples' sd per coordinate: {collapsed.std(0).numpy().round(3)} "
      f"(with the entropy term: {draws.std(0).numpy().round(3)}; data: {data.std(0).numpy().round(3)})")"""),
    md("""## What to try next

* `pyebm.train.GeneratorNegatives(layers=..., hidden=...)` sets the flow's size; `negatives=` its samples per step.
* `benchmarks/train_2d.py --methods generator cd nce` puts the generator beside CD's Langevin negatives on eight
  Gaussians and two moons.
* Tutorial 03 compares the other contrastive and regularised objectives on the same targets."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "tutorials/09_generator_negatives.ipynb")
