"""NUTS through raw Pyro, pyebm-Pyro, raw NumPyro and pyebm-NumPyro on the same energies, in one run; then many
chains: pyebm's ChEES against NumPyro's vectorised NUTS at the same number of chains; then posteriordb's
gp_pois_regr, the wall time to 1000 effective draws.

Models: a 100-D anisotropic Gaussian energy (condition number 100), a mild banana, and eight schools
(non-centred). Each runner: `--warmup` + `--draws` steps, medians over `--seeds` seeds, NumPyro's compile time and
all adaptation included. Columns: min bulk-ESS per second and per gradient evaluation, wall time, and the largest
error of the posterior means in posterior sds against the exact answer (eight schools: a long NumPyro reference
run). Ratios are pyebm over raw on the same backend (ChEES: over NumPyro's vectorised NUTS, same chains).

    python benchmarks/nuts_backends.py [--seeds 3] [--quick] [--section single|many|gp] [--models gaussian-100d,...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as dist
import torch
from numpyro.infer import MCMC as NMCMC
from numpyro.infer import NUTS as NNUTS
from pyro.infer import MCMC, NUTS

import pyebm
import pyebm.numpyro as pn
from pyebm.diagnostics import ess_bulk
from pyebm.examples import gp_pois_regr as gp

warnings.filterwarnings("ignore")
Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


class Counter:
    """Counts energy evaluations (one per gradient in Pyro's NUTS)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **k):
        self.calls += 1
        return self.fn(*a, **k)


# --- the energies in both libraries --------------------------------------------------------------------
def gaussian_100(seed=0):
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.normal(size=(100, 100)))
    precision = (q * np.logspace(-1, 1, 100)) @ q.T
    mu = g.normal(size=100)
    te = pyebm.energies.Gaussian(torch.tensor(mu, dtype=torch.float32), torch.tensor(precision, dtype=torch.float32))
    je = pn.energies.Gaussian(jnp.array(mu, dtype=jnp.float32), jnp.array(precision, dtype=jnp.float32))
    return te, je, {"x": 100}, mu, np.sqrt(np.diag(np.linalg.inv(precision)))


def banana():
    te, je = pyebm.energies.Banana(1.0, 0.5), pn.energies.Banana(1.0, 0.5)
    return te, je, {"x": 2}, te.mean().numpy(), np.sqrt(np.diag(te.covariance().numpy()))


def schools_energy_torch(mu, tau, theta):
    return -dist.Normal(mu + tau * theta, torch.tensor(SIGMA, dtype=torch.float32)).log_prob(
        torch.tensor(Y, dtype=torch.float32)).sum()


def schools_energy_jax(mu, tau, theta):
    return -ndist.Normal(mu + tau * theta, jnp.array(SIGMA)).log_prob(jnp.array(Y)).sum()


SCHOOL_SITES = {"mu": (), "tau": (), "theta": 8}


def schools_priors(lib):
    d = dist if lib == "pyro" else ndist
    return {"mu": d.Normal(0.0, 5.0), "tau": d.HalfCauchy(5.0), "theta": d.Normal(0.0, 1.0).expand([8])}


# --- raw models, written as each library's docs teach ---------------------------------------------------
def raw_pyro_model(energy, sites):
    def model():
        if sites is SCHOOL_SITES:
            p = schools_priors("pyro")
            mu, tau = pyro.sample("mu", p["mu"]), pyro.sample("tau", p["tau"])
            theta = pyro.sample("theta", p["theta"].to_event(1))
            pyro.sample("y", dist.Normal(mu + tau * theta, torch.tensor(SIGMA, dtype=torch.float32)).to_event(1),
                        obs=torch.tensor(Y, dtype=torch.float32))
            energy(mu, tau, theta)  # counted for gradient evaluations, not part of the density
        else:
            x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([sites["x"]]).to_event(1).mask(False))
            pyro.factor("energy", -energy(x))
    return model


def raw_numpyro_model(energy, sites):
    def model():
        if sites is SCHOOL_SITES:
            p = schools_priors("numpyro")
            mu, tau = numpyro.sample("mu", p["mu"]), numpyro.sample("tau", p["tau"])
            theta = numpyro.sample("theta", p["theta"].to_event(1))
            numpyro.sample("y", ndist.Normal(mu + tau * theta, jnp.array(SIGMA)).to_event(1), obs=jnp.array(Y))
        else:
            x = numpyro.sample("x", ndist.Normal(0.0, 1.0).expand([sites["x"]]).to_event(1).mask(False))
            numpyro.factor("energy", -energy(x))
    return model


def stats(draws: dict, mean, sd, seconds, grads):
    cols = np.concatenate([np.asarray(v).reshape(np.asarray(v).shape[0], -1) for v in draws.values()], 1)
    ess = min(ess_bulk(cols[None, :, j]) for j in range(cols.shape[1]))
    err = float(np.max(np.abs(cols.mean(0) - mean) / sd))
    return {"ess/s": ess / seconds, "ess/grad": ess / grads if grads else float("nan"), "s": seconds, "err": err}


def run_all(name, te, je, sites, mean, sd, seed, warmup, draws):
    out = {}
    schools = sites is SCHOOL_SITES
    # raw Pyro
    counter = Counter(schools_energy_torch if schools else te)
    pyro.set_rng_seed(seed)
    mcmc = MCMC(NUTS(raw_pyro_model(counter, sites)), num_samples=draws, warmup_steps=warmup, disable_progbar=True)
    t = time.perf_counter()
    mcmc.run()
    s = time.perf_counter() - t
    out["raw Pyro"] = stats(_order(mcmc.get_samples(), sites), mean, sd, s, counter.calls)
    # pyebm on Pyro
    counter = Counter(schools_energy_torch if schools else te)
    model = pyebm.model_from_energy(counter, sites, prior=schools_priors("pyro") if schools else None)
    post = pyebm.infer(model, method=pyebm.NUTS(num_samples=draws, warmup_steps=warmup, num_chains=1), seed=seed,
                       progress=False)
    out["pyebm-Pyro"] = stats(_order({k: v[0] for k, v in post.approximation.draws.items()}, sites), mean, sd,
                              post.wall_time, counter.calls)
    # raw NumPyro (compile included)
    mcmc = NMCMC(NNUTS(raw_numpyro_model(je if not schools else None, sites)), num_warmup=warmup,
                 num_samples=draws, progress_bar=False)
    t = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("num_steps",))
    samples = jax.block_until_ready(mcmc.get_samples())
    s = time.perf_counter() - t
    grads = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    out["raw NumPyro"] = stats(_order(samples, sites), mean, sd, s, grads)
    # pyebm on NumPyro
    model = pn.model_from_energy(schools_energy_jax if schools else je, sites,
                                 prior=schools_priors("numpyro") if schools else None)
    post = pn.infer(model, method=pn.NUTS(num_samples=draws, warmup_steps=warmup, num_chains=1), seed=seed,
                    progress=False)
    out["pyebm-NumPyro"] = stats(_order({k: v[0] for k, v in post.approximation.draws.items()}, sites), mean, sd,
                                 post.wall_time, post.diagnostics["num_gradient_evaluations"])
    return out


def _order(draws, sites):
    return {k: draws[k] for k in sites}


def schools_reference(quick):
    model = raw_numpyro_model(None, SCHOOL_SITES)
    mcmc = NMCMC(NNUTS(model), num_warmup=1000, num_samples=5000 if not quick else 1000, num_chains=4,
                 chain_method="sequential", progress_bar=False)
    mcmc.run(jax.random.PRNGKey(123))
    s = mcmc.get_samples()
    cols = np.concatenate([np.asarray(s[k]).reshape(np.asarray(s[k]).shape[0], -1) for k in SCHOOL_SITES], 1)
    return cols.mean(0), cols.std(0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="one seed, 100+100 steps: a smoke test")
    parser.add_argument("--section", choices=["all", "single", "many", "gp"], default="all")
    parser.add_argument("--models", default="gaussian-100d,banana,eight-schools",
                        help="many chains: comma-separated models to run")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.warmup, args.draws = 1, 100, 100
    print(f"# {platform.platform()}, {os.cpu_count()} cpus, python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"pyro {pyro.__version__}, jax {jax.__version__}, numpyro {numpyro.__version__}, pyebm {pyebm.__version__}")
    if args.section in ("all", "single"):
        single_chain(args)
    if args.section in ("all", "many"):
        many_chains(args)
    if args.section in ("all", "gp"):
        gp_pois_regr(args)


def single_chain(args):
    print(f"# NUTS backends: 1 chain, {args.warmup}+{args.draws} steps, medians over {args.seeds} seeds")
    te, je, sites, mean, sd = banana()
    run_all("warm-up", te, je, sites, mean, sd, 0, 20, 20)  # one-off start-up costs (JAX backend, imports)
    models = {"gaussian-100d": gaussian_100(), "banana": banana()}
    ref_mean, ref_sd = schools_reference(args.quick)
    models["eight-schools"] = (None, None, SCHOOL_SITES, ref_mean, ref_sd)
    header = f"{'model':14s} {'runner':14s} {'ESS/s':>9s} {'ESS/grad':>9s} {'wall s':>8s} {'max err/sd':>11s} {'ratio ESS/s':>12s}"
    print(header)
    print("-" * len(header))
    for name, (te, je, sites, mean, sd) in models.items():
        runs = [run_all(name, te, je, sites, mean, sd, seed, args.warmup, args.draws) for seed in range(args.seeds)]
        med = {r: {k: statistics.median(run[r][k] for run in runs) for k in runs[0][r]} for r in runs[0]}
        for r, m in med.items():
            raw = med["raw Pyro" if "Pyro" in r and "NumPyro" not in r else "raw NumPyro"]["ess/s"]
            ratio = f"{m['ess/s'] / raw:12.2f}" if r.startswith("pyebm") else ""
            print(f"{name:14s} {r:14s} {m['ess/s']:9.1f} {m['ess/grad']:9.3f} {m['s']:8.2f} {m['err']:11.3f} {ratio}")


# --- many chains: ChEES against NumPyro's vectorised NUTS ----------------------------------------------------------
def chain_stats(draws: dict, mean, sd, seconds, grads):
    """Like :func:`stats`, over draws shaped ``(chain, draw, ...)``: the multi-chain bulk-ESS."""
    cols = np.concatenate([np.asarray(v).reshape(np.asarray(v).shape[:2] + (-1,)) for v in draws.values()], 2)
    ess = min(ess_bulk(cols[:, :, j]) for j in range(cols.shape[2]))
    err = float(np.max(np.abs(cols.reshape(-1, cols.shape[2]).mean(0) - mean) / sd))
    return {"ess/s": ess / seconds, "ess/grad": ess / grads if grads else float("nan"), "s": seconds, "err": err}


def run_many(te, je, sites, mean, sd, seed, warmup, draws, chains):
    schools = sites is SCHOOL_SITES
    out = {}
    model = pyebm.model_from_energy(schools_energy_torch if schools else te, sites,
                                    prior=schools_priors("pyro") if schools else None)
    post = pyebm.infer(model, method=pyebm.ChEES(num_samples=draws, warmup_steps=warmup, num_chains=chains),
                       seed=seed, progress=False)
    out["pyebm ChEES"] = chain_stats(_order(post.approximation.draws, sites), mean, sd, post.wall_time,
                                     post.diagnostics["num_gradient_evaluations"])
    if schools:  # many small operations: eager torch's per-operation overhead dominates, compilation removes it
        post = pyebm.infer(model, method=pyebm.ChEES(num_samples=draws, warmup_steps=warmup, num_chains=chains,
                                                     jit_compile=True), seed=seed, progress=False)
        out["ChEES jit"] = chain_stats(_order(post.approximation.draws, sites), mean, sd, post.wall_time,
                                       post.diagnostics["num_gradient_evaluations"])
    mcmc = NMCMC(NNUTS(raw_numpyro_model(je if not schools else None, sites)), num_warmup=warmup, num_samples=draws,
                 num_chains=chains, chain_method="vectorized", progress_bar=False)
    t = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("num_steps",))
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    s = time.perf_counter() - t
    grads = int(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    out["NumPyro vect."] = chain_stats(_order(samples, sites), mean, sd, s, grads)
    return out


def many_chains(args):
    print(f"\n# many chains: pyebm ChEES vs NumPyro NUTS chain_method='vectorized', {args.warmup}+{args.draws} steps "
          f"per chain, medians over {args.seeds} seeds; float32; ratio = ChEES ESS/s over NumPyro's; 'ChEES jit': "
          f"jit_compile=True, compilation included")
    with torch.no_grad():
        models = {"gaussian-100d": gaussian_100(), "banana": banana()}
    if "eight-schools" in args.models:
        ref_mean, ref_sd = schools_reference(args.quick)
        models["eight-schools"] = (None, None, SCHOOL_SITES, ref_mean, ref_sd)
    models = {k: v for k, v in models.items() if k in args.models}
    header = (f"{'model':14s} {'chains':>6s} {'runner':14s} {'ESS/s':>9s} {'ESS/grad':>9s} {'wall s':>8s} "
              f"{'max err/sd':>11s} {'ratio ESS/s':>12s}")
    print(header)
    print("-" * len(header))
    for name, (te, je, sites, mean, sd) in models.items():
        for chains in (1, 64):
            runs = [run_many(te, je, sites, mean, sd, seed, args.warmup, args.draws, chains)
                    for seed in range(args.seeds)]
            med = {r: {k: statistics.median(run[r][k] for run in runs) for k in runs[0][r]} for r in runs[0]}
            for r, m in med.items():
                ratio = f"{m['ess/s'] / med['NumPyro vect.']['ess/s']:12.2f}" if "ChEES" in r else ""
                print(f"{name:14s} {chains:6d} {r:14s} {m['ess/s']:9.1f} {m['ess/grad']:9.3f} {m['s']:8.2f} "
                      f"{m['err']:11.3f} {ratio}", flush=True)


# --- posteriordb's gp_pois_regr ---------------------------------------------------------------------------------
GP_X, GP_K = np.array(gp.X), np.array(gp.K)


def gp_numpyro(x, k):
    rho = numpyro.sample("rho", ndist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", ndist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", ndist.Normal(0.0, 1.0).expand([x.shape[0]]).to_event(1))
    d = x[:, None] - x[None, :]
    cov = alpha**2 * jnp.exp(-0.5 * d**2 / rho**2) + 1e-10 * jnp.eye(x.shape[0])
    numpyro.sample("k", ndist.Poisson(jnp.exp(jnp.linalg.cholesky(cov) @ f_tilde)).to_event(1), obs=k)


GP_SITES = ("rho", "alpha", "f_tilde")


def _gp_min_ess(draws: dict) -> float:
    cols = np.concatenate([np.asarray(draws[k]).reshape(np.asarray(draws[k]).shape[:2] + (-1,)) for k in GP_SITES], 2)
    return min(ess_bulk(cols[:, :, j]) for j in range(cols.shape[2]))


def gp_pois_regr(args):
    """Wall time to 1000 effective draws (min bulk-ESS over the 13 parameters), float64. Raw Pyro NUTS is run short
    (1 chain, 100+100 by default: its full run takes many minutes) and extrapolated linearly from its ESS rate."""
    jax.config.update("jax_enable_x64", True)
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    x, k = torch.tensor(GP_X), torch.tensor(GP_K)
    xj, kj = jnp.array(GP_X), jnp.array(GP_K)
    short = 50 if args.quick else 200
    print(f"\n# gp_pois_regr (posteriordb), float64: seconds to 1000 effective draws (min bulk-ESS, 13 parameters); "
          f"raw Pyro NUTS extrapolated from 1 chain of {short}+{short}")
    header = f"{'runner':34s} {'wall s':>8s} {'min ESS':>8s} {'s / 1000 ESS':>13s} {'vs NumPyro':>11s}"
    print(header)
    print("-" * len(header))
    rows = {}
    with torch.random.fork_rng():
        pyro.set_rng_seed(0)
        mcmc = MCMC(NUTS(gp.model), num_samples=short, warmup_steps=short, disable_progbar=True)
        t = time.perf_counter()
        mcmc.run(x, k)
        s = time.perf_counter() - t
    rows["raw Pyro NUTS, 1 chain (short)"] = (s, _gp_min_ess({n: v[None] for n, v in mcmc.get_samples().items()}))
    mcmc = NMCMC(NNUTS(gp_numpyro), num_warmup=500, num_samples=1000, num_chains=4, chain_method="sequential",
                 progress_bar=False)
    t = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0), xj, kj)
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    rows["NumPyro NUTS, 4 chains"] = (time.perf_counter() - t, _gp_min_ess(samples))
    post = pyebm.infer(gp.model, x, k, method=pyebm.NUTS(num_samples=short, warmup_steps=short, num_chains=1),
                       seed=0, progress=False)
    rows["pyebm NUTS, 1 chain (short)"] = (post.wall_time, _gp_min_ess(post.approximation.draws))
    for chains in (16, 64):
        post = pyebm.infer(gp.model, x, k, method=pyebm.ChEES(num_samples=args.draws, warmup_steps=args.warmup,
                                                             num_chains=chains), seed=0, progress=False)
        rows[f"pyebm ChEES, {chains} chains"] = (post.wall_time, _gp_min_ess(post.approximation.draws))
    anchor = rows["NumPyro NUTS, 4 chains"]
    anchor = anchor[0] * 1000 / anchor[1]
    for r, (s, ess) in rows.items():
        per = s * 1000 / ess
        print(f"{r:34s} {s:8.1f} {ess:8.0f} {per:13.1f} {per / anchor:11.2f}", flush=True)
    jax.config.update("jax_enable_x64", False)
    torch.set_default_dtype(dtype)


if __name__ == "__main__":
    main()
