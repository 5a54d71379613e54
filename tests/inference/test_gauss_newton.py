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


def glm(family, mask=True):
    def model(x, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        eta = x @ w
        with pyro.plate("data", len(x)), pyro.poutine.mask(mask=mask):
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
    fisher = pyebm.infer(model, X, y, method=pyebm.Laplace(at=mode, hessian="fisher"), progress=False)
    torch.testing.assert_close(fisher.diagnostics["hessian"], ggn.diagnostics["hessian"], rtol=0, atol=0)


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
@pytest.mark.parametrize("family", ["normal", "categorical"])
def test_ggn_leaves_masked_observations_out(float64, family):
    y = data(family)
    keep = torch.arange(40) < 25
    at = {"w": W}
    full = pyebm.infer(glm(family, keep), X, y, method=pyebm.Laplace(at=at, hessian="ggn"), progress=False)
    subset = pyebm.infer(glm(family), X[keep], y[keep], method=pyebm.Laplace(at=at, hessian="ggn"),
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


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_a_post_hoc_ggn_reads_the_run_that_builds_its_potential(float64):
    """At a given point on the reals, in the model's order, one run of the model gives the potential and the GGN's
    graph; in another order, or with a site off the reals, the GGN runs the model itself: the same curvature, evidence
    and gradient either way, and the posterior keeps no graph. A point where the energy is not finite is refused by
    name on the one-run path too."""
    runs = []

    def model(x, y, positive=False):
        runs.append(1)
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0) if positive else dist.Normal(1.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(torch.tanh(x @ w), 0.3 * s**2), obs=y)

    y = data("normal")
    point = {"w": W, "s": torch.tensor(1.2, dtype=torch.float64)}
    for positive in (False, True):
        fits = []
        for at in (point, dict(reversed(point.items()))):
            runs.clear()
            fits.append(pyebm.infer(model, X, y, positive=positive, method=pyebm.Laplace(at=at, hessian="ggn"),
                                    progress=False))
            fits[-1].runs = len(runs)
        one, two = fits
        assert (one.runs, two.runs) == ((1, 2) if not positive else (2, 2))
        assert one.approximation.layout.trace is None
        torch.testing.assert_close(one.diagnostics["hessian"], two.diagnostics["hessian"], rtol=1e-12, atol=1e-12)
        assert one.log_evidence == pytest.approx(two.log_evidence, rel=1e-12)
        assert one.diagnostics["distance"] == pytest.approx(two.diagnostics["distance"], rel=1e-10)
    with pytest.raises(ValueError, match="not finite at the given point.*'y'"):
        pyebm.infer(model, X, y, method=pyebm.Laplace(at={"w": W, "s": torch.tensor(0.0)}, hessian="ggn"),
                    progress=False)


# --- structures of the GGN: diagonal, K-FAC, low rank -----------------------------------------------------------
def _mlp_adaptation(n, kind="cross_entropy", prior_scale=0.7, outputs=2):
    """A 3-5-2 tanh network (float64; 3-5-1 with ``outputs=1`` and a squared energy) adapted post-hoc on n examples:
    a function hessian -> Laplace posterior."""
    from pyebm import ttt

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, outputs)).double()
    x = torch.randn(n, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (n,)) if kind == "cross_entropy" else torch.randn(n, outputs, dtype=torch.float64)
    y = y[:, 0] if outputs == 1 else y
    trained = {k: v.detach() for k, v in net.named_parameters()}

    def fit(hessian="ggn", **options):
        return ttt.adapt(net, (x, y), list(trained), ttt.supervised(kind, 0.5),
                         pyebm.Laplace(at=trained, hessian=hessian, **options), prior_scale=prior_scale,
                         prior_mean="zero", seed=0)

    return net, x, trained, fit


def _blocks(trained):
    out, start = {}, 0
    for k, v in trained.items():
        out[k] = slice(start, start + v.numel())
        start += v.numel()
    return out


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_diagonal_ggn_is_the_dense_ggns_diagonal(float64):
    """structure='diag' accumulates squares of Jacobian rows (no D x D matrix): equal to the dense GGN's diagonal,
    and the evidence is the mean-field Gaussian's."""
    _, _, _, fit = _mlp_adaptation(30)
    dense, diag = fit("ggn"), fit("ggn", structure="diag")
    torch.testing.assert_close(diag.diagnostics["hessian"], torch.diagonal(dense.diagnostics["hessian"]),
                               rtol=1e-12, atol=1e-12)
    energy = -diag.log_evidence - 0.5 * torch.log(diag.diagnostics["hessian"] / (2 * torch.pi)).sum()
    assert float(energy) == pytest.approx(-dense.log_evidence - 0.5 * float(
        torch.logdet(dense.diagnostics["hessian"] / (2 * torch.pi))), abs=1e-9)


def test_diagonal_ggn_with_a_correlated_prior_takes_the_priors_diagonal_exactly(float64):
    """A MultivariateNormal prior couples the weights: the diagonal falls back to Hessian-vector products for the
    prior's part and still equals the dense GGN's diagonal."""
    cov = 0.5 * torch.eye(3, dtype=torch.float64) + 0.3

    def model(x, y):
        w = pyro.sample("w", dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Bernoulli(logits=torch.tanh(x @ w)), obs=y)

    y = data("bernoulli")
    at = {"w": W}
    dense = pyebm.infer(model, X, y, method=pyebm.Laplace(at=at, hessian="ggn"), progress=False)
    diag = pyebm.infer(model, X, y, method=pyebm.Laplace(at=at, hessian="ggn", structure="diag"), progress=False)
    torch.testing.assert_close(diag.diagnostics["hessian"], torch.diagonal(dense.diagnostics["hessian"]),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="couples coordinates"):
        pyebm.infer(model, X, y, method=pyebm.Laplace(at=at, hessian="lowrank"), progress=False)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_kfac_is_the_ggns_layer_blocks_for_one_example(float64):
    """With one example, B (x) A is exactly each weight's block of the GGN and the bias block is exact too; the
    prior's 1/s^2 is added through the factors' eigendecomposition."""
    _, _, trained, fit = _mlp_adaptation(1)
    dense, kron = fit("ggn"), fit("kron")
    H = dense.diagnostics["hessian"]
    P = torch.linalg.inv(kron.approximation.structure.covariance())
    for sl in _blocks(trained).values():
        torch.testing.assert_close(P[sl, sl], H[sl, sl], rtol=1e-10, atol=1e-10)
    assert list(kron.diagnostics["hessian"]) == list(trained)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_per_example_pullbacks_only_where_examples_are_independent(float64, monkeypatch):
    """K-FAC, the diagonal, the dense and the low-rank GGN pull every example's roots back in one pass where examples
    are independent: the same factors, diagonal, matrix and low-rank covariance as one pass per root (to 1e-12; the
    low rank's eigenvectors to 1e-9, an SVD of rows in another order). A network that centres its hidden layer on the
    batch mean mixes examples: the sign test sees it (rows projected, or whole where one root per example keeps them),
    and the fallback's diagonal is still the dense GGN's."""
    from pyebm.inference import kfac

    calls = []
    probe = kfac._probe
    def spy(*args, **kwargs):
        calls.append(probe(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(kfac, "_probe", spy)
    _, _, trained, fit = _mlp_adaptation(20)
    kron, diag = fit("kron").diagnostics["hessian"], fit("ggn", structure="diag").diagnostics["hessian"]
    dense, low = fit("ggn").diagnostics["hessian"], fit("lowrank", rank=12).approximation.structure.covariance()
    assert [n for n, *_ in calls] == [20, 20, 20, 20]
    monkeypatch.setattr(kfac, "_probe", lambda *a, **k: (0, *probe(*a, **k)[1:]))  # one backward pass per root
    kron_rows, diag_rows = fit("kron").diagnostics["hessian"], fit("ggn", structure="diag").diagnostics["hessian"]
    for name in trained:
        for mine, rows in zip(kron[name][:2], kron_rows[name][:2]):
            if mine is not None:
                torch.testing.assert_close(mine, rows, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(diag, diag_rows, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense, fit("ggn").diagnostics["hessian"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(low, fit("lowrank", rank=12).approximation.structure.covariance(), rtol=1e-9,
                               atol=1e-12)

    class Centred(torch.nn.Module):
        def __init__(self, outputs=2):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 5), torch.nn.Linear(5, outputs)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            return self.b(h - h.mean(0))

    from pyebm import ttt

    torch.manual_seed(0)
    net = Centred().double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    at = {k: v.detach() for k, v in net.named_parameters()}
    monkeypatch.setattr(kfac, "_probe", spy)
    dense, diag = (ttt.adapt(net, (x, y), list(at), ttt.supervised("squared", 0.5),
                             pyebm.Laplace(at=at, hessian="ggn", structure=s), prior_scale=1.0, prior_mean="zero",
                             seed=0).diagnostics["hessian"] for s in ("full", "diag"))
    assert calls[-1][0] == 0
    torch.testing.assert_close(diag, torch.diagonal(dense), rtol=1e-12, atol=1e-12)
    net = Centred(1).double()  # one root per example: the probe keeps its rows and compares them whole, with the
    # energy's gradient pass at a given point, else with a flipped pass
    at = {k: v.detach() for k, v in net.named_parameters()}
    for method in (pyebm.Laplace(at=at, hessian="kron"), pyebm.Laplace(hessian="kron")):
        ttt.adapt(net, (x, y[:, 0]), list(at), ttt.supervised("squared", 0.5), method, prior_scale=1.0,
                  prior_mean="zero", seed=0)
        assert calls[-1][0] == 0 and calls[-1][3] is not None
        assert (calls[-1][4] is not None) == (method.at is not None)  # the energy's gradient, from its pass


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_kfac_factors_of_a_last_layer_by_hand(float64):
    """N examples: the last layer's output factor is sum_n (diag p_n - p_n p_n^T) (its outputs are the logits) and
    its input factor the mean outer product of the hidden activations; the bias block is the output factor."""
    net, x, trained, fit = _mlp_adaptation(25)
    B, A, delta = fit("kron").diagnostics["hessian"]["2.weight"]
    h = torch.tanh(net[0](x)).detach()
    p = torch.softmax(net(x), -1).detach()
    torch.testing.assert_close(B, (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).sum(0), rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(A, h.T @ h / 25, rtol=1e-12, atol=1e-12)
    assert delta == pytest.approx(1 / 0.49)
    bias_B, bias_A, _ = fit("kron").diagnostics["hessian"]["2.bias"]
    torch.testing.assert_close(bias_B, B, rtol=1e-12, atol=1e-12)
    assert bias_A is None


def test_kfac_of_a_pyro_module_network(float64):
    """PyroSample weights in a PyroModule are found by the layer hook: on one observation the K-FAC blocks equal the
    dense GGN's blocks, the noise scale (outside any layer) gets its own dense block."""
    from pyro.nn import PyroModule, PyroSample

    class Net(PyroModule):
        def __init__(self):
            super().__init__()
            self.fc = PyroModule[torch.nn.Linear](2, 4)
            self.fc.weight = PyroSample(dist.Normal(0.0, 1.0).expand([4, 2]).to_event(2))
            self.fc.bias = PyroSample(dist.Normal(0.0, 1.0).expand([4]).to_event(1))
            self.out = PyroModule[torch.nn.Linear](4, 1)
            self.out.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 4]).to_event(2))

        def forward(self, x, y=None):
            sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
            mu = self.out(torch.tanh(self.fc(x))).squeeze(-1)
            with pyro.plate("data", len(x)):
                pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    torch.manual_seed(1)
    net = Net().double()
    x, y = torch.randn(1, 2, dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    at = {"fc.weight": torch.randn(4, 2, dtype=torch.float64), "fc.bias": torch.randn(4, dtype=torch.float64),
          "out.weight": torch.randn(1, 4, dtype=torch.float64), "sigma": torch.tensor(0.5, dtype=torch.float64)}
    with pytest.warns(pyebm.ConvergenceWarning):
        dense = pyebm.infer(net, x, y, method=pyebm.Laplace(at=at, hessian="ggn"), progress=False)
    with pytest.warns(pyebm.ConvergenceWarning):
        kron = pyebm.infer(net, x, y, method=pyebm.Laplace(at=at, hessian="kron"), progress=False)
    assert list(kron.diagnostics["hessian"]) == ["fc.weight", "fc.bias", "out.weight", "other sites"]
    H, P = dense.diagnostics["hessian"], torch.linalg.inv(kron.approximation.structure.covariance())
    for sl in (slice(0, 1), slice(1, 9), slice(9, 13), slice(13, 17)):  # sigma first (model order), then the layers
        torch.testing.assert_close(P[sl, sl], H[sl, sl], rtol=1e-10, atol=1e-10)


class _WeightAlsoOutside(torch.nn.Module):
    """A layer whose weight also enters the output outside the layer call."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x))) + self.a.weight.sum()


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_a_weight_used_outside_its_layer_is_not_read_from_layer_pullbacks(float64, monkeypatch):
    """Layer pullbacks see a weight only through its layer: where it also reaches the observations another way, the
    dense GGN falls back to a backward pass per root (equal to the forced per-root path, to 1e-12) and K-FAC, which
    would drop that path, refuses."""
    from pyebm import ttt
    from pyebm.inference import kfac

    torch.manual_seed(0)
    net = _WeightAlsoOutside().double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    at = {k: v.detach() for k, v in net.named_parameters()}

    def fit(hessian):
        return ttt.adapt(net, (x, y), list(at), ttt.supervised("squared", 0.5), pyebm.Laplace(at=at, hessian=hessian),
                         prior_scale=1.0, prior_mean="zero", seed=0).diagnostics["hessian"]

    dense = fit("ggn")
    with pytest.raises(ValueError, match="also used outside"):
        fit("kron")
    probe = kfac._probe
    monkeypatch.setattr(kfac, "_probe", lambda *a, **k: (0, *probe(*a, **k)[1:]))  # one backward pass per root
    torch.testing.assert_close(dense, fit("ggn"), rtol=1e-12, atol=1e-12)


def _conv_adaptation(net, x, y, kind="squared"):
    from pyebm import ttt

    trained = {k: v.detach() for k, v in net.named_parameters()}

    def fit(hessian):
        return ttt.adapt(net, (x, y), list(trained), ttt.supervised(kind, 0.5), pyebm.Laplace(at=trained,
                         hessian=hessian), prior_scale=0.7, prior_mean="zero", seed=0)

    return trained, fit


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_kfac_of_a_convolution(float64):
    """nn.Conv2d layers are K-FAC blocks too. A 3x3 kernel over a 3x3 image has one output position: with one
    example every block equals the dense GGN's (the unfolded patches ordered as the flattened weight). With many
    positions (padding 1, stride 2) the input factor is the mean outer product of every patch, here cut out by hand,
    and, the convolution's outputs being the observations' means, the output factor is N T / sigma^2 I."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2)).double()
    trained, fit = _conv_adaptation(net, torch.randn(1, 2, 3, 3, dtype=torch.float64),
                                    torch.randint(0, 2, (1,)), "cross_entropy")
    H = fit("ggn").diagnostics["hessian"]
    P = torch.linalg.inv(fit("kron").approximation.structure.covariance())
    for sl in _blocks(trained).values():
        torch.testing.assert_close(P[sl, sl], H[sl, sl], rtol=1e-10, atol=1e-10)

    conv = torch.nn.Conv2d(2, 3, 3, padding=1, stride=2).double()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    net = torch.nn.Sequential(conv, torch.nn.Flatten())
    _, fit = _conv_adaptation(net, x, torch.randn(4, 27, dtype=torch.float64))
    B, A, _ = fit("kron").diagnostics["hessian"]["0.weight"]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    patches = torch.stack([padded[n, :, i : i + 3, j : j + 3].reshape(-1) for n in range(4) for i in (0, 2, 4)
                           for j in (0, 2, 4)])
    torch.testing.assert_close(A, patches.T @ patches / 36, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B, 36 / 0.25 * torch.eye(3, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    grouped = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, groups=2), torch.nn.Flatten()).double()
    _, fit = _conv_adaptation(grouped, x, torch.randn(4, 18, dtype=torch.float64))
    with pytest.raises(ValueError, match="cannot factor the layer whose weight is '0.weight': groups=2"):
        fit("kron")


def test_roots_give_the_fisher_of_every_kind(float64):
    """The cotangents made on demand square to the block-diagonal Fisher exactly: a categorical with several rows per
    example and a masked row (diag(p) - p p^T per row, weight 0 dropped), an elementwise Fisher with a zero, declared
    C x C blocks with a zero block, and an unbatched categorical. Summed over examples (by_example), each example's
    share still squares to its Fisher, and the signed sum is every root times its example's sign."""
    from pyebm.inference.gauss_newton import Roots

    g = torch.Generator().manual_seed(1)
    E, K, C = 4, 3, 5
    p = torch.softmax(torch.randn(E, K, C, generator=g), -1)
    mask = torch.ones(E, K)
    mask[1, 2] = 0
    f = torch.rand(E, 7, generator=g)
    f[2, 3] = 0
    A = torch.randn(E, K, C, C, generator=g)
    blocks = A @ A.transpose(-1, -2)
    blocks[0, 0] = 0
    single = torch.softmax(torch.randn(C, generator=g), -1)
    roots = Roots({"a": ([(torch.zeros(E, K, C), p, "softmax")], mask), "b": ([(torch.zeros(E, 7), f, False)], 1.0),
                   "c": ([(torch.zeros(E, K, C), blocks, True)], 2.0),
                   "d": ([(torch.zeros(C), single, "softmax")], 1.0)})
    pm = (p * mask[..., None]).reshape(-1, C)
    fisher = torch.block_diag(*[torch.diag(q) - torch.outer(q, q) for q in pm], torch.diag(f.reshape(-1)),
                              *(2 * blocks).reshape(-1, C, C), torch.diag(single) - torch.outer(single, single))
    example = torch.cat([torch.arange(E).repeat_interleave(K * C), torch.arange(E).repeat_interleave(7),
                         torch.arange(E).repeat_interleave(K * C), torch.zeros(C, dtype=torch.long)])
    rows = torch.cat(list(roots.cotangents(10)))
    assert len(rows) == roots.count == (E * K - 1) * C + E * 7 - 1 + (E * K - 1) * C + C
    torch.testing.assert_close(rows.T @ rows, fisher, rtol=0, atol=1e-13)
    summed = torch.cat(list(roots.by_example(4)))
    shares = [summed * (example == e) for e in range(E)]  # (the unbatched categorical counted as example 0)
    torch.testing.assert_close(sum(r.T @ r for r in shares), fisher, rtol=0, atol=1e-13)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0])
    torch.testing.assert_close(roots.signed(sign), (rows * sign[example]).sum(0), rtol=0, atol=1e-14)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_kfac_factors_do_not_depend_on_the_memory_budgets(float64, monkeypatch):
    """Pullbacks a root at a time or several, a convolution's patches and outer products one example at a time or
    all at once: the same factors (a CNN on 6 images, cross-entropy)."""
    from pyebm.inference import kfac

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(3, 2, 3, stride=2),
                              torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(8, 3)).double()
    _, fit = _conv_adaptation(net, torch.randn(6, 2, 5, 5, dtype=torch.float64), torch.randint(0, 3, (6,)),
                              "cross_entropy")
    large = fit("kron").diagnostics["hessian"]
    monkeypatch.setattr(kfac, "PULLBACK_BUDGET", 1)
    monkeypatch.setattr(kfac, "FACTOR_BUDGET", 1)
    small = fit("kron").diagnostics["hessian"]
    assert list(small) == list(large) == [k for k, _ in net.named_parameters()]
    for name in large:
        for mine, theirs in zip(small[name][:2], large[name][:2]):
            if theirs is not None:
                torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_kfac_with_one_root_per_example_reuses_the_probe(float64, monkeypatch):
    """A scalar output per example has one root per example: the probe's first pass (every root summed) is then the
    pullbacks, taken as they are; the factors equal those of one backward pass per root. At a given point the
    likelihood's own gradient pass tests the examples' independence (no flipped pass) and gives the gradient that
    autograd gives alone (the priors' part in closed form)."""
    from pyebm import ttt
    from pyebm.inference import kfac

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    x, y = torch.randn(12, 3, dtype=torch.float64), torch.randn(12, dtype=torch.float64)
    trained = {k: v.detach() for k, v in net.named_parameters()}

    def factors():
        post = ttt.adapt(net, (x, y), list(trained), ttt.supervised("squared", 0.5), pyebm.Laplace(
            at=trained, hessian="kron"), prior_scale=0.7, prior_mean="zero", seed=0)
        return post.diagnostics["hessian"]

    pullbacks, likelihood_passes, checks = [], [], []
    passes, likelihood_pass, through, probe = kfac._pullbacks, kfac._likelihood_pass, kfac._through, kfac._probe
    monkeypatch.setattr(kfac, "_pullbacks", lambda *a: pullbacks.append(1) or passes(*a))
    monkeypatch.setattr(kfac, "_likelihood_pass", lambda *a: likelihood_passes.append(likelihood_pass(*a))
                        or likelihood_passes[-1])
    reused = factors()
    assert pullbacks == []  # no pass beyond the probe's
    assert [independent for independent, *_ in likelihood_passes] == [True]  # the likelihood's pass tested it

    def same(a, b):
        for mine, theirs in zip(a.values(), b.values()):
            for x, y in zip(mine[:2], theirs[:2]):
                if y is not None:
                    torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)

    # where that pass cannot show the weights reaching it through their layers only, the roots' own pass decides
    monkeypatch.setattr(kfac, "_through", lambda *a: checks.append(1) or (len(checks) > 1 and through(*a)))
    same(reused, factors())
    assert len(checks) == 2
    monkeypatch.setattr(kfac, "_through", through)

    def fit():
        return ttt.adapt(net, (x, y), list(trained), ttt.supervised("squared", 0.5), pyebm.Laplace(
            at=trained, hessian="kron"), prior_scale=0.7, prior_mean="zero", seed=0)

    post = fit()  # ... and the gradient, as autograd gives it alone, with a flipped pass testing independence
    monkeypatch.setattr(kfac, "_probe", lambda *a, **k: probe(*a, **{**k, "likelihood": None}))
    alone = fit()
    same(post.diagnostics["hessian"], alone.diagnostics["hessian"])
    for key in ("distance", "grad_norm"):
        assert post.diagnostics[key] == pytest.approx(alone.diagnostics[key], rel=1e-12)
    assert post.log_evidence == pytest.approx(alone.log_evidence, rel=1e-12)
    monkeypatch.setattr(kfac, "_probe", lambda *a, **k: (0, *probe(*a, **k)[1:]))  # one backward pass per root
    per_root = factors()
    assert pullbacks == [1]
    for name in trained:
        for mine, theirs in zip(reused[name][:2], per_root[name][:2]):
            if theirs is not None:
                torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_an_adaptation_runs_the_network_once_per_trace(float64):
    """The energy and its natural parameters (hessian="ggn") share one forward pass: one run of the model calls the
    network once."""
    from pyebm.ttt.adapt import _forward_once

    calls = []
    net = torch.nn.Linear(3, 2).double()
    net.register_forward_hook(lambda *a: calls.append(1))
    forward = _forward_once(lambda values, x: net(x), {})
    x = torch.randn(4, 3, dtype=torch.float64)
    assert forward(x) is forward(x) is forward(x.flatten(0, 0))
    assert len(calls) == 1
    forward(x[:2])  # other inputs: another pass
    assert len(calls) == 2


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_kfac_refusals(float64):
    """No nn.Linear over the latents, and a prior that is not one number per parameter, are clear errors; K-FAC is a
    structure of the GGN only."""
    with pytest.raises(ValueError, match="factorises nn.Linear and nn.Conv2d layers"):
        pyebm.infer(glm("normal"), X, data("normal"), method=pyebm.Laplace(at={"w": W}, hessian="kron"),
                    progress=False)
    _, _, trained, _ = _mlp_adaptation(5)
    from pyebm import ttt

    net = torch.nn.Sequential(torch.nn.Linear(3, 2)).double()
    scales = {"0.weight": 0.5, "0.bias": 1.0}
    post = ttt.adapt(net, (torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])), list(scales),
                     ttt.supervised(), pyebm.Laplace(at={k: v.detach() for k, v in net.named_parameters()},
                                                     hessian="kron"), prior_scale=scales, prior_mean="zero", seed=0)
    assert post.diagnostics["hessian"]["0.weight"][2] == pytest.approx(4.0)  # per-parameter scales are fine

    def model(x, y):
        lin = torch.nn.Linear(3, 1).double()
        scale = torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64)
        w = pyro.sample("w", dist.Normal(0.0, scale).to_event(2))
        out = torch.func.functional_call(lin, {"weight": w, "bias": torch.zeros(1, dtype=torch.float64)}, (x,))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(out.squeeze(-1), 1.0), obs=y)

    with pytest.raises(ValueError, match="one number per parameter"):
        pyebm.infer(model, X, data("normal"), method=pyebm.Laplace(at={"w": W[None]}, hessian="kron"), progress=False)
    with pytest.raises(ValueError, match="structures of the generalised Gauss-Newton"):
        pyebm.Laplace(hessian="full", structure="kron")


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_low_rank_ggn(float64):
    """rank >= the GGN's rank (here the number of outputs, 2 x 6 minus the softmax's null direction) reproduces the
    dense GGN; a smaller rank keeps its top eigenpairs on top of the prior."""
    _, _, _, fit = _mlp_adaptation(6)
    dense = fit("ggn")
    H = dense.diagnostics["hessian"]
    full = fit("lowrank", rank=50)
    torch.testing.assert_close(torch.linalg.inv(full.approximation.structure.covariance()), H, rtol=1e-9, atol=1e-9)
    assert full.log_evidence == pytest.approx(dense.log_evidence, abs=1e-9)
    prior = torch.eye(H.shape[0], dtype=torch.float64) / 0.49
    lam, V = torch.linalg.eigh(H - prior)
    top = (V[:, -3:] * lam[-3:]) @ V[:, -3:].T + prior
    low = fit("lowrank", rank=3)
    torch.testing.assert_close(torch.linalg.inv(low.approximation.structure.covariance()), top, rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
@pytest.mark.parametrize("hessian,outputs", [("kron", 2), ("kron", 1), ("lowrank", 2)])
def test_factored_structures_are_consistent_gaussians(float64, hessian, outputs):
    """The factored structures' log-determinant, solves, marginal variances and draws all describe one Gaussian: that
    of the dense matrix they stand for (built here on request). One output: the last layer's Kronecker block has a
    1 x 1 factor (Cholesky factored)."""
    _, _, _, fit = _mlp_adaptation(8, "cross_entropy" if outputs == 2 else "squared", outputs=outputs)
    s = fit(hessian, **({"rank": 4} if hessian == "lowrank" else {})).approximation.structure
    cov = s.covariance()
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    assert float(s.logdet_precision()) == pytest.approx(-float(torch.logdet(cov)), abs=1e-9)
    torch.testing.assert_close(s.variance(), torch.diagonal(cov), rtol=1e-10, atol=1e-12)
    root = s.sample(eye).T  # columns: Sigma^{1/2} e_i
    torch.testing.assert_close(root @ root.T, cov, rtol=1e-9, atol=1e-12)
    v = torch.randn(3, cov.shape[0], dtype=torch.float64)
    torch.testing.assert_close(s.solve(v), v @ cov, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s.quadratic(v), ((v @ cov) * v).sum(-1), rtol=1e-9, atol=1e-12)


def test_a_kronecker_block_without_curvature_is_refused_by_name(float64):
    """A factored or dense block that is singular (no data curvature, no prior) is an InferenceError naming it."""
    from pyebm.inference.factored import Kronecker
    from pyebm.ops import TORCH

    eye, zero = torch.eye(2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    index = torch.arange(4), torch.arange(4, 6)
    Kronecker([("w", index[0], eye, eye, 0.0), ("b", index[1], eye, None, 0.5)], 6, TORCH)  # positive definite
    for blocks, name in [([("w", index[0], eye, zero, 0.0)], "w"), ([("b", index[1], zero, None, 0.0)], "b"),
                         ([("b", index[1], torch.ones(2, 2, dtype=torch.float64), None, 0.0)], "b")]:
        with pytest.raises(pyebm.InferenceError, match=f"curvature block of {name} is not positive definite"):
            Kronecker(blocks, 6, TORCH)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
@pytest.mark.parametrize("structure", ["diag", "kron", "lowrank"])
def test_evidence_tunes_the_prior_in_every_ggn_structure(float64, structure):
    """prior_scale='evidence' at a fixed point re-weighs the prior inside each structure: the tuned scale is a maximum
    of that structure's own evidence (5% either side is lower), and the low-rank GGN of full rank tunes exactly as
    the dense GGN does."""
    from pyebm import ttt

    net, x, trained, _ = _mlp_adaptation(20)
    y = torch.randint(0, 2, (20,), generator=torch.Generator().manual_seed(3))

    def fit(scale, method):
        return ttt.adapt(net, (x, y), list(trained), ttt.supervised(), method, prior_scale=scale, prior_mean="zero",
                         seed=0)

    method = pyebm.Laplace(at=trained, hessian="ggn", structure=structure, rank=50)
    tuned = fit("evidence", method)
    s = tuned.diagnostics["prior_scale"]["0.weight"]
    assert fit(s, method).log_evidence == pytest.approx(tuned.log_evidence, abs=1e-10)
    for factor in (0.95, 1.05):
        assert fit(s * factor, method).log_evidence < tuned.log_evidence - 1e-6
    if structure == "lowrank":
        dense = fit("evidence", pyebm.Laplace(at=trained, hessian="ggn"))
        assert dense.diagnostics["prior_scale"]["0.weight"] == pytest.approx(s, rel=1e-6)


@pytest.mark.filterwarnings("ignore::pyebm.ConvergenceWarning")
def test_prior_curvature_in_closed_form_or_by_autograd_is_the_exact_hessians(float64, monkeypatch):
    """Fixed Normal priors (scaled too, one scale or one per element) take their curvature and energy in closed form,
    w / sigma^2; a scale that is a learnable parameter, another latent's function or a mask over elements goes through
    autograd. Linear in the latents, the GGN is the exact Hessian either way, and the evidence agrees."""
    from pyebm.inference import gauss_newton as gn

    def model(x, y):
        a = pyro.sample("a", dist.Normal(0.5, 2.0))
        with pyro.poutine.scale(scale=3.0):
            b = pyro.sample("b", dist.Normal(torch.zeros(2), 0.7).to_event(1))
        s = pyro.param("s", torch.tensor(1.5), constraint=dist.constraints.positive)
        c = pyro.sample("c", dist.Normal(0.0, s))
        with pyro.poutine.mask(mask=torch.tensor([True, True, False])):
            d = pyro.sample("d", dist.Normal(torch.zeros(3), 0.5))
        e = pyro.sample("e", dist.Normal(torch.tensor([0.1, 0.0]), torch.tensor([0.5, 2.0])).to_event(1))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(x @ torch.cat([a[None], b, c[None], d[:2], e]), 0.3), obs=y)

    x = torch.randn(30, 8, generator=G, dtype=torch.float64)
    y = x @ torch.linspace(-1, 1, 8, dtype=torch.float64)
    at = {"a": torch.tensor(0.2), "b": torch.tensor([0.1, -0.3]), "c": torch.tensor(0.4), "d": torch.zeros(3),
          "e": torch.tensor([0.3, -0.2])}
    seen = {}
    closed_form = gn._fixed_normal_prior

    def spy(node):
        prior = closed_form(node)
        seen[node["name"]] = None if prior is None else prior.curvature
        return prior

    monkeypatch.setattr(gn, "_fixed_normal_prior", spy)
    ggn = pyebm.infer(model, x, y, method=pyebm.Laplace(at=at, hessian="ggn"), progress=False)
    assert seen["c"] is None and seen.get("d") is None  # a learnable scale, a mask over elements: autograd
    assert seen["b"] == pytest.approx(3.0 / 0.49) and seen["a"] == pytest.approx(1 / 4.0)  # one number each
    torch.testing.assert_close(seen["e"], torch.tensor([4.0, 0.25], dtype=torch.float64))  # one per element
    exact = pyebm.infer(model, x, y, method=pyebm.Laplace(at=at), progress=False)
    torch.testing.assert_close(ggn.diagnostics["hessian"], exact.diagnostics["hessian"], rtol=1e-10, atol=1e-10)
    assert ggn.log_evidence == pytest.approx(exact.log_evidence, abs=1e-9)
