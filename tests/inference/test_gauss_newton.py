"""Laplace's generalised Gauss-Newton curvature: the exact Hessian where the model is linear in the latents
(canonical links), J^T Lambda J + prior curvature by hand for a network, masks honoured, clear refusals."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyebm

G = torch.Generator().manual_seed(0)
X = torch.randn(40, 3, generator=G, dtype=torch.float64)
W = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def glm(family):
    def model(x, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        eta = x @ w
        with pyro.plate("data", len(x)):
            if family == "normal":
                pyro.sample("y", dist.Normal(eta, 0.3), obs=y)
            elif family == "bernoulli":
                pyro.sample("y", dist.Bernoulli(logits=eta), obs=y)
            elif family == "poisson":
                pyro.sample("y", dist.Poisson(eta.exp()), obs=y)
            else:
                logits = torch.stack([torch.zeros_like(eta), eta, -eta], -1)
                pyro.sample("y", dist.Categorical(logits=logits), obs=y)

    return model


def data(family):
    eta = X @ W
    noise = torch.randn(40, generator=G, dtype=torch.float64)
    return {"normal": eta + 0.3 * noise, "bernoulli": (eta + noise > 0).double(),
            "poisson": torch.poisson((0.3 * eta).exp(), generator=G),
            "categorical": torch.remainder((eta > 0).long() + (noise > 1).long(), 3)}[family]


@pytest.mark.parametrize("family", ["normal", "bernoulli", "poisson", "categorical"])
def test_ggn_is_the_exact_hessian_of_a_model_linear_in_its_latents(float64, family):
    """Canonical links, natural parameters linear in w: the GGN drops nothing. Both curvatures are taken at the same
    mode (at=), so they agree to round-off."""
    model, y = glm(family), data(family)
    mode = pyebm.infer(model, X, y, method="map", progress=False).mode
    exact = pyebm.infer(model, X, y, method=pyebm.Laplace(at=mode), progress=False)
    ggn = pyebm.infer(model, X, y, method=pyebm.Laplace(at=mode, hessian="ggn"), progress=False)
    torch.testing.assert_close(ggn.diagnostics["hessian"], exact.diagnostics["hessian"], rtol=1e-9, atol=1e-9)
    assert ggn.log_evidence == pytest.approx(exact.log_evidence, abs=1e-8)
    assert ggn.diagnostics["ggn_sites"] == ["y"]


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_ggn_of_a_network_is_jacobian_fisher_jacobian_plus_the_prior(float64):
    """A tanh network with a Normal likelihood and a latent noise scale: the GGN in (weights, log sigma) is
    J^T J / sigma^2 for the weights, 2N for log sigma (the Normal's Fisher there), plus the priors' exact curvature,
    computed here by hand, at a point that is not a mode (post-hoc Laplace warns about that)."""
    x = torch.linspace(-2, 2, 25, dtype=torch.float64)[:, None]
    y = torch.sin(2 * x[:, 0])

    def net(w, x):
        return torch.tanh(x * w[:4]) @ w[4:]

    def model(x, y):
        w = pyro.sample("w", dist.Normal(0.0, 2.0).expand([8]).to_event(1))
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(net(w, x), sigma), obs=y)

    w = torch.randn(8, generator=G, dtype=torch.float64)
    sigma = torch.tensor(0.4, dtype=torch.float64)
    post = pyebm.infer(model, x, y, method=pyebm.Laplace(at={"w": w, "sigma": sigma}, hessian="ggn"),
                       progress=False)
    jac = torch.func.jacrev(lambda v: net(v, x))(w)  # (25, 8)
    expected = torch.zeros(9, 9, dtype=torch.float64)
    expected[:8, :8] = jac.T @ jac / sigma**2 + torch.eye(8, dtype=torch.float64) / 4.0
    expected[8, 8] = 2.0 * 25 + 1.0  # Fisher of log sigma, and the LogNormal(0, 1) prior's curvature in log sigma
    torch.testing.assert_close(post.diagnostics["hessian"], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_ggn_leaves_masked_observations_out(float64):
    y = data("normal")
    keep = torch.arange(40) < 25

    def masked(x, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", len(x)), pyro.poutine.mask(mask=keep):
            pyro.sample("y", dist.Normal(x @ w, 0.3), obs=y)

    at = {"w": W}
    full = pyebm.infer(masked, X, y, method=pyebm.Laplace(at=at, hessian="ggn"), progress=False)
    subset = pyebm.infer(glm("normal"), X[keep], y[keep], method=pyebm.Laplace(at=at, hessian="ggn"),
                         progress=False)
    torch.testing.assert_close(full.diagnostics["hessian"], subset.diagnostics["hessian"])


def test_ggn_refuses_a_model_without_a_known_observation(float64):
    def factor_only():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.factor("f", -(x**4))

    with pytest.raises(ValueError, match="hessian='ggn' needs an observed site.*Normal, Bernoulli"):
        pyebm.infer(factor_only, method=pyebm.Laplace(hessian="ggn"), progress=False)
    with pytest.raises(ValueError, match="unknown hessian 'gn'"):
        pyebm.Laplace(hessian="gn")

    def mixture(y):
        loc = pyro.sample("loc", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
        with pyro.plate("data", len(y)):
            z = pyro.sample("z", dist.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
            pyro.sample("y", dist.Normal(pyro.ops.indexing.Vindex(loc)[..., z], 1.0), obs=y)

    y = torch.tensor([-2.0, -1.5, 2.0, 2.5])
    with pytest.raises(ValueError, match=r"latent sites are all continuous; \['z'\]"):
        pyebm.infer(mixture, y, method=pyebm.Laplace(at={"loc": torch.tensor([-2.0, 2.0])}, hessian="ggn"),
                    progress=False)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
@pytest.mark.parametrize("kind", ["squared", "cross_entropy"])
def test_ggn_of_a_test_time_adaptation_with_a_supervised_energy(float64, kind):
    """pyebm.ttt.supervised energies declare their outputs: over a last layer (linear in its weights) the GGN is the
    exact Hessian; over every weight it is J^T Lambda J + the prior's 1/s^2, Lambda = 1/noise^2 (squared) or
    diag(p) - p p^T (cross-entropy), computed here by hand."""
    from pyebm import ttt

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    x = torch.randn(20, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (20,)) if kind == "cross_entropy" else torch.randn(20, 3, dtype=torch.float64)
    energy, scale = ttt.supervised(kind, 0.5), 0.7
    trained = {k: v.detach() for k, v in net.named_parameters()}
    last = ["2.weight", "2.bias"]

    def laplace(names, hessian):
        at = {k: trained[k] for k in names}
        return ttt.adapt(net, (x, y), names, energy, pyebm.Laplace(at=at, hessian=hessian), prior_scale=scale,
                         seed=0)

    ggn, exact = laplace(last, "ggn"), laplace(last, "full")
    torch.testing.assert_close(ggn.diagnostics["hessian"], exact.diagnostics["hessian"], rtol=1e-9, atol=1e-9)
    assert ggn.diagnostics["ggn_sites"] == ["ttt_energy"]

    names = list(trained)
    flat = torch.cat([trained[k].reshape(-1) for k in names])

    def outputs(v):
        params, start = {}, 0
        for k in names:
            params[k] = v[start : start + trained[k].numel()].reshape(trained[k].shape)
            start += trained[k].numel()
        return torch.func.functional_call(net, params, (x,))

    jac = torch.func.jacrev(outputs)(flat)  # (20, 3, D)
    out = outputs(flat)
    if kind == "squared":
        lam = torch.eye(3, dtype=torch.float64).expand(20, 3, 3) / 0.25
    else:
        p = torch.softmax(out, -1)
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    expected = torch.einsum("ncd,nce,nek->dk", jac, lam, jac) + torch.eye(flat.numel(), dtype=torch.float64) / 0.49
    torch.testing.assert_close(laplace(names, "ggn").diagnostics["hessian"], expected, rtol=1e-9, atol=1e-9)


def test_laplace_over_a_subset_is_the_conditional_gaussian(float64):
    """subset= holds the other sites at the mode: the precision is the subset's block of the full Hessian (the
    conditional posterior), the mean the joint mode's; names, a predicate, GGN and bad names all behave."""
    y = data("normal")

    def model(x, y):
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(b + x @ w, 0.3), obs=y)

    full = pyebm.infer(model, X, y, method="laplace", progress=False)
    sub = pyebm.infer(model, X, y, method=pyebm.Laplace(subset="w"), progress=False)
    torch.testing.assert_close(sub.diagnostics["hessian"], full.diagnostics["hessian"][1:, 1:], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sub.mean()["w"], full.mean()["w"], rtol=1e-6, atol=1e-6)
    assert float(sub.std()["b"]) == 0.0 and float(sub.mean()["b"]) == pytest.approx(float(full.mean()["b"]), abs=1e-6)
    ggn = pyebm.infer(model, X, y, method=pyebm.Laplace(at=full.mode, subset=lambda n: n == "w", hessian="ggn"),
                      progress=False)
    torch.testing.assert_close(ggn.diagnostics["hessian"], full.diagnostics["hessian"][1:, 1:], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"subset names \['v'\]"):
        pyebm.infer(model, X, y, method=pyebm.Laplace(subset=["v"]), progress=False)
    with pytest.raises(ValueError, match="selects none"):
        pyebm.infer(model, X, y, method=pyebm.Laplace(subset=lambda n: False), progress=False)
