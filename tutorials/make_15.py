"""Writes tutorials/15_laplace_on_a_network.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 15 · Laplace on a network: the happy medium

**Goal.** A trained network is a MAP estimate: one point, no uncertainty. Sampling its weights (NUTS) is the honest
posterior but slow; Laplace is the happy medium: the curvature of the energy at the trained weights gives a Gaussian
over them, and linearising the network there (the GLM predictive) turns it into predictive bands. This notebook takes
laplace-torch's own example (an MLP on a noisy sine observed on two intervals, a gap between them), and shows

1. MAP against Laplace predictive bands, with the prior precision **and** the observation noise chosen by the Laplace
   evidence, without validation data (`ttt.Evidence(noise=True)`);
2. every weight at once in structures that never build a D × D matrix (K-FAC, diagonal), beside the last layer;
3. the evidence against the test NLL along the prior precision: what "without validation data" buys;
4. test-time training as latent inference: adapting a subset of the weights (the last bias) to a shifted target from
   a few labelled points, with the GLM predictive of its posterior.

Every number in the text is printed beside it.

**References.** MacKay, *A practical Bayesian framework for backpropagation networks* (1992); Ritter, Botev & Barber,
*A scalable Laplace approximation for neural networks* (K-FAC, 2018); Immer, Korzepa & Bauer, *Improving predictions
of Bayesian neural nets via local linearization* (the GLM predictive, 2021); Daxberger et al., *Laplace Redux* (2021),
whose library, laplace-torch, `benchmarks/laplace_networks.py` checks pyebm against.

**Run time:** about 20 seconds on 2 CPU cores (less with `CI=1`, the test suite's small settings)."""),
    code("""import os
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import pandas as pd
import torch

import pyebm
from pyebm import ttt

torch.set_default_dtype(torch.float64)
SMOKE_TEST = "CI" in os.environ  # the test suite runs this notebook with small settings
STEPS = 300 if SMOKE_TEST else 3000"""),
    md("""## The data and the trained network

$y = \\sin x + \\varepsilon$, $\\varepsilon \\sim \\mathcal N(0, 0.2^2)$, observed on $[-6, -2]$ and $[2, 6]$ (60 points
each); the test set covers $[-6, 6]$, gap included. The network, 1-50-50-1 with tanh, is trained by Adam on the mean
squared error: that is MAP under a flat prior."""),
    code("""g = torch.Generator().manual_seed(0)
x = torch.cat([torch.rand(60, 1, generator=g) * 4 - 6, torch.rand(60, 1, generator=g) * 4 + 2])
y = torch.sin(x[:, 0]) + 0.2 * torch.randn(120, generator=g)
x_test = torch.rand(1000, 1, generator=g) * 12 - 6
y_test = torch.sin(x_test[:, 0]) + 0.2 * torch.randn(1000, generator=g)
in_gap = x_test[:, 0].abs() < 2

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(1, 50), torch.nn.Tanh(), torch.nn.Linear(50, 50), torch.nn.Tanh(),
                          torch.nn.Linear(50, 1))
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
for _ in range(STEPS):
    loss = torch.nn.functional.mse_loss(net(x)[:, 0], y)
    opt.zero_grad()
    loss.backward()
    opt.step()
trained = {k: v.detach() for k, v in net.named_parameters()}
print(f"{sum(v.numel() for v in trained.values())} weights; training RMSE {float(loss.detach()) ** 0.5:.3f} "
      "(the noise sd is 0.2)")


def nll(mean, var):
    \"\"\"Mean test negative log-likelihood of a Gaussian predictive.\"\"\"
    return float(-torch.distributions.Normal(mean, var.sqrt()).log_prob(y_test).mean())"""),
    md("""## 1 · MAP against Laplace, with the evidence choosing the prior and the noise

Post-hoc Laplace takes the network as trained (`Laplace(at=trained)`: no re-fit) under a prior
$\\mathcal N(0, \\delta^{-1})$ on the chosen weights, with the squared-error energy
$\\tfrac12\\sum_i (f_\\theta(x_i) - y_i)^2/\\sigma^2$. `prior_scale=ttt.Evidence(noise=True)` picks $\\delta$ and
$\\sigma$ by maximising the Laplace evidence (the energy's curvature scales as $1/\\sigma^2$, so both are tuned
jointly, the Gaussian likelihood's normaliser included). The weights were trained without that prior, so the point is
not exactly its mode: pyebm says how far it is (a `ConvergenceWarning`, silenced here and printed as a number).

Here the last layer (51 weights) is the latent set; section 2 takes every weight."""),
    code("""warnings.filterwarnings("ignore", category=pyebm.ConvergenceWarning)
last = ["4.weight", "4.bias"]
start = time.perf_counter()
post_last = ttt.adapt(net, (x, y), last, ttt.supervised("squared", 1.0), pyebm.Laplace(at={k: trained[k] for k in last}),
                      prior_mean="zero", prior_scale=ttt.Evidence(noise=True, init=1.0), seed=0)
seconds_last = time.perf_counter() - start
noise, delta = post_last.diagnostics["noise"], post_last.diagnostics["prior_scale"]["4.weight"] ** -2
print(f"evidence-tuned noise sd {noise:.4f} (true 0.2), prior precision {delta:.3f}, in {seconds_last:.2f} s; "
      f"trained point {post_last.diagnostics['distance']:.2f} posterior sds from the mode")

grid = torch.linspace(-8, 8, 400)[:, None]
with torch.no_grad():
    map_grid, map_test = net(grid)[:, 0], net(x_test)[:, 0]
mean, var = ttt.predict(net, post_last, grid, likelihood="regression", pred_type="glm", noise=noise)
mean_t, var_t = ttt.predict(net, post_last, x_test, likelihood="regression", pred_type="glm", noise=noise)
print(f"test NLL: MAP plug-in (noise {noise:.3f} only) {nll(map_test, torch.full_like(map_test, noise**2)):.4f}, "
      f"last-layer Laplace {nll(mean_t[:, 0], var_t[:, 0]):.4f}")
print(f"Laplace predictive sd: {float(var_t[in_gap, 0].sqrt().mean()):.3f} in the gap, "
      f"{float(var_t[~in_gap, 0].sqrt().mean()):.3f} where there are data")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, (title, m, sd) in zip(axes, [("MAP: the trained network, noise band only", map_grid, noise),
                                      ("last-layer Laplace, GLM predictive", mean[:, 0], var[:, 0].sqrt())]):
    ax.fill_between(grid[:, 0], m - 2 * sd, m + 2 * sd, alpha=0.3, label="± 2 sd")
    ax.plot(grid[:, 0], m, label="mean")
    ax.plot(grid[:, 0], torch.sin(grid[:, 0]), "k--", lw=1, label="sin x")
    ax.scatter(x[:, 0], y, s=6, c="k")
    ax.set(title=title, xlabel="x", ylim=(-4, 4))
axes[0].legend(loc="lower left")
plt.show()"""),
    md("""The evidence finds the noise from the training data alone (the printed sd against the true 0.2). MAP's band is
the noise everywhere, so it is as confident in the gap, where it has seen nothing, as on the data; Laplace's band
widens in the gap (the two printed sds), and its test NLL is the lower of the two."""),
    md("""## 2 · Every weight: K-FAC and the diagonal, never a D × D matrix

For every weight, the generalised Gauss–Newton (GGN) in a structure: `hessian="kron"` (K-FAC: per `nn.Linear`, the
weight's block is $B \\otimes A$, the layer's output-gradient and input covariances; the bias blocks are exact) or
`structure="diag"`. Tuning the noise jointly through these approximate evidences is unreliable (the first lines
printed below: each structure's own noise estimate against the true 0.2), so the noise is held at the last layer's
estimate and only the prior precision is tuned. The dense GGN over all 2,701 weights is the reference, taken once at
K-FAC's prior."""),
    code("""everything = list(trained)
for label, method in [("K-FAC", pyebm.Laplace(at=trained, hessian="kron")),
                      ("diagonal GGN", pyebm.Laplace(at=trained, hessian="ggn", structure="diag"))]:
    joint = ttt.adapt(net, (x, y), everything, ttt.supervised("squared", 1.0), method, prior_mean="zero",
                      prior_scale=ttt.Evidence(noise=True, init=1.0), seed=0)
    print(f"{label}: noise sd tuned jointly through its own evidence {joint.diagnostics['noise']:.3f}")

rows, posts = [], {}
for label, method in [("K-FAC", pyebm.Laplace(at=trained, hessian="kron")),
                      ("diagonal GGN", pyebm.Laplace(at=trained, hessian="ggn", structure="diag"))]:
    start = time.perf_counter()
    post = ttt.adapt(net, (x, y), everything, ttt.supervised("squared", noise), method, prior_mean="zero",
                     prior_scale=ttt.Evidence(init=1.0), seed=0)
    seconds = time.perf_counter() - start
    posts[label] = post
    m, v = ttt.predict(net, post, x_test, likelihood="regression", pred_type="glm", noise=noise)
    rows.append({"latents": "every weight", "curvature": label, "prior precision": post.diagnostics["prior_scale"]["0.weight"] ** -2,
                 "log evidence": post.log_evidence, "test NLL": nll(m[:, 0], v[:, 0]),
                 "sd in gap": float(v[in_gap, 0].sqrt().mean()), "sd on data": float(v[~in_gap, 0].sqrt().mean()),
                 "seconds": seconds})
kron_scale = posts["K-FAC"].diagnostics["prior_scale"]["0.weight"]
start = time.perf_counter()
dense = ttt.adapt(net, (x, y), everything, ttt.supervised("squared", noise), pyebm.Laplace(at=trained, hessian="ggn"),
                  prior_mean="zero", prior_scale=kron_scale, seed=0)
seconds = time.perf_counter() - start
m, v = ttt.predict(net, dense, x_test, likelihood="regression", pred_type="glm", noise=noise)
rows.append({"latents": "every weight", "curvature": "dense GGN (K-FAC's prior)", "prior precision": kron_scale**-2,
             "log evidence": dense.log_evidence, "test NLL": nll(m[:, 0], v[:, 0]),
             "sd in gap": float(v[in_gap, 0].sqrt().mean()), "sd on data": float(v[~in_gap, 0].sqrt().mean()),
             "seconds": seconds})
rows.insert(0, {"latents": "last layer", "curvature": "exact", "prior precision": delta, "log evidence":
                post_last.log_evidence, "test NLL": nll(mean_t[:, 0], var_t[:, 0]),
                "sd in gap": float(var_t[in_gap, 0].sqrt().mean()), "sd on data": float(var_t[~in_gap, 0].sqrt().mean()),
                "seconds": seconds_last})
print(pd.DataFrame(rows).set_index(["latents", "curvature"]).round(3).to_string())

fig, ax = plt.subplots(figsize=(8, 3.6))
for label, post, colour in [("K-FAC, every weight", posts["K-FAC"], "C1"), ("last layer", post_last, "C0")]:
    m, v = ttt.predict(net, post, grid, likelihood="regression", pred_type="glm", noise=noise)
    sd = v[:, 0].sqrt()
    ax.fill_between(grid[:, 0], m[:, 0] - 2 * sd, m[:, 0] + 2 * sd, alpha=0.25, color=colour, label=f"{label} ± 2 sd")
ax.plot(grid[:, 0], map_grid, "k", lw=1, label="MAP")
ax.scatter(x[:, 0], y, s=6, c="k")
ax.set(xlabel="x", ylim=(-5, 5), title="GLM predictive bands: every weight (K-FAC) against the last layer")
ax.legend(loc="lower left", fontsize=8)
plt.show()"""),
    md("""Read the table for what each curvature does with the gap: every structure's band is wider there than on the
data (the two sd columns). The diagonal drops every correlation between weights: it overstates the spread on the
data and understates it in the gap against the dense GGN at the same prior, and has the worst test NLL. K-FAC keeps
the correlations within each layer: its sds sit between the diagonal's and the dense GGN's (on the data, close to
the dense GGN's). All
rows share one noise, so their log evidences (the energy's, without the Gaussian's normaliser, a common constant)
compare the models directly: here the last layer alone has the highest evidence, and also the best test NLL. Seconds
are for the whole evidence loop (several Laplace fits each), the dense row's for one fit."""),
    md("""## 3 · The evidence against the test NLL

"Without validation data" is a claim to check: along a grid of prior precisions (last layer, noise held at its
estimate), the evidence computed on the training data and the NLL on the test data. If the evidence is a good
guide, its maximiser sits where the test NLL is low."""),
    code("""deltas = torch.logspace(-3, 3, 9 if SMOKE_TEST else 25)
curve = []
for d in deltas:
    post = ttt.adapt(net, (x, y), last, ttt.supervised("squared", noise), pyebm.Laplace(at={k: trained[k] for k in last}),
                     prior_mean="zero", prior_scale=float(d) ** -0.5, seed=0)
    m, v = ttt.predict(net, post, x_test, likelihood="regression", pred_type="glm", noise=noise)
    curve.append((float(d), post.log_evidence, nll(m[:, 0], v[:, 0])))
curve = pd.DataFrame(curve, columns=["prior precision", "log evidence", "test NLL"])
best_ev, best_nll = curve.loc[curve["log evidence"].idxmax()], curve.loc[curve["test NLL"].idxmin()]
print(f"evidence maximiser on the grid: precision {best_ev['prior precision']:.3g}, test NLL there {best_ev['test NLL']:.4f}")
print(f"test-NLL minimiser on the grid: precision {best_nll['prior precision']:.3g}, test NLL {best_nll['test NLL']:.4f}")
print(f"the evidence loop's own choice (section 1): precision {delta:.3g}")

fig, ax = plt.subplots(figsize=(7, 3.4))
ax.semilogx(curve["prior precision"], curve["log evidence"], "o-", label="log evidence (training data)")
ax.axvline(delta, color="C0", ls=":", label="evidence-tuned")
ax2 = ax.twinx()
ax2.semilogx(curve["prior precision"], curve["test NLL"], "s-", color="C1", label="test NLL")
ax.set(xlabel="prior precision δ", ylabel="log evidence")
ax2.set_ylabel("test NLL")
fig.legend(loc="upper center", fontsize=8, ncol=3)
plt.show()"""),
    md("""The evidence's maximiser on the grid sits within a grid step of the test-NLL minimiser, and the test NLL at the
evidence's choice is within a few hundredths of a nat of the best the grid offers (the printed pair): the prior was
chosen from the training data alone, where picking by test NLL needs held-out labels. Far from it, on either side,
both curves agree that the fit degrades."""),
    md("""## 4 · Test-time training: a subset of the weights as latent variables

At test time the target moves: $y = \\sin x + 0.5$. Eight labelled points from $[2, 6]$ arrive. Test-time training
adapts a small subset of the weights, here the output bias `4.bias`, as a latent variable with a prior centred at its
trained value (`prior_mean="trained"`, scale 1), and the GLM predictive of its Laplace posterior gives bands that
carry the adaptation's own uncertainty (eight points, one number)."""),
    code("""g_shift = torch.Generator().manual_seed(5)
x_new = torch.rand(8, 1, generator=g_shift) * 4 + 2
y_new = torch.sin(x_new[:, 0]) + 0.5 + noise * torch.randn(8, generator=g_shift)
adapted = ttt.adapt(net, (x_new, y_new), "4.bias", ttt.supervised("squared", noise), "laplace", prior_scale=1.0,
                    seed=0)
shift = float(adapted.mean()["4.bias"][0] - trained["4.bias"][0])
print(f"adapted bias moved by {shift:.3f} ± {float(adapted.std()['4.bias'][0]):.3f} (the shift is 0.5)")

x_shift = torch.rand(1000, 1, generator=g_shift) * 4 + 2
y_shift = torch.sin(x_shift[:, 0]) + 0.5 + 0.2 * torch.randn(1000, generator=g_shift)
before = ttt.predict(net, post_last, x_shift, likelihood="regression", pred_type="glm", noise=noise)
after = ttt.predict(net, adapted, x_shift, likelihood="regression", pred_type="glm", noise=noise)
for label, (m, v) in [("before (last-layer posterior)", before), ("after adapting 4.bias", after)]:
    score = float(-torch.distributions.Normal(m[:, 0], v[:, 0].sqrt()).log_prob(y_shift).mean())
    print(f"shifted test NLL on [2, 6], {label}: {score:.4f}")

fig, ax = plt.subplots(figsize=(7, 3.4))
for label, post, colour in [("before", post_last, "C0"), ("after TTT of 4.bias", adapted, "C2")]:
    m, v = ttt.predict(net, post, grid, likelihood="regression", pred_type="glm", noise=noise)
    sd = v[:, 0].sqrt()
    ax.fill_between(grid[:, 0], m[:, 0] - 2 * sd, m[:, 0] + 2 * sd, alpha=0.3, color=colour, label=f"{label} ± 2 sd")
ax.plot(grid[:, 0], torch.sin(grid[:, 0]) + 0.5, "k--", lw=1, label="shifted target")
ax.scatter(x_new[:, 0], y_new, c="C3", zorder=3, label="8 labelled test points")
ax.set(xlim=(-1, 8), ylim=(-3, 3), xlabel="x", title="test-time adaptation of one bias, GLM predictive")
ax.legend(loc="lower left", fontsize=8)
plt.show()"""),
    md("""The adapted bias recovers the shift within about its printed posterior sd, from eight points, and the test NLL
on the shifted target drops from the first printed value to the second. The green band has one width everywhere: the
GLM predictive of one adapted bias is the noise plus that bias's posterior variance (the ± above), so it no longer
carries the last layer's widening in the gap. To keep both, adapt `4.weight` with `4.bias`: the posterior then covers
the whole last layer, fitted to the new points under a prior centred at the trained weights."""),
    md("""## What to try next

- `ttt.marglik_training(net, (x, y), epochs=..., every=...)`: the prior precision and the noise tuned by the K-FAC
  evidence *during* training (Immer et al. 2021), instead of post hoc.
- `hessian="lowrank"` (`rank=`) for every weight: the top eigenpairs of the data's GGN on top of the prior.
- `ttt.Evidence(per_latent=True)`: one prior precision per layer instead of one for all.
- A classifier: `ttt.supervised("cross_entropy")` and `ttt.predict(..., pred_type="glm", link_approx="probit")`
  (`benchmarks/laplace_networks.py` does it on scikit-learn's digits against laplace-torch).
- Sample the last layer with `method="nuts"` in `ttt.adapt` and compare its bands with Laplace's."""),
]

nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                "language": "python"}})
nbf.write(nb, "tutorials/15_laplace_on_a_network.ipynb")
