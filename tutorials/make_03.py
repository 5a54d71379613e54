"""Writes tutorials/03_contrastive_vs_regularized.ipynb (source of truth for the notebook's cells)."""

import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("""# 03 · Training energies: contrastive, score matching, regularized latents

An energy $E_\\theta(x)$ with learnable $\\theta$ is a density only up to its normaliser,
$p_\\theta(x) = e^{-E_\\theta(x)}/Z(\\theta)$. Maximum likelihood needs $\\nabla_\\theta \\log Z(\\theta)$, which is
an expectation under the model itself:

$$\\nabla_\\theta\\bigl[-\\log p_\\theta(x)\\bigr] = \\nabla_\\theta E_\\theta(x) - \\mathbb E_{p_\\theta}\\bigl[\\nabla_\\theta E_\\theta(x^-)\\bigr].$$

Drop the second term, as a `pyro.factor` does, and nothing stops the energy from falling everywhere. This notebook
shows that collapse, then three honest ways out, on 2-D targets whose density is known exactly, so every learned
energy can be normalised on a grid and scored in nats:

* **contrastive**: push data down and *negatives* up: CD and persistent CD (negatives by Langevin), NCE
  (negatives from a known noise density);
* **score matching**: fit $-\\nabla_x E$ to the data's score, which has no $Z$ in it (denoising, sliced);
* **regularized latent variables**: no negatives; a latent of limited capacity (here $K$ centres) limits the
  volume of low energy.

**Goal.** Show the collapse of naive likelihood training of an energy, then train the same energies honestly
(contrastive divergence, persistent CD, NCE, denoising score matching, a regularized latent model) on 2-D targets,
scoring each by its exactly normalised density on a grid.

**References.** Hinton, *Training products of experts by minimizing contrastive divergence* (2002); Tieleman,
*Training restricted Boltzmann machines using approximations to the likelihood gradient* (2008, PCD); Gutmann &
Hyvärinen, *Noise-contrastive estimation* (2010); Hyvärinen, *Estimation of non-normalized statistical models by
score matching* (2005); Vincent, *A connection between score matching and denoising autoencoders* (2011); Song &
Kingma, *How to train your energy-based models* (2021). The claim tested, from the seed talks: an energy must be
pushed up somewhere (negatives) or have its low-energy volume limited (regularization), or it collapses.

**Run time:** about 6 minutes on 2 CPU cores (about a minute with `CI=1`, the test suite's small settings)."""),
    code("""import copy
import os
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
%matplotlib inline

import matplotlib.pyplot as plt
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from tqdm.auto import tqdm

import pyebm
from pyebm.energies import EightGaussians, KMeans, MLPEnergy, TwoMoons
from pyebm.energies.reference import grid_density
from pyebm.train import evaluate_2d, fit

SMOKE_TEST = "CI" in os.environ
STEPS = 60 if SMOKE_TEST else 3000
_ = torch.manual_seed(0)"""),
    md("""## The collapse of naive likelihood training

Put a learnable MLP energy into a Pyro model as a factor over the data and let SVI maximise the "ELBO" (there are
no latents, so it is just $-\\sum_i E_\\theta(x_i)$). We watch two numbers: the objective, and the test
negative log-likelihood of the *normalised* density $e^{-E_\\theta}/Z(\\theta)$, computed exactly on a grid."""),
    code("""target = EightGaussians()
data = target.sample(5000, seed=0, dtype=torch.float32)
test = target.sample(5000, seed=1, dtype=torch.float64)
net = MLPEnergy(hidden=(64, 64))

def naive_model(x):
    pyro.module("energy", net)
    with pyro.plate("data", len(x)):
        pyro.factor("e", -net(x))

pyro.clear_param_store()
svi = pyro.infer.SVI(naive_model, lambda x: None, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
history = []
for step in range(0, 301 if not SMOKE_TEST else 31):
    loss = svi.step(data[:256])
    if step % (30 if not SMOKE_TEST else 10) == 0:
        r = evaluate_2d(net, target, test, num=101, samples=200)
        history.append({"step": step, "mean energy of data": loss / 256, "test NLL - entropy (nats)": r["excess_nll"]})
pd.DataFrame(history).set_index("step").round(2)"""),
    md("""The objective improves without bound (the mean energy of the data keeps falling) while the actual model,
normalised, gets steadily *worse*: its test NLL rises by hundreds of nats. Lowering the energy is cheapest where
nothing holds it up, and the network's energy falls fastest away from the data, so the normalised density moves its
mass there. That is the collapse: $\\log Z(\\theta)$ rises faster than the data's energy falls, and the factor
cannot see it.

`pyebm.infer` refuses to run SVI on such a model and says why:"""),
    code("""def model(x):
    pyro.module("energy", net)
    shift = pyro.sample("shift", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyebm.energy_factor("e", net(x - shift))

try:
    pyebm.infer(model, data[:256], method="svi", progress=False)
except pyebm.InferenceError as err:
    print(err)"""),
    md("""## The honest ways: one network, five objectives, two targets

Every method below trains the same MLP (2-128-128-1, SiLU, a tiny confining term $10^{-3}|x|^2$) from the same
initial weights with the same optimiser budget, through one call, `pyebm.train.fit(energy, data, method=...)`.
The regularized latent-variable row is k-means ($K = 16$, $\\beta=\\infty$) turned into the mixture it implies
(variance from the k-means cost, the identity of notebook 02)."""),
    code("""METHODS = {
    "cd": dict(k=20, step_size=0.005),
    "pcd": dict(k=20, step_size=0.005, buffer_size=10_000),
    "nce": dict(ratio=4),
    "dsm": dict(sigma=0.05),
}

def kmeans_mixture(x, steps):
    km = KMeans(x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:16]], learnable=True)
    fit(km, x, "kmeans", steps=steps, lr=0.02, lr_decay=0.01, seed=0, progress=False)
    with torch.no_grad():
        beta = 1 / (2 * float(km(x).min(0).values.mean()) / x.shape[1])
    return lambda z: -km.mixture_log_density(z, beta)

learned, rows = {}, []
for target in [EightGaussians(), TwoMoons()]:
    name = type(target).__name__
    train_x = target.sample(20_000, seed=0, dtype=torch.float32)
    test_x = target.sample(10_000, seed=1, dtype=torch.float64)
    init = MLPEnergy(confine=1e-3)
    for method, options in tqdm(METHODS.items(), desc=f"{name}: training"):  # about 3 minutes per target
        energy = copy.deepcopy(init)
        res = fit(energy, train_x, method, steps=STEPS, lr=1e-3, lr_decay=0.1, seed=0, progress=False, **options)
        learned[name, method] = energy
        rows.append({"target": name, "method": method, **evaluate_2d(energy, target, test_x, num=201),
                     "wall s": res.wall_time})
    learned[name, "k-means→mixture"] = kmeans_mixture(train_x.double(), STEPS)
    rows.append({"target": name, "method": "k-means→mixture",
                 **evaluate_2d(learned[name, "k-means→mixture"], target, test_x, num=201)})
table = pd.DataFrame(rows).set_index(["target", "method"])
table[["excess_nll", "nll_se", "kl", "mmd", "wall s"]].round(3)"""),
    md("""`excess_nll` is the test negative log-likelihood minus the target's entropy: the KL divergence from the truth
in nats, estimated on test points (`nll_se` is its standard error); `kl` is the same divergence computed on the grid
without sampling error. Zero is perfect. Now the pictures: each learned density, normalised on the grid."""),
    code("""names = ["truth", *METHODS, "k-means→mixture"]
fig, axes = plt.subplots(2, len(names), figsize=(2.4 * len(names), 5))
for row, target in enumerate([EightGaussians(), TwoMoons()]):
    tname = type(target).__name__
    for col, method in enumerate(names):
        energy = target if method == "truth" else learned[tname, method]
        g = grid_density(energy, target.bounds, 121)
        ax = axes[row, col]
        ax.imshow(g.density.T, origin="lower", extent=[*target.bounds[0], *target.bounds[1]], cmap="magma")
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(method)
    axes[row, 0].set_ylabel(tname)
fig.tight_layout()"""),
    md("""## What the table and the pictures say

* **Score matching** (DSM) is the most accurate MLP objective here and the cheapest per step: one gradient per
  example (two with its control variate), no sampler. Its price is a bias of order $\\sigma^2$: it fits the data
  blurred by $\\mathcal N(0, \\sigma^2 I)$. On 8 Gaussians it comes within a few hundredths of a nat of the truth.
* **NCE** is as good as its noise: with a Gaussian fitted to the data, the classifier learns little about regions the
  noise rarely visits, such as the gaps between modes. It is the one method that also learns $\\log Z$
  (`result.state.log_z`).
* **CD** with short Langevin runs from the data learns each mode's shape but not the space between modes: its
  negatives never leave the data's neighbourhood, so low energy elsewhere is never pushed up. **PCD**'s persistent
  chains travel further but, at this budget, do not do better; both depend on the sampler's step size.
* The **regularized latent model** needs no negatives: 16 round bumps from k-means. They cannot represent a moon
  exactly, yet tile it better than the MLPs managed with this many steps.

`benchmarks/train_2d.py` prints the same comparison at full length, with wall time and energy evaluations; the
benchmark page (`docs/benchmarks.md`) records the numbers."""),
    md("""## What to try next

* Run `benchmarks/train_2d.py` for the full-length comparison with wall times and energy evaluations.
* Give `pyebm.train.NCE` a noise closer to the data (a mixture fitted by k-means) and watch the gaps between modes
  improve.
* Lower the DSM noise scale and watch the bias of order $\\sigma^2$ shrink while the variance of its gradient grows."""),
]
nb = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
nbf.write(nb, "tutorials/03_contrastive_vs_regularized.ipynb")
