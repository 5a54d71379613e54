"""Models written the way Pyro's and NumPyro's documentation writes them, each with its exact answer.

Every ``Case`` holds a model, its arguments, and what is known exactly about its posterior: site means and sds
(closed forms, or quadrature over at most two dimensions), the MAP in the model's own coordinates, whether the
posterior is Gaussian in the unconstrained space (then Laplace is exact, log evidence included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate
from scipy import optimize, special, stats

import pyebm

T = torch.float64


def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=T)


@dataclass
class Case:
    name: str
    model: object
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    mean: dict = field(default_factory=dict)  # site -> exact posterior mean
    sd: dict = field(default_factory=dict)  # site -> exact posterior sd
    mode: dict = field(default_factory=dict)  # site -> exact MAP (model's own coordinates)
    gaussian: bool = False  # Gaussian in the unconstrained space: Laplace is exact
    log_evidence: float | None = None
    kurtosis: dict = field(default_factory=dict)  # site -> kurtosis where not Gaussian (for sd errors)
    discrete: dict = field(default_factory=dict)  # site -> True for 0/1 sites (their means are probabilities)


# --- linear regression with known noise: every method's exact Gaussian ---------------------------------------------
def linear_regression(X, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(3, dtype=X.dtype), 2.0).to_event(1))
    with pyro.plate("data", X.shape[0]):
        mean = pyro.deterministic("mean", X @ w, event_dim=0)
        return pyro.sample("y", dist.Normal(mean, 0.5), obs=y)


def linear_regression_case() -> Case:
    g = np.random.default_rng(0)
    X = g.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.5 * g.normal(size=40)
    P = np.eye(3) / 4 + X.T @ X / 0.25
    cov = np.linalg.inv(P)
    m = cov @ X.T @ y / 0.25
    evidence = stats.multivariate_normal(np.zeros(40), 4 * X @ X.T + 0.25 * np.eye(40)).logpdf(y)
    return Case("linear_regression", linear_regression, (_t(X), _t(y)), mean={"w": m}, sd={"w": np.sqrt(np.diag(cov))},
                mode={"w": m}, gaussian=True, log_evidence=float(evidence))


# --- conjugate regression with unknown noise (normal-inverse-gamma) --------------------------------------------------
A0, B0, V0 = 3.0, 2.0, 4.0


def nig_regression(X, y):
    sigma2 = pyro.sample("sigma2", dist.InverseGamma(torch.tensor(A0, dtype=X.dtype), B0))
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=X.dtype), (V0 * sigma2).sqrt()).to_event(1))
    with pyro.plate("data", X.shape[0]):
        pyro.sample("y", dist.Normal(X @ w, sigma2.sqrt()), obs=y)


def nig_case() -> Case:
    g = np.random.default_rng(1)
    X = np.stack([np.ones(30), g.normal(size=30)], 1)
    y = X @ np.array([0.5, 1.5]) + 0.8 * g.normal(size=30)
    Vn = np.linalg.inv(np.eye(2) / V0 + X.T @ X)
    mn = Vn @ X.T @ y
    an = A0 + 15
    bn = B0 + 0.5 * (y @ y - mn @ np.linalg.inv(Vn) @ mn)
    sd_w = np.sqrt(np.diag(bn / (an - 1) * Vn))
    mean_s2, sd_s2 = bn / (an - 1), bn / ((an - 1) * math.sqrt(an - 2))
    nu = 2 * an  # w is Student-t with 2 a_n degrees of freedom; sigma2 inverse gamma
    return Case("nig_regression", nig_regression, (_t(X), _t(y)), mean={"w": mn, "sigma2": mean_s2},
                sd={"w": sd_w, "sigma2": sd_s2}, mode={"w": mn, "sigma2": bn / (an + 1 + 1)},
                kurtosis={"w": 3 + 6 / (nu - 4), "sigma2": 3 + (30 * an - 66) / ((an - 3) * (an - 4))})


# --- logistic regression: two parameters, exact on a grid --------------------------------------------------------
def logistic_regression(x, y):
    a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 2.0))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 2.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Bernoulli(logits=a + b * x), obs=y)


def logistic_case() -> Case:
    g = np.random.default_rng(2)
    x = g.normal(size=50)
    y = (g.random(50) < special.expit(-0.5 + 1.2 * x)).astype(float)
    a, b = np.meshgrid(np.linspace(-3, 2.5, 551), np.linspace(-1.5, 4.5, 601), indexing="ij")
    logits = a[..., None] + b[..., None] * x
    logp = (y * logits - np.logaddexp(0, logits)).sum(-1) - (a**2 + b**2) / 8
    w = np.exp(logp - logp.max())
    w /= w.sum()
    means = {"a": (w * a).sum(), "b": (w * b).sum()}
    sds = {"a": math.sqrt((w * a**2).sum() - means["a"] ** 2), "b": math.sqrt((w * b**2).sum() - means["b"] ** 2)}
    theta = np.zeros(2)  # the mode by Newton's method on the exact log density
    Xd = np.stack([np.ones(50), x], 1)
    for _ in range(50):
        p = special.expit(Xd @ theta)
        grad = Xd.T @ (y - p) - theta / 4
        H = -(Xd.T * (p * (1 - p))) @ Xd - np.eye(2) / 4
        theta = theta - np.linalg.solve(H, grad)
    return Case("logistic_regression", logistic_regression, (_t(x), _t(y)), mean=means, sd=sds,
                mode={"a": theta[0], "b": theta[1]})


# --- beta-binomial and gamma-poisson: conjugate, constrained sites ----------------------------------------------
def beta_binomial(k, n):
    p = pyro.sample("p", dist.Beta(torch.tensor(2.0, dtype=k.dtype), 3.0))
    with pyro.plate("groups", len(k)):
        pyro.sample("k", dist.Binomial(n, p), obs=k)


def beta_binomial_case() -> Case:
    k, n = np.array([3.0, 5, 2, 6, 4]), 10.0
    a, b = 2 + k.sum(), 3 + (n - k).sum()
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    kurt = 3 + 6 * ((a - b) ** 2 * (a + b + 1) - a * b * (a + b + 2)) / (a * b * (a + b + 2) * (a + b + 3))
    return Case("beta_binomial", beta_binomial, (_t(k), n), mean={"p": a / (a + b)}, sd={"p": sd},
                mode={"p": (a - 1) / (a + b - 2)}, kurtosis={"p": kurt})


def gamma_poisson(counts):
    rate = pyro.sample("rate", dist.Gamma(torch.tensor(3.0, dtype=counts.dtype), 1.0))
    with pyro.plate("data", len(counts)):
        pyro.sample("counts", dist.Poisson(rate), obs=counts)


def gamma_poisson_case() -> Case:
    counts = np.random.default_rng(3).poisson(4.0, size=20).astype(float)
    a, b = 3 + counts.sum(), 1 + 20
    return Case("gamma_poisson", gamma_poisson, (_t(counts),), mean={"rate": a / b}, sd={"rate": math.sqrt(a) / b},
                mode={"rate": (a - 1) / b}, kurtosis={"rate": 3 + 6 / a})


# --- normal with unknown mean and precision (normal-gamma) -------------------------------------------------------
def normal_gamma(y):
    tau = pyro.sample("tau", dist.Gamma(torch.tensor(2.0, dtype=y.dtype), 1.0))
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 1.0 / (0.5 * tau).sqrt()))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0 / tau.sqrt()), obs=y)


def normal_gamma_case() -> Case:
    y = 1.5 + 0.7 * np.random.default_rng(4).normal(size=25)
    n, kappa0, a0, b0 = 25, 0.5, 2.0, 1.0
    kn, mn = kappa0 + n, n * y.mean() / (kappa0 + n)
    an = a0 + n / 2
    bn = b0 + 0.5 * ((y - y.mean()) ** 2).sum() + kappa0 * n * y.mean() ** 2 / (2 * kn)
    return Case("normal_gamma", normal_gamma, (_t(y),), mean={"mu": mn, "tau": an / bn},
                sd={"mu": math.sqrt(bn / (kn * (an - 1))), "tau": math.sqrt(an) / bn},
                mode={"mu": mn, "tau": (an - 0.5) / bn},
                kurtosis={"mu": 3 + 6 / (2 * an - 4), "tau": 3 + 6 / an})


# --- eight schools, centred and non-centred: exact by quadrature over (mu, tau) --------------------------------
SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools_centred(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=sigma.dtype), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=sigma.dtype)))
    with pyro.plate("schools", len(sigma)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools(sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=sigma.dtype), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=sigma.dtype)))
    with pyro.plate("schools", len(sigma)):
        eta = pyro.sample("eta", dist.Normal(torch.tensor(0.0, dtype=sigma.dtype), 1.0))
        theta = pyro.deterministic("theta", mu + tau * eta)
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def eight_schools_case() -> Case:
    mu = np.linspace(-25, 35, 801)
    tau = np.concatenate([np.linspace(1e-4, 30, 2000), np.linspace(30.1, 400, 600)])
    dtau = np.gradient(tau)
    M, Tt = np.meshgrid(mu, tau, indexing="ij")
    s2 = SCHOOLS_SIGMA**2 + Tt[..., None] ** 2
    logp = (stats.norm.logpdf(M, 0, 5) + stats.halfcauchy.logpdf(Tt, scale=5)
            - 0.5 * (((SCHOOLS_Y - M[..., None]) ** 2) / s2 + np.log(s2)).sum(-1))
    w = np.exp(logp - logp.max()) * dtau[None, :]
    w /= w.sum()
    prec = 1 / SCHOOLS_SIGMA**2 + 1 / Tt[..., None] ** 2
    cond_mean = (SCHOOLS_Y / SCHOOLS_SIGMA**2 + M[..., None] / Tt[..., None] ** 2) / prec  # theta | mu, tau, y
    eta_mean = (cond_mean - M[..., None]) / Tt[..., None]
    eta_var = 1 / (prec * Tt[..., None] ** 2)

    def moments(f, var=0.0):
        m = (w[..., None] * f).sum((0, 1)) if np.ndim(f) == 3 else (w * f).sum()
        second = (w[..., None] * (f**2 + var)).sum((0, 1)) if np.ndim(f) == 3 else (w * f**2).sum()
        return m, np.sqrt(second - m**2)

    out_mean, out_sd = {}, {}
    for name, f, var in (("mu", M, 0.0), ("tau", Tt, 0.0), ("eta", eta_mean, eta_var)):
        out_mean[name], out_sd[name] = moments(f, var)
    return Case("eight_schools", eight_schools, (_t(SCHOOLS_SIGMA), _t(SCHOOLS_Y)), mean=out_mean, sd=out_sd)


# --- a mixture with its discrete assignments enumerated, and the same mixture marginalised by hand --------------
MIX_WEIGHTS = (0.3, 0.7)


@config_enumerate
def mixture(x):
    locs = pyro.sample("locs", dist.Normal(torch.zeros(2, dtype=x.dtype), 10.0).to_event(1))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Categorical(torch.tensor(MIX_WEIGHTS, dtype=x.dtype)))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def mixture_by_hand(x):
    locs = pyro.sample("locs", dist.Normal(torch.zeros(2, dtype=x.dtype), 10.0).to_event(1))
    with pyro.plate("data", len(x)):
        mix = dist.MixtureSameFamily(dist.Categorical(torch.tensor(MIX_WEIGHTS, dtype=x.dtype)), dist.Normal(locs, 1.0))
        pyro.sample("x", mix, obs=x)


def mixture_data() -> np.ndarray:
    g = np.random.default_rng(5)
    return np.concatenate([g.normal(-2.0, 1.0, 12), g.normal(2.5, 1.0, 28)])


def mixture_case() -> Case:
    x = mixture_data()
    l0, l1 = np.meshgrid(np.linspace(-5, 1, 601), np.linspace(0.5, 4.5, 401), indexing="ij")
    comp = np.stack([np.log(MIX_WEIGHTS[0]) + stats.norm.logpdf(x, l0[..., None], 1),
                     np.log(MIX_WEIGHTS[1]) + stats.norm.logpdf(x, l1[..., None], 1)])
    logp = special.logsumexp(comp, 0).sum(-1) + stats.norm.logpdf(l0, 0, 10) + stats.norm.logpdf(l1, 0, 10)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    resp = np.exp(comp[1] - special.logsumexp(comp, 0))  # P(z_i = 1 | locs, x)
    means = {"locs": np.array([(w * l0).sum(), (w * l1).sum()]), "z": (w[..., None] * resp).sum((0, 1))}
    sds = {"locs": np.sqrt(np.array([(w * l0**2).sum(), (w * l1**2).sum()]) - means["locs"] ** 2),
           "z": np.sqrt(means["z"] * (1 - means["z"]))}
    return Case("mixture", mixture, (_t(x),), mean=means, sd=sds, discrete={"z": True})


# --- nested plates: random intercepts with known variances (linear-Gaussian, exact) ------------------------------
def random_intercepts(y):  # y: (groups, observations per group)
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=y.dtype), 10.0))
    with pyro.plate("groups", y.shape[0], dim=-2):
        a = pyro.sample("a", dist.Normal(mu, 1.0))
        with pyro.plate("observations", y.shape[1], dim=-1):
            pyro.sample("y", dist.Normal(a, 0.5), obs=y)


def random_intercepts_case() -> Case:
    g = np.random.default_rng(6)
    G, n = 4, 5
    y = (g.normal(size=(G, 1)) + 0.3) + 0.5 * g.normal(size=(G, n))
    # joint Gaussian over (mu, a_1..a_G): precision of -log p
    P = np.zeros((G + 1, G + 1))
    P[0, 0] = 1 / 100 + G / 1.0
    P[0, 1:] = P[1:, 0] = -1.0
    P[1:, 1:] = np.eye(G) * (1.0 + n / 0.25)
    b = np.concatenate([[0.0], y.sum(1) / 0.25])
    cov = np.linalg.inv(P)
    m = cov @ b
    sd = np.sqrt(np.diag(cov))
    return Case("random_intercepts", random_intercepts, (_t(y),), mean={"mu": m[0], "a": m[1:, None]},
                sd={"mu": sd[0], "a": sd[1:, None]}, mode={"mu": m[0], "a": m[1:, None]}, gaussian=True)


# --- an energy factor inside an ordinary model: a smoothness penalty on regression weights -----------------------
SMOOTH = 20.0


def smooth_regression(B, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(B.shape[1], dtype=B.dtype), 3.0).to_event(1))
    pyebm.energy_factor("smoothness", SMOOTH * ((w[1:] - w[:-1]) ** 2).sum())
    with pyro.plate("data", B.shape[0]):
        pyro.sample("y", dist.Normal(B @ w, 0.3), obs=y)


def smooth_case() -> Case:
    g = np.random.default_rng(7)
    x = np.linspace(0, 1, 30)
    knots = np.linspace(0, 1, 8)
    B = np.exp(-0.5 * ((x[:, None] - knots) / 0.12) ** 2)
    y = np.sin(2 * np.pi * x) + 0.3 * g.normal(size=30)
    Dm = np.diff(np.eye(8), axis=0)
    P = np.eye(8) / 9 + 2 * SMOOTH * Dm.T @ Dm + B.T @ B / 0.09
    cov = np.linalg.inv(P)
    m = cov @ B.T @ y / 0.09
    return Case("smooth_regression", smooth_regression, (_t(B), _t(y)), mean={"w": m}, sd={"w": np.sqrt(np.diag(cov))},
                mode={"w": m}, gaussian=True)


# --- a 3x3 Ising lattice: spins enumerated (512 configurations), a continuous external field -------------------
ISING_J = 0.4
ISING_EDGES = [(i, i + 1) for i in range(9) if i % 3 != 2] + [(i, i + 3) for i in range(6)]


@config_enumerate
def ising():
    h = pyro.sample("h", dist.Normal(torch.tensor(0.0, dtype=T), 1.0))
    spins = [2.0 * pyro.sample(f"s{i}", dist.Bernoulli(torch.tensor(0.5, dtype=T))) - 1.0 for i in range(9)]
    coupling = sum(spins[i] * spins[j] for i, j in ISING_EDGES)
    # E = -J sum_<ij> s_i s_j - 0.2 sum_i s_i - h s_0: a weak uniform field, and an unknown one on a corner spin
    pyebm.energy_factor("ising", -ISING_J * coupling - 0.2 * sum(spins) - h * spins[0])


def ising_case() -> Case:
    configs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 9, indexing="ij")).reshape(9, -1).T  # (512, 9)
    coupling = sum(configs[:, i] * configs[:, j] for i, j in ISING_EDGES)
    h = np.linspace(-8, 9, 3401)
    E = -ISING_J * coupling[None, :] - 0.2 * configs.sum(1)[None, :] - h[:, None] * configs[None, :, 0]
    logp = -E + stats.norm.logpdf(h)[:, None]  # (h, config)
    w = np.exp(logp - logp.max())
    w /= w.sum()
    wh = w.sum(1)
    mean_h = (wh * h).sum()
    p_up = (w.sum(0)[:, None] * (configs > 0)).sum(0)
    means = {"h": mean_h, **{f"s{i}": p_up[i] for i in range(9)}}
    sds = {"h": math.sqrt((wh * h**2).sum() - mean_h**2), **{f"s{i}": math.sqrt(p_up[i] * (1 - p_up[i]))
                                                         for i in range(9)}}
    def neg_log_marginal(hh):  # the spins summed out exactly: what MAP maximises over h
        e = -ISING_J * coupling - 0.2 * configs.sum(1) - hh * configs[:, 0]
        return -(special.logsumexp(-e) + stats.norm.logpdf(hh))

    mode = optimize.minimize_scalar(neg_log_marginal, bracket=(-1, 0, 3), tol=1e-12).x
    return Case("ising", ising, mean=means, sd=sds, mode={"h": mode}, discrete={f"s{i}": True for i in range(9)})


#: name -> the function that builds the case (its exact answer computed on demand)
BUILDERS = {"linear_regression": linear_regression_case, "nig_regression": nig_case,
            "logistic_regression": logistic_case, "beta_binomial": beta_binomial_case,
            "gamma_poisson": gamma_poisson_case, "normal_gamma": normal_gamma_case, "eight_schools": eight_schools_case,
            "mixture": mixture_case, "random_intercepts": random_intercepts_case, "smooth_regression": smooth_case,
            "ising": ising_case}
