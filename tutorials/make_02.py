"""Writes tutorials/02_min_versus_marginalise.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 02 · Minimise or marginalise: the free energy

A latent-variable energy $E(x, z)$ scores an observation $x$ through a hidden $z$. There are two ways to get rid of $z$:

$$F_\\infty(x) = \\min_z E(x, z) \\qquad\\text{or}\\qquad F_\\beta(x) = -\\frac1\\beta \\log \\int e^{-\\beta E(x,z)}\\,dz .$$

The first is the EBM habit (k-means: the distance to the *nearest* centre), the second the Bayesian one
(a Gaussian mixture: a log-sum over *all* centres). The inverse temperature $\\beta$ slides between them:
$F_\\beta \\to F_\\infty$ as $\\beta\\to\\infty$. `pyebm.free_energy` computes both, exactly for discrete $z$
and by Laplace (optionally checked by importance sampling) for continuous $z$.

**Goal.** Compute both ways of eliminating a latent, the minimum and the free energy, with `pyebm.free_energy`; see
k-means and the Gaussian mixture as the two ends of one temperature; and read what averaging (marginalising) and
minimising (an adversary, or a decision) each price in.

**References.** LeCun et al., *A tutorial on energy-based learning* (2006), §§ 2 and 6 (free energy, latent
variables); Bishop, *Pattern Recognition and Machine Learning* (2006), ch. 9 (k-means and EM for mixtures); Kulis &
Jordan, *Revisiting k-means: new algorithms via Bayesian nonparametrics* (2012, small-variance asymptotics). The claim
tested: F_β → min_z E as β → ∞, and β sets how much a model trusts its latent to be random.

**Run time:** about a minute on 2 CPU cores (less with `CI=1`, the test suite's small settings)."""),
    code("""import math
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import pandas as pd
import pyro
import pyro.distributions as dist
import torch

import pyebm
from pyebm.energies import Ellipse, KMeans

torch.set_default_dtype(torch.float64)
SMOKE_TEST = "CI" in os.environ
GRID = 60 if SMOKE_TEST else 160"""),
    md("""## k-means versus the Gaussian mixture

With $E(x, k) = \\|x - \\mu_k\\|^2$ and the centres as the (discrete) latent, $F_\\infty$ is the k-means cost and
$F_\\beta$ is, up to constants, the log-density of the equal-weight mixture with $\\sigma^2 = 1/(2\\beta)$:

$$-\\beta F_\\beta(x) - \\log K - \\tfrac D2 \\log 2\\pi\\sigma^2 = \\log p_{\\rm GMM}(x).$$

At small $\\beta$ the landscape is one broad bowl (every centre counts); as $\\beta$ grows, basins appear around
each centre, and at $\\beta = \\infty$ the surface has the creases of the Voronoi cells."""),
    code("""g = torch.Generator().manual_seed(0)
km = KMeans(torch.tensor([[-2.0, -1.0], [2.0, -1.5], [0.0, 2.0], [2.5, 2.5]]))
axis = torch.linspace(-5, 5, GRID)
X, Y = torch.meshgrid(axis, axis, indexing="ij")
points = torch.stack([X, Y], -1).reshape(-1, 2)
betas = [0.1, 0.5, 2.0, float("inf")]
fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
for ax, beta in zip(axes, betas):
    F = km.free_energy(points, beta).reshape(GRID, GRID)
    levels = torch.linspace(float(F.min()), float(F.quantile(0.6)), 25)  # the basins, not the far corners
    cs = ax.contourf(X, Y, F, levels=levels, cmap="viridis", extend="max")
    ax.plot(*km.centres.T, "r*", ms=12)
    ax.set_title(f"F_β(x), β = {beta:g}")
    fig.colorbar(cs, ax=ax)
fig.tight_layout()"""),
    md("""The identity, numerically, against `torch.distributions.MixtureSameFamily`, and the bounds
$F_\\infty - \\log K/\\beta \\le F_\\beta \\le F_\\infty$:"""),
    code("""x = 3 * torch.randn(1000, 2, generator=g)
rows = []
for beta in [0.1, 0.5, 2.0, 10.0]:
    sigma = math.sqrt(1 / (2 * beta))
    gmm = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(4)),
                                                torch.distributions.Independent(torch.distributions.Normal(km.centres, sigma), 1))
    F, F_inf = km.free_energy(x, beta), km.free_energy(x, float("inf"))
    rows.append({"beta": beta, "max |identity error|": float((km.mixture_log_density(x, beta) - gmm.log_prob(x)).abs().max()),
                 "min (F_inf - F)": float((F_inf - F).min()), "max (F_inf - F)": float((F_inf - F).max()),
                 "log K / beta": math.log(4) / beta})
pd.DataFrame(rows)"""),
    md("""## A continuous latent: the ellipse

Points on an ellipse are $(a\\cos\\theta, b\\sin\\theta)$; with the angle as the latent,
$E(x,\\theta) = \\|x - (a\\cos\\theta, b\\sin\\theta)\\|^2$. Minimising the angle out gives the squared distance to the
manifold; marginalising it at finite $\\beta$ smooths the valley, and the hole in the middle fills in (every angle
contributes)."""),
    code("""el = Ellipse(2.0, 1.0)
axis = torch.linspace(-3.5, 3.5, GRID)
X, Y = torch.meshgrid(axis, axis, indexing="ij")
pts = torch.stack([X, Y], -1).reshape(-1, 2)
fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
for ax, beta in zip(axes, [float("inf"), 8.0, 2.0, 0.5]):
    if math.isinf(beta):
        F = el.distance_squared(pts, num=2000)  # reference: dense search over the angle
    else:
        F = el.free_energy_exact(pts, beta, num=2000)
    F = F.reshape(GRID, GRID)
    cs = ax.contourf(X, Y, F, levels=torch.linspace(float(F.min()), float(F.min()) + 2.5, 25), cmap="viridis",
                     extend="max")
    t = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(2 * torch.cos(t), torch.sin(t), "w--", lw=1)
    ax.set_title("F_∞ = squared distance" if math.isinf(beta) else f"F_β, β = {beta:g}")
    fig.colorbar(cs, ax=ax)
fig.tight_layout()"""),
    md("""`free_energy` with a continuous latent minimises all points' angles in one batched L-BFGS run, then puts a
Gaussian on each angle (Laplace). Against exact 1-D integration over the circle: Laplace is accurate when
$\\beta$ is large (the integrand is one sharp peak) and degrades as $\\beta$ falls (the peak widens and the
circle's periodicity matters); importance sampling from the Laplace Gaussian repairs most of the gap and reports
its effective sample size."""),
    code("""x = torch.tensor([[3.0, 0.5], [-1.0, 2.0], [0.5, -1.8], [2.2, 0.1]])
energy = lambda theta: el(x, theta)
init = {"theta": el.angle_guess(x)}
rows = []
f_min = pyebm.free_energy(energy, {"theta": ()}, float("inf"), init=init)
torch.testing.assert_close(f_min, el.distance_squared(x))
for beta in [0.5, 2.0, 8.0, 32.0]:
    exact = el.free_energy_exact(x, beta)
    with torch.no_grad():  # evaluation only: no graph for gradients
        lap = pyebm.free_energy(energy, {"theta": ()}, beta, init=init)
        imp, info = pyebm.free_energy(energy, {"theta": ()}, beta, init=init, method="importance",
                                      num_samples=2000, seed=0, return_details=True)
    rows.append({"beta": beta, "max |Laplace - exact|": float((lap - exact).abs().max()),
                 "max |IS - exact|": float((imp - exact).abs().max()), "min ESS / 2000": float(info["ess"].min()) / 2000})
pd.DataFrame(rows)"""),
    md("""## Inside a model: `pyebm.profile`

`profile(model, sites, beta)` removes latent sites from a Pyro model: the new model's density over the remaining
latents $\\theta$ is $e^{-F_\\beta(\\theta)}$ with $F_\\beta$ the free energy of the removed ones. $\\beta = 1$
marginalises (the marginal likelihood), $\\beta = \\infty$ minimises (the profile likelihood); sites not named
stay sampled. On a hierarchical Gaussian, where the answer is known, all three agree on $\\theta$ (NUTS within
its Monte Carlo error, printed):"""),
    code("""def hierarchical():
    theta = pyro.sample("theta", dist.Normal(torch.tensor(0.0), 1.5))
    z = pyro.sample("z", dist.Normal(theta, 0.7))
    pyro.sample("y", dist.Normal(z, 0.4), obs=torch.tensor(1.1))

prec = 1 / 1.5**2 + 1 / (0.7**2 + 0.4**2)
marg = pyebm.infer(pyebm.profile(hierarchical, "z", beta=1.0), method="laplace", seed=0, progress=False)
prof = pyebm.infer(pyebm.profile(hierarchical, "z", beta=float("inf")), method="laplace", seed=0, progress=False)
full = pyebm.infer(hierarchical, method=pyebm.NUTS(num_samples=300 if SMOKE_TEST else 2000), seed=0, progress=False)
table = pyebm.compare(marg, prof, full, labels=["marginalise z (β=1)", "minimise z (β=∞)", "sample z (NUTS)"])
table["exact"] = pd.Series({("theta", "mean"): 1.1 / (0.7**2 + 0.4**2) / prec, ("theta", "sd"): prec**-0.5,
                            ("log_evidence", ""): float(dist.Normal(0.0, math.sqrt(1.5**2 + 0.7**2 + 0.4**2)).log_prob(torch.tensor(1.1)))})
ess = full.diagnostics["ess_bulk"]["theta"]
print(f"NUTS: theta's mean is {float(full.mean()['theta']) - table.loc[('theta', 'mean'), 'exact']:+.4f} from the exact one, "
      f"Monte Carlo se {prec**-0.5 / ess**0.5:.4f} (bulk ESS {ess:.0f})")
table.loc[["theta", "log_evidence"]].round(4)"""),
    md("""For jointly Gaussian $(\\theta, z)$ minimising and marginalising give the same $\\theta$-density (the Laplace
correction is a constant); only marginalising gets the evidence right: $\\log p(y)$ exactly.

## Poker versus chess

The two operations are two kinds of uncertainty. In **poker** the next card is chance: your value is an average
over cards, a log-sum at finite $\\beta$ (marginalise). In **chess** the opponent's reply is chosen against you:
your value is the worst case, a minimum (or maximum) over replies, the $\\beta\\to\\infty$ limit. The same
`free_energy` call covers both, with $\\beta$ saying how much the latent is on your side:"""),
    code("""actions = ["safe", "risky", "steady"]
# cost of each action (columns) under each of 5 equally likely outcomes (rows): next card, or opponent's reply
cost = torch.tensor([[1.0, 0.0, 0.6],
                     [1.0, 0.0, 0.9],
                     [1.0, 0.2, 0.6],
                     [1.0, 0.3, 0.9],
                     [1.0, 3.0, 0.6]])
outcomes = torch.arange(5.0)  # the support of the latent; the energy returns (outcomes, actions)

def chance(beta):  # F_β with a uniform prior on the outcomes: -1/β log mean_o exp(-β cost)
    return pyebm.free_energy(lambda o: cost, outcomes, beta) + math.log(5) / beta

pd.DataFrame({
    "poker, β→0: the average": chance(1e-4),
    "poker, β=1": chance(1.0),
    "latent on your side, β=∞: min": pyebm.free_energy(lambda o: cost, outcomes, float("inf")),
    "chess, opponent picks: max": -pyebm.free_energy(lambda o: -cost, outcomes, float("inf")),
}, index=actions).round(3)"""),
    md("""Averaged over chance, *risky* is cheapest (0.70); against an opponent who picks the outcome, *steady* is
(0.90 against risky's 3.0). Marginalising prices in every outcome by its probability; minimising over an
adversary's choice prices in only the worst. The temperature between them is how much you trust the latent to be
random rather than chosen."""),
    md("""## What to try next

* Replace the discrete assignment by a continuous latent (`pyebm.free_energy(energy, {"z": (2,)}, beta)`, by
  Laplace) and check it against importance sampling (`method="importance"`).
* Use `pyebm.profile` to minimise a latent inside a larger model (the β → ∞ end as a Pyro site).
* Notebook 03 trains energies with latents (k-means as a regularized latent-variable model) against contrastive
  ones."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "tutorials/02_min_versus_marginalise.ipynb")
