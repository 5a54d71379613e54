"""Writes tutorials/01_energy_as_log_probability.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 01 · Energy as log-probability

An energy-based model scores configurations with an energy $E(x)$: low is compatible, high is not.
Read as physics, the energy is a negative log-probability at inverse temperature $\\beta$:

$$p_\\beta(x) = \\frac{e^{-\\beta E(x)}}{Z(\\beta)}, \\qquad Z(\\beta) = \\int e^{-\\beta E(x)}\\,dx .$$

EBM practice skips $Z$ and minimises $E$; Bayesian practice fights for $Z$ and the whole density. This notebook
walks one energy up the ladder **MAP → Laplace → SVI → NUTS** with one argument, against the exact answer,
and shows what each rung adds.

**Goal.** Put one energy through MAP, Laplace, SVI and NUTS by changing one argument of `pyebm.infer`, compare each
with the exact normaliser and moments, and see what the temperature $\\beta$ does to all of them.

**References.** LeCun, Chopra, Hadsell, Ranzato & Huang, *A tutorial on energy-based learning* (2006); MacKay,
*Information Theory, Inference, and Learning Algorithms*, ch. 27 (Laplace's method); Hoffman & Gelman, *The No-U-Turn
Sampler* (2014); Blei, Kucukelbir & McAuliffe, *Variational inference: a review for statisticians* (2017). The claim
tested, from the seed talks: energy minimisation is the β → ∞ end of Bayesian inference, and Laplace ("call yourself
a Bayesian again") is the cheapest step back from it.

**Run time:** about a minute on 2 CPU cores (less with `CI=1`, the test suite's small settings)."""),
    code("""import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import pandas as pd
import torch

import pyebm
from pyebm.energies import Banana

torch.set_default_dtype(torch.float64)
SMOKE_TEST = "CI" in os.environ  # the test suite runs this notebook with small settings
NUTS_DRAWS = 200 if SMOKE_TEST else 1500
SVI_STEPS = 300 if SMOKE_TEST else 2000"""),
    md("""## An energy and its normaliser

The banana $E(x) = \\frac{x_1^2}{2s^2} + \\frac12\\bigl(x_2 - b(x_1^2 - s^2)\\bigr)^2$ is a Gaussian sheared
along a parabola. The shear has unit Jacobian, so $Z(\\beta) = 2\\pi s/\\beta$ exactly: a rare energy whose
answers we know in closed form, which makes it a good judge. `pyebm.energies` also normalises any 1-D/2-D
energy on a grid; both agree:"""),
    code("""energy = Banana(s=1.0, b=0.5)
rows = []
for beta in [0.5, 1.0, 2.0, 4.0]:
    rows.append({"beta": beta, "log Z exact": energy.log_normalizer(beta), "log Z on a grid": energy.grid(beta).log_normalizer})
pd.DataFrame(rows)"""),
    md("""## Temperature

$\\beta$ sharpens or flattens the same landscape: $\\beta \\to \\infty$ concentrates all mass at the minimum
(that limit *is* MAP), $\\beta \\to 0$ spreads it out. The energy itself (left) does not change."""),
    code("""bounds = [(-3.5, 3.5), (-2.5, 5.5)]
fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
pyebm.plot.landscape(energy, bounds, ax=axes[0])
axes[0].set_title("energy E(x)")
for ax, beta in zip(axes[1:], [0.5, 1.0, 4.0]):
    pyebm.plot.landscape(energy, bounds, beta=beta, ax=ax)
    ax.set_title(f"p_β(x), β = {beta}")
fig.tight_layout()"""),
    md("""## One model, every inference

`model_from_energy` turns the energy into a Pyro model (a flat prior on $x$ and one energy factor), and
`pyebm.infer` runs it under any method; every method returns the same `Posterior`."""),
    code("""model = pyebm.model_from_energy(energy, {"x": 2})
posts = [
    pyebm.infer(model, method="map", seed=0, progress=False),
    pyebm.infer(model, method="laplace", seed=0, progress=False),
    pyebm.infer(model, method=pyebm.SVI(steps=SVI_STEPS), seed=0, progress=False),
    pyebm.infer(model, method=pyebm.NUTS(num_samples=NUTS_DRAWS, warmup_steps=500 if not SMOKE_TEST else 200), seed=0, progress=False),
]
table = pyebm.compare(*posts)
mean, cov = energy.mean(), energy.covariance()
table["exact"] = pd.Series({("x[0]", "mean"): float(mean[0]), ("x[0]", "sd"): float(cov[0, 0].sqrt()),
                            ("x[1]", "mean"): float(mean[1]), ("x[1]", "sd"): float(cov[1, 1].sqrt()),
                            ("log_evidence", ""): energy.log_normalizer()})
table.round(3)"""),
    code("""fig = pyebm.plot.compare(*posts, energy=energy, bounds=bounds)"""),
    md("""## What each rung adds

* **MAP** is the minimum of the energy, $(0, -\\tfrac12)$: a point, no spread, no $Z$. It is the $\\beta\\to\\infty$
  limit of the Gibbs density, and it is *not* the mean: the banana's mass sits higher, at $\\mathbb E x_2 = 0$.
* **Laplace** adds the curvature at the minimum. Here it gets $\\log Z$ exactly (the Hessian's determinant is the
  shear's, $1/s^2$) and the marginal spread of $x_1$; it cannot bend, so its mean is still the mode and it misses
  the banana's skew in $x_2$.
* **SVI** fits the best Gaussian under $\\mathrm{KL}(q\\,\\|\\,p)$, which punishes mass where $p$ has none: it
  shrinks $x_1$'s spread to stay inside the curve, and moves its mean up toward the banana's mean. Its ELBO is a
  lower bound on $\\log Z$ (below), not an estimate.
* **NUTS** samples the banana itself: means and spreads within two Monte Carlo standard errors of the exact
  column (printed below, in units of those errors)."""),
    code("""svi = posts[2]
print(f"SVI final ELBO {svi.diagnostics['final_elbo']:.3f}  <=  log Z {energy.log_normalizer():.3f}")
print(posts[3].summary().round(3))
nuts_post, sd_exact = posts[3], cov.diagonal().sqrt()
for i in range(2):
    ess = nuts_post.diagnostics["ess_bulk"][f"x[{i}]"]
    se_mean, se_sd = sd_exact[i] / ess**0.5, sd_exact[i] / (2 * ess) ** 0.5  # the sd's se: Gaussian approximation
    print(f"x[{i}]: NUTS mean off by {float((nuts_post.mean()['x'][i] - mean[i]) / se_mean):+.1f} Monte Carlo se, "
          f"sd off by {float((nuts_post.std()['x'][i] - sd_exact[i]) / se_sd):+.1f} se")"""),
    md("""## Tempering a model

`pyebm.temper(model, beta)` rescales every energy factor of a model (and nothing else: priors and likelihoods
stay). Laplace's evidence then follows $\\log Z(\\beta) = \\log(2\\pi s/\\beta)$ exactly, because tempering a
sheared Gaussian keeps it one:"""),
    code("""rows = []
for beta in [0.25, 0.5, 1.0, 2.0, 8.0]:
    lap = pyebm.infer(pyebm.temper(model, beta), method="laplace", seed=0, progress=False)
    rows.append({"beta": beta, "Laplace log Z": lap.log_evidence, "exact log Z": energy.log_normalizer(beta),
                 "Laplace sd x[0]": float(lap.std()["x"][0]), "exact sd x[0]": float(energy.covariance(beta)[0, 0].sqrt())})
pd.DataFrame(rows).round(4)"""),
    md("""## To ArviZ

Every posterior converts to ArviZ data (`InferenceData` with ArviZ 0.x, `DataTree` with 1.x); MCMC keeps its
chains and `sample_stats`, the other methods give draws as one chain."""),
    code("""idata = posts[3].to_arviz()
idata.posterior"""),
    md("""## What to try next

* Swap the energy for one of `pyebm.energies` (the banana, the funnel, the double well) and watch which rung of the
  ladder breaks first; `pyebm.plot.landscape` draws it.
* Change $\\beta$ with `pyebm.temper` and check that Laplace's evidence follows the closed form
  $\\log Z(\\beta)$ on the Gaussian.
* Notebook 07 computes $\\log Z(\\beta)$ where Laplace cannot: sequential Monte Carlo along the temperature path."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "tutorials/01_energy_as_log_probability.ipynb")
