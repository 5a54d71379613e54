"""Writes tutorials/07_evidence_along_the_path.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 07 · The normaliser along the temperature path

**Goal.** Compute $\\log Z(\\beta) = \\log\\int p(x)\\,e^{-\\beta E(x)}\\,dx$ with an error bar, for every $\\beta$ from 0
(the prior) to 1 (the model), with `method="smc"`; see where Laplace's one-Gaussian shortcut gets it right and by how
much it misses elsewhere; and use evidence with error bars to choose a prior scale.

**What it shows, with the numbers printed beside each claim:** the SMC curve of $\\log Z(\\beta)$ against quadrature
and against Laplace at each $\\beta$ on a double well (Laplace exact at $\\beta = 0$, about $\\log 2$ short once the
barrier splits the mass); the heat capacity along the path; the evidence of a logistic regression over four prior
scales, SMC with its standard error beside Laplace.

**References.** Neal, *Annealed importance sampling* (2001); Del Moral, Doucet & Jasra, *Sequential Monte Carlo
samplers* (2006); MacKay, *Information Theory, Inference, and Learning Algorithms*, ch. 28 (evidence).

**Run time:** about a minute on 2 CPU cores (less with `CI=1`, the test suite's small settings)."""),
    code("""import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch

import pyebm

torch.set_default_dtype(torch.float64)
SMOKE_TEST = "CI" in os.environ  # the test suite runs this notebook with small settings
SMC = pyebm.SMC(num_particles=128 if SMOKE_TEST else 512)
FINE = pyebm.SMC(num_particles=SMC.num_particles, target_ess=0.9)  # smaller stages: more points on the path"""),
    md("""## A double well under a Gaussian prior

$x \\sim \\mathcal N(0, 2^2)$ and the energy factor $E(x) = h\\,(x^2 - 1)^2$ with $h = 4$: at $\\beta = 0$ the model
is its prior, at $\\beta = 1$ the mass sits in two wells at $\\pm 1$. SMC tempers every observed term of the model
(here the energy factor alone, so its path parameter is `pyebm.temper`'s $\\beta$) and records $\\log Z$ at each
stage; `target_ess=0.9` makes the stages small, for many points on the curve. The exact curve is one-dimensional
quadrature. The density stays one bump while the prior's curvature $1/4$ beats the barrier's $4\\beta h$, up to
$\\beta = 1/64 \\approx 0.016$; beyond, it has two modes."""),
    code("""well = pyebm.energies.DoubleWell(dim=1, height=4.0)


def model():
    x = pyro.sample("x", dist.Normal(torch.zeros(1), 2.0).to_event(1))
    pyebm.energy_factor("well", well(x))


def exact_log_z(beta):
    x = torch.linspace(-10, 10, 200001)
    log_f = dist.Normal(0.0, 2.0).log_prob(x) - beta * well(x[:, None])
    m = log_f.max()
    return float(m + torch.log(torch.trapezoid(torch.exp(log_f - m), x)))


smc = pyebm.infer(model, method=FINE, seed=0, progress=False)
d = smc.diagnostics
print(f"{d['num_stages']} stages, {FINE.num_runs} runs x {FINE.num_particles} particles, {smc.wall_time:.1f} s")
rows = []
for b, lz, se in zip(d["beta"], d["log_Z"], d["log_Z_se"]):
    if b == 0:
        continue
    lap = pyebm.infer(pyebm.temper(model, b), method=pyebm.Laplace(init={"x": torch.tensor([0.5])}), seed=0,
                      progress=False)
    ex = exact_log_z(b)
    rows.append({"beta": b, "exact": ex, "SMC": lz, "SMC se": se, "(SMC - exact) / se": (lz - ex) / se,
                 "Laplace - exact": lap.log_evidence - ex})
path = pd.DataFrame(rows).set_index("beta")
print(path.round(4))
z = path["(SMC - exact) / se"].abs()
print(f"largest |SMC - exact| / se over the {len(z)} stages: {z.max():.2f}")
one, two = path[path.index < 1 / 64], path[path.index > 1 / 64]
print(f"Laplace - exact: at most {one['Laplace - exact'].abs().max():.3f} while unimodal (beta < 1/64), "
      f"{two['Laplace - exact'].iloc[-1]:.3f} at beta = 1")"""),
    md("""Every stage's SMC estimate sits within a few of its own standard errors of the quadrature (the largest
ratio is printed; the stages share particles, so their errors are correlated). Laplace (last column) is exact only
at $\\beta = 0$, where the model is its Gaussian prior. The quartic bends the density long before it splits: at
small $\\beta$ the tails are already lighter than Laplace's Gaussian; near $\\beta = 1/64$ the curvature at the single
mode vanishes, so Laplace's $-\\tfrac12\\log\\det H$ term blows up and it overcounts the mass; past the split it fits
one well and counts about half the mass, about $\\log 2 \\approx 0.69$ short (a Gaussian on a quartic well misses a
little more)."""),
    code("""betas = np.linspace(0, 1, 41)
ax = pyebm.plot.log_z_path(smc, exact={b: exact_log_z(b) for b in betas},
                           laplace={b: exact_log_z(b) + e for b, e in path["Laplace - exact"].items()})
ax.set_title("log Z(β): SMC ± 2 se, quadrature, Laplace");"""),
    md("""## What the path tells about the energy

Along the path, $-\\frac{d}{d\\beta}\\log Z = \\mathbb E_\\beta[E]$, the mean energy, and
$\\frac{d^2}{d\\beta^2}\\log Z = \\mathrm{Var}_\\beta[E]$ (the heat capacity is $\\beta^2$ times it). SMC reports both
per stage. The mean energy falls as the particles settle into the wells; the adaptive schedule takes short stages
where the energies are spread widely (at small $\\beta$, where the prior's wide particles first meet the energy)
and long ones later, keeping the effective sample size of each step at its target."""),
    code("""fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
b = np.array(d["beta"][1:])
axes[0].plot(b, d["mean_energy"], marker=".")
axes[0].set(xlabel="β", ylabel="mean energy E_β[E]", xscale="log")
axes[1].plot(b, d["heat_capacity"], marker=".")
axes[1].set(xlabel="β", ylabel="heat capacity β² Var_β[E]", xscale="log")
fig.tight_layout()
print("stage widths:", np.round(np.diff(d["beta"]), 4))
print("mean energy:  ", np.round(d["mean_energy"], 3))"""),
    md("""## Choosing a prior scale by evidence, with error bars

A logistic regression on 60 points, weights $w \\sim \\mathcal N(0, s^2 I)$. Which scale $s$ do the data support?
The evidence $p(y \\mid s)$ answers; SMC estimates it with a standard error, Laplace without one (its error is a
bias, not noise). The data are generated with weights of size about 1."""),
    code("""g = torch.Generator().manual_seed(0)
X = torch.randn(60, 3, generator=g)
w_true = torch.tensor([1.0, -0.8, 0.5])
y = torch.bernoulli(torch.sigmoid(X @ w_true), generator=g)


def logistic(X, y, scale):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), scale).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=X @ w), obs=y)


rows = []
for s in [0.1, 0.3, 1.0, 3.0, 10.0]:
    post = pyebm.infer(logistic, X, y, s, method=SMC, seed=0, progress=False)
    lap = pyebm.infer(logistic, X, y, s, method="laplace", seed=0, progress=False)
    se = post.diagnostics["log_evidence_se"]
    rows.append({"prior scale": s, "SMC log evidence": post.log_evidence, "se": se,
                 "Laplace": lap.log_evidence, "(Laplace - SMC) / se": (lap.log_evidence - post.log_evidence) / se,
                 "SMC s": post.wall_time})
ev = pd.DataFrame(rows).set_index("prior scale")
print(ev.round(3))
best = ev["SMC log evidence"].idxmax()
gap = ev["SMC log evidence"].sort_values().iloc[-1] - ev["SMC log evidence"].sort_values().iloc[-2]
print(f"SMC chooses s = {best}, ahead of the next by {gap:.2f} nats (se about {ev['se'].max():.3f}); "
      f"Laplace chooses s = {ev['Laplace'].idxmax()}")
print(f"largest |Laplace - SMC|: {(ev['Laplace'] - ev['SMC log evidence']).abs().max():.3f} nats")"""),
    md("""Both choose the same scale, and the evidence falls off on either side: too narrow a prior cannot reach the
weights the data want, too wide a prior spreads its mass over weights the data rule out (the Occam factor).
With sixty points the logistic posterior is close to Gaussian, so Laplace's evidence lies within a few hundredths
of a nat of SMC's, about two SMC standard errors at most (printed above); the double well is where it is not.

## What to try next

* `pyebm.compare(smc_post, laplace_post)` puts `log_evidence` and its standard error side by side.
* For an energy model with a flat prior, `pyebm.SMC(reference=scale)` starts from a wide Gaussian instead of the
  prior (the end point is then $\\log\\int e^{-E}$, the energy's own normaliser; tested against the zoo's closed forms).
* `benchmarks/evidence.py` measures SMC against Laplace, the exact answer and thermodynamic integration with NUTS."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "tutorials/07_evidence_along_the_path.ipynb")
