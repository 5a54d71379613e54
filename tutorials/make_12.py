"""Writes tutorials/12_multimodal_prediction.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 12 · Several futures through a latent: a car at a fork

**Goal.** Predict a future that has two modes. Without a latent, an energy-minimising predictor returns the blurry
average of the two futures, which is neither; with a latent $z$, the energy $E(x, y, z)$ gives one future per value
of $z$, and sampling $z$ gives both. Then vary the latent's capacity until the energy collapses: too much capacity
makes every future low.

**What it shows, with the numbers printed beside each claim:** the distance of each predictor's futures to the nearer
true branch; which value of the latent predicts which branch and how often each is used; the free energy
$F_\\infty(x, y) = \\min_z E(x, y, z)$ of the data, of the blurry average and of random futures as the latent grows
from a choice of one (no latent) to a continuous latent as large as the future; the energy over a slice of futures,
drawn for four latents.

**References.** LeCun, *A path towards autonomous machine intelligence* (2022) and the energy-based-model lectures
(latent-variable EBMs, the car at a fork); LeCun et al., *A tutorial on energy-based learning* (2006); Henaff,
Zhao & LeCun, *Prediction under uncertainty with error-encoding networks* (2017).

**Run time:** about a minute and a half on 2 CPU cores (less with `CI=1`, the test suite's small settings)."""),
    code("""import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import pandas as pd
import torch

from pyebm.examples import fork
from pyebm.train import fit, latent_free_energy, latent_free_energy_loss

torch.set_default_dtype(torch.float64)
SMOKE_TEST = "CI" in os.environ  # the test suite runs this notebook with small settings
STEPS = 150 if SMOKE_TEST else 1000"""),
    md("""## The data

A car's position $x \\in [0, 1]$ says where in the prediction horizon the road forks; its future lateral positions
$y \\in \\mathbb R^8$ at times $t_k = k/8$ follow one of two branches, $y_k = \\pm 2\\max(0, t_k - x)$ plus noise of sd
0.05, each branch equally likely. Before the fork the futures agree; after it they diverge."""),
    code("""(x, y), (x_test, y_test) = fork.sample(4000, seed=0), fork.sample(1000, seed=1)
times = torch.arange(1, 9) / 8
fig, ax = plt.subplots(figsize=(7, 3.5))
for k in range(40):
    ax.plot(times, y[k], color="C0" if y[k, -1] > 0 else "C1", alpha=0.5)
ax.set(xlabel="time t", ylabel="lateral position y", title="40 futures: the branch taken at the fork (t = x)")
plt.show()"""),
    md("""## Without a latent: the blurry average

A latent with one value is no latent: `LatentPredictor(latent_dim=1)` with support `torch.eye(1)` is the regression
energy $E(x, y) = \\tfrac12\\lVert y - f(x)\\rVert^2$, whose minimiser over training is the conditional mean: here
$\\mathbb E[y \\mid x] = 0$, the average of the two branches. With a choice of two (`torch.eye(2)`, one-hot $z$), the
energy $\\tfrac12\\lVert y - m(x) - G(x)z\\rVert^2$ has two futures per $x$, and training by the free energy at
$\\beta = \\infty$ (`fit(..., "free_energy", latent=torch.eye(2))`: the minimum over $z$ of each example's energy, the
latent-variable reading of k-means) assigns each example to the future that explains it better."""),
    code("""def train(latent_dim, latent, steps=STEPS):
    torch.manual_seed(0)
    model = fork.LatentPredictor(8, latent_dim)
    fit(model, (x, y), "free_energy", latent=latent, steps=steps, lr=3e-3, lr_decay=0.05, seed=0, progress=False)
    return model


no_latent, choice = train(1, torch.eye(1)), train(2, torch.eye(2))
with torch.no_grad():
    blurry = no_latent.predict(x_test, torch.ones(1))
    futures = [choice.predict(x_test, z) for z in torch.eye(2)]
    usage = (torch.stack([choice(x, y, z) for z in torch.eye(2)]).argmin(0) == 0).double().mean()
rows = [{"predictor": "no latent", "future": "f(x)", "distance to nearer branch": fork.nearest_branch_distance(x_test, blurry)}]
rows += [{"predictor": "choice of two", "future": f"z = e{k + 1}", "distance to nearer branch":
          fork.nearest_branch_distance(x_test, f)} for k, f in enumerate(futures)]
for r in rows:
    d = r.pop("distance to nearer branch")
    r["mean distance"], r["± se"] = float(d.mean()), float(d.std() / len(d) ** 0.5)
print(pd.DataFrame(rows).set_index(["predictor", "future"]).round(3))
print(f"mean norm of a branch (the distance of the average to either): {float(fork.branches(x_test)[0].norm(dim=-1).mean()):.3f}")
print(f"the upper branch is z = e{1 if float(futures[0][:, -1].mean()) > 0 else 2}; "
      f"share of training futures explained best by z = e1: {float(usage):.3f}")"""),
    md("""The regression's prediction is about as far from either branch as the branches are from their average (it
*is* the average); each value of the two-way latent predicts one branch, to about a tenth (the noise on a training
future alone has norm 0.14). The choice is used about half the time each, so sampling $z$ by its usage draws both futures about
equally. The picture at two positions, a fork early in the horizon and a fork late in it."""),
    code("""fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, position in zip(axes, (0.2, 0.6)):
    xq = torch.full((1, 1), position)
    for b in fork.branches(xq)[:, 0]:
        ax.plot(times, b, "k-", lw=3, alpha=0.25)
    with torch.no_grad():
        ax.plot(times, no_latent.predict(xq, torch.ones(1))[0], "r--", label="no latent: the average")
        for k, z in enumerate(torch.eye(2)):
            ax.plot(times, choice.predict(xq, z)[0], "o-", ms=4, label=f"choice of two, z = e{k + 1}")
    ax.set(title=f"fork at x = {position} (true branches in grey)", xlabel="time t")
axes[0].set_ylabel("lateral position")
axes[0].legend()
plt.show()"""),
    md("""## Capacity: from a choice to a collapse

What keeps the latent model from predicting *everything* is the latent's capacity. Measured by the free energy
$F_\\infty(x, y) = \\min_z E(x, y, z)$ of three kinds of future for the test positions: the true futures, the blurry
average $y = 0$, and random futures (standard normal, about the data's scale). A good energy is low on the first and
high on the other two. The latents: choices of 1, 2 and 4 values, and continuous latents of dimension 1, 2, 4 and 8 (the
future's own dimension), for which the minimum over $z$ is a least-squares problem."""),
    code("""random_futures = torch.randn(1000, 8, generator=torch.Generator().manual_seed(3))
models = {"choice of 1 (no latent)": (no_latent, torch.eye(1)), "choice of 2": (choice, torch.eye(2)),
          "choice of 4": (train(4, torch.eye(4)), torch.eye(4))}
for d in (1, 2, 4, 8):
    models[f"continuous, dim {d}"] = (train(d, {"z": d}), {"z": d})
rows = []
with torch.no_grad():
    for name, (model, latent) in models.items():
        rows.append({"latent": name, **{label: float(latent_free_energy_loss(model, (x_test, futures), latent))
                                        for label, futures in (("F data", y_test), ("F average", torch.zeros_like(y_test)),
                                                               ("F random", random_futures))}})
table = pd.DataFrame(rows).set_index("latent")
print(table.to_string(float_format=lambda v: f"{v:.3g}"))"""),
    md("""Read down the table. Without a latent the *average* has the lowest energy of all, lower than the data. A
choice of two (or four: the spare values duplicate a branch or go unused) keeps the data low and both the average and
random futures high: the energy now describes the two futures. A continuous latent, even of dimension 1, gives the
average an energy near zero: a line of futures $m(x) + G(x)z$ through both branches passes through their average, and
at $\\beta = \\infty$ nothing charges for being between the modes. As the dimension grows, random futures get lower too,
and at dimension 8 every future is reconstructed exactly: the energy is zero everywhere (to rounding), the collapse
that regularized latent-variable models avoid only by limiting the latent. The slice below shows it: the energy over
futures $y = u\\,\\hat b + v\\,\\hat e$ at $x = 0.25$, with $\\hat b$ the direction of the upper branch (at $u = \\pm\\lVert
b\\rVert$ the two branches, at $u = 0$ their average) and $\\hat e$ a unit direction orthogonal to it."""),
    code("""xq = torch.full((1, 1), 0.25)
b = fork.branches(xq)[0, 0]
b_hat = b / b.norm()
e_hat = torch.ones(8) - (torch.ones(8) @ b_hat) * b_hat
e_hat = e_hat / e_hat.norm()
u, v = torch.linspace(-2.5, 2.5, 121), torch.linspace(-1.5, 1.5, 81)
U, V = torch.meshgrid(u, v, indexing="xy")
slice_futures = (U[..., None] * b_hat + V[..., None] * e_hat).reshape(-1, 8)
x_slice = xq.expand(len(slice_futures), 1)
fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), sharey=True)
with torch.no_grad():
    for ax, name in zip(axes, ("choice of 1 (no latent)", "choice of 2", "continuous, dim 1", "continuous, dim 8")):
        model, latent = models[name]
        F = latent_free_energy(model, (x_slice, slice_futures), latent)
        im = ax.contourf(U, V, F.reshape(U.shape), levels=30, cmap="viridis")
        ax.plot([-float(b.norm()), float(b.norm())], [0, 0], "w*", ms=12)
        ax.set(title=name, xlabel="u (along the branch)")
        fig.colorbar(im, ax=ax)
axes[0].set_ylabel("v (orthogonal)")
plt.show()"""),
    md("""The stars are the two true futures. Without a latent the one minimum sits between them; a choice of two puts
a minimum on each; a one-dimensional continuous latent lays a valley through both (and through the average); at the
future's dimension the energy is flat.

## What to try next

- Add an information penalty (`LatentPredictor(penalty=...)`) to the continuous latents and see how far it restores the
  contrast, and how the network can evade an L2 penalty by growing $G$ (the reason sparse coding normalises its atoms).
- Train at a finite $\\beta$ (`fit(..., "free_energy", beta=1.0, latent=torch.eye(2))`): the free energy counts how
  many latents explain a future, a soft assignment instead of the hard one (k-means versus the mixture, tutorial 02).
- Put the choice behind a Pyro model and infer the branch of a partly observed future by enumeration.
"""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
nbf.write(nb, "tutorials/12_multimodal_prediction.ipynb")
