"""adapt/predict: exact on a linear-Gaussian model, leaves the net alone, batched equals per-input, clear errors."""

import copy
import math

import pytest
import torch

import pyebm
from pyebm import ttt
from pyebm.ttt import adapt, neighbours, predict, supervised

SIGMA, S = 0.5, 0.3  # observation noise, prior scale


@pytest.fixture
def linear(float64):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + SIGMA * torch.randn(20, generator=g)
    return net, x, y


def exact_weight_posterior(net, x, y):
    """w ~ N(w0, S² I), y | w ~ N(x w + b, σ²): Gaussian posterior in closed form (bias held at its trained value)."""
    w0, b = net.weight.detach().reshape(-1), net.bias.detach()
    precision = torch.eye(3) / S**2 + x.T @ x / SIGMA**2
    cov = torch.linalg.inv(precision)
    mean = cov @ (w0 / S**2 + x.T @ (y - b) / SIGMA**2)
    return mean, cov


def test_laplace_is_exact_and_the_net_is_unchanged(linear):
    net, x, y = linear
    before = copy.deepcopy(net.state_dict())
    post = adapt(net, (x, y), "weight", supervised("squared", SIGMA), "laplace", prior_scale=S, seed=0)
    mean, cov = exact_weight_posterior(net, x, y)
    assert torch.allclose(post.mean()["weight"].reshape(-1), mean, atol=1e-8)
    assert torch.allclose(post.std()["weight"].reshape(-1), cov.diagonal().sqrt(), atol=1e-8)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # the log evidence is the exact marginal likelihood of y (minus the energy's own Gaussian normaliser)
    b = net.bias.detach()
    w0 = net.weight.detach().reshape(-1)
    marginal = torch.distributions.MultivariateNormal(x @ w0 + b, S**2 * x @ x.T + SIGMA**2 * torch.eye(20))
    gauss_norm = 20 * math.log(SIGMA * math.sqrt(2 * math.pi))
    assert post.log_evidence == pytest.approx(float(marginal.log_prob(y)) + gauss_norm, abs=1e-8)


@pytest.mark.slow
def test_nuts_matches_the_exact_posterior_within_monte_carlo_error(linear):
    net, x, y = linear
    post = adapt(net, (x, y), "weight", supervised("squared", SIGMA),
                 pyebm.NUTS(num_samples=600, warmup_steps=300, num_chains=2), prior_scale=S, seed=0)
    mean, cov = exact_weight_posterior(net, x, y)
    sd = cov.diagonal().sqrt()
    ess = torch.tensor([v for k, v in post.diagnostics["ess_bulk"].items() if k.startswith("weight")])
    # 4 Monte Carlo standard errors, sd/sqrt(ESS): fails for a wrong posterior, passes 99.99% for the right one
    assert ((post.mean()["weight"].reshape(-1) - mean).abs() <= 4 * sd / ess.sqrt()).all()
    assert ((post.std()["weight"].reshape(-1) - sd).abs() <= 4 * sd / (2 * ess).sqrt() + 0.02 * sd).all()


def test_batched_independent_adaptation_equals_one_input_at_a_time(linear):
    net, x, y = linear
    # each example adapts its own weights from its own (input, target): a batch of 20 one-example problems
    batched = adapt(net, (x, y), "weight", supervised("squared", SIGMA), "laplace", prior_scale=S,
                    independent=True)
    for i in [0, 7, 19]:
        single = adapt(net, (x[i : i + 1], y[i : i + 1]), "weight", supervised("squared", SIGMA), "laplace",
                       prior_scale=S, seed=0)
        assert torch.allclose(batched.mode["weight"][i], single.mode["weight"], atol=1e-7)
        assert torch.allclose(batched.std()["weight"][i], single.std()["weight"], atol=1e-7)
        assert batched.diagnostics["log_evidence"][i] == pytest.approx(single.log_evidence, abs=1e-6)
    draws = batched.sample(3, seed=0)["weight"]
    assert draws.shape == (3, 20, 1, 3)


def _classifier_with_bias_posterior():
    """A small classifier whose output bias is adapted by Laplace on the entropy (logits linear in the latent)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    post = adapt(net, x, "2.bias", "entropy", "laplace", prior_scale=0.5, seed=0)
    return net, x, post


def test_predict_averages_over_the_posterior(float64):
    net, x, post = _classifier_with_bias_posterior()
    probs = predict(net, post, x, num_samples=4000, seed=1)
    draws = post.sample(4000, seed=1)["2.bias"]
    by_hand = torch.softmax(net[:2](x) @ net[2].weight.T.detach() + draws[:, None, :], -1).mean(0)
    assert torch.allclose(probs, by_hand, atol=1e-10)
    map_post = adapt(net, x, "2.bias", "entropy", "map", prior_scale=0.5, seed=0)
    plug_in = torch.softmax(net[:2](x) @ net[2].weight.T.detach() + map_post.mode["2.bias"], -1)
    assert torch.allclose(predict(net, map_post, x), plug_in.detach(), atol=1e-10)


def test_neighbour_recipe_spans_global_fit_and_knn(float64):
    # a trained global line; each test point re-fits only the intercept on its k nearest training points
    g = torch.Generator().manual_seed(0)
    tx = torch.rand(200, 1, generator=g) * 6 - 3
    ty = torch.sin(tx[:, 0]) + 0.05 * torch.randn(200, generator=g)
    net = torch.nn.Linear(1, 1)
    with torch.no_grad():
        sol = torch.linalg.lstsq(torch.cat([tx, torch.ones(200, 1)], 1), ty[:, None]).solution
        net.weight.copy_(sol[:1].T), net.bias.copy_(sol[1])
    test = torch.linspace(-2.5, 2.5, 11)[:, None]
    contexts, energy = neighbours(lambda v: v, tx, ty, test, k=10, kind="squared", noise=0.05)
    # slope held, intercept free (wide prior): the prediction becomes the neighbours' mean residual + line = kNN-like
    post = adapt(net, contexts, "bias", energy, "map", prior_scale=100.0, independent=True)
    w = net.weight.detach()[0, 0]
    local = post.mode["bias"][:, 0] + w * test[:, 0]
    knn_line = (contexts.targets - w * contexts.inputs[..., 0]).mean(1) + w * test[:, 0]
    assert torch.allclose(local, knn_line, atol=1e-5)
    # a tight prior keeps the trained global line
    tight = adapt(net, contexts, "bias", energy, "map", prior_scale=1e-4, independent=True)
    assert torch.allclose(tight.mode["bias"], net.bias.detach().expand(11, 1), atol=1e-3)


def test_bad_inputs_give_clear_errors(linear):
    net, x, y = linear
    energy = supervised("squared", SIGMA)
    with pytest.raises(ValueError, match=r"latents \['gamma'\] are not parameters.*'weight', 'bias'"):
        adapt(net, (x, y), ["gamma"], energy)
    with pytest.raises(ValueError, match="selection is empty"):
        adapt(net, (x, y), lambda name, p: False, energy)
    with pytest.raises(ValueError, match="one energy per example"):
        adapt(net, (x, y), "weight", lambda forward, b: energy(forward, b).sum())
    with pytest.raises(ValueError, match="prior_scale"):
        adapt(net, (x, y), "weight", energy, prior_scale=-1.0)
    nan_x = x.clone()
    nan_x[3] = float("nan")
    with pytest.raises((ValueError, pyebm.InferenceError), match="finite|NaN"):
        adapt(net, (nan_x, y), "weight", energy)
    with pytest.raises(pyebm.InferenceError, match=r"inputs \[3\]"):
        adapt(net, (nan_x, y), "weight", energy, independent=True)


def test_batchnorm_in_training_mode_uses_batch_statistics_and_stays_untouched(float64):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    net.train()
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 3 + 1
    before = copy.deepcopy(net.state_dict())
    post = adapt(net, x, ["1.weight", "1.bias"], "entropy", "laplace", prior_scale=0.1, seed=0)
    probs = predict(net, post, x, num_samples=50, seed=0)
    assert probs.shape == (64, 3) and torch.allclose(probs.sum(1), torch.ones(64))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # running stats included
    assert net.training


def test_a_tied_weight_takes_its_value_everywhere_it_is_used(float64):
    """One parameter registered under two names (tied weights): the network as a function of it uses the value in both
    places, as torch.func.functional_call ties them; an untied network skips that step and gives the same."""
    from pyebm.ttt.latents import Functional

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Tanh(), torch.nn.Linear(3, 3, bias=False))
    net = net.double()
    x, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    untied = Functional(net, {"0.weight": net[0].weight.detach()})
    net[2].weight = net[0].weight
    tied = Functional(net, {"0.weight": net[0].weight.detach()})
    assert tied.tied and not untied.tied
    torch.testing.assert_close(tied({"0.weight": w}, x), torch.tanh(x @ w.T) @ w.T)


def test_augmented_energy_averages_over_the_views(float64):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    flip = lambda v, j: v if j == 0 else -v  # noqa: E731 - two deterministic views
    energy = ttt.augmented(ttt.entropy, flip, copies=2)
    by_hand = 0.5 * (ttt.entropy(net, x) + ttt.entropy(net, -x))
    assert torch.allclose(energy(net, x), by_hand)
    post = adapt(net, x, "2.bias", energy, "map", prior_scale=0.5, seed=0)
    assert post.mode["2.bias"].shape == (3,)
    with pytest.raises(ValueError, match="copies"):
        ttt.augmented(ttt.entropy, flip, copies=0)


def test_linearised_regression_predictive_is_the_exact_one_for_a_linear_network(linear):
    # f(x) = x w + b is linear in w, so the GLM predictive N(x m, x Σ xᵀ + σ²) is the exact posterior predictive
    net, x, y = linear
    post = adapt(net, (x, y), "weight", supervised("squared", SIGMA), "laplace", prior_scale=S, seed=0)
    mean, cov = exact_weight_posterior(net, x, y)
    x_new = torch.randn(7, 3, generator=torch.Generator().manual_seed(5))
    f_mean, f_var = predict(net, post, x_new, likelihood="regression", pred_type="glm", noise=SIGMA)
    b = net.bias.detach()
    torch.testing.assert_close(f_mean[:, 0], x_new @ mean + b, atol=1e-8, rtol=0)
    torch.testing.assert_close(f_var[:, 0], (x_new @ cov * x_new).sum(1) + SIGMA**2, atol=1e-10, rtol=1e-8)
    # sampling the weights gives the same within Monte Carlo error (4 se of a mean and of a variance, 20000 draws)
    s_mean, s_var = predict(net, post, x_new, num_samples=20000, seed=0, likelihood="regression", noise=SIGMA)
    sd_f = (f_var[:, 0] - SIGMA**2).sqrt()
    assert ((s_mean - f_mean)[:, 0].abs() <= 4 * sd_f / math.sqrt(20000)).all()
    assert ((s_var - f_var)[:, 0].abs() <= 4 * sd_f**2 * math.sqrt(2 / 20000)).all()


def test_linearised_predictive_of_independent_adaptation_matches_one_input_at_a_time(linear):
    net, x, y = linear
    batched = adapt(net, (x, y), "weight", supervised("squared", SIGMA), "laplace", prior_scale=S,
                    independent=True)
    f_mean, f_var = predict(net, batched, x, likelihood="regression", pred_type="glm")
    for i in [0, 11]:
        single = adapt(net, (x[i : i + 1], y[i : i + 1]), "weight", supervised("squared", SIGMA), "laplace",
                       prior_scale=S, seed=0)
        m, v = predict(net, single, x[i : i + 1], likelihood="regression", pred_type="glm")
        torch.testing.assert_close(f_mean[i], m[0], atol=1e-7, rtol=0)
        torch.testing.assert_close(f_var[i], v[0], atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("latents", [["2.weight", "2.bias"], ["2.weight"], None, ["0.weight", "2.bias"]])
def test_glm_jacobians_from_layer_pullbacks_are_the_per_example_jacobians(float64, monkeypatch, latents):
    """Adapted nn.Linear weights take every example's Jacobian from one forward and one backward pass per output
    (a last layer: none, and its dense posterior's output covariance comes from the layer's inputs, the Jacobian's
    Kronecker form); the GLM predictive equals the one from per-example jacrev to round-off. A network whose
    adapted weight is not a Linear's (a LayerNorm's), or is also used outside its layer, takes the per-example
    path."""
    from pyebm.ttt import linearized

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    x = torch.randn(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    names = latents or [k for k, _ in net.named_parameters()]
    post = adapt(net, (x, torch.tensor([0, 1, 2] * 3)), names, supervised(), pyebm.Laplace(
        at={k: v.detach() for k, v in net.named_parameters() if k in names}, hessian="ggn"), prior_scale=1.0,
        prior_mean="zero", seed=0)
    calls = []
    layers = linearized._layer_jacobians
    monkeypatch.setattr(linearized, "_layer_jacobians", lambda *a: calls.append(layers(*a)) or calls[-1])
    probit = predict(net, post, x, pred_type="glm", link_approx="probit")
    assert calls[-1] is not None and (calls[-1][2] is not None) == (latents is not None and "0.weight" not in latents)
    mean, var = predict(net, post, x, likelihood="regression", pred_type="glm")
    monkeypatch.setattr(linearized, "_layer_jacobians", lambda *a: None)
    torch.testing.assert_close(probit, predict(net, post, x, pred_type="glm", link_approx="probit"), rtol=1e-12,
                               atol=1e-12)
    for mine, theirs in zip((mean, var), predict(net, post, x, likelihood="regression", pred_type="glm")):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)

    norm = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 3)).double()
    post = adapt(norm, x, ["1.weight", "2.bias"], "entropy", "laplace", prior_scale=0.5, seed=0)
    monkeypatch.setattr(linearized, "_layer_jacobians", lambda *a: calls.append(layers(*a)) or calls[-1])
    predict(norm, post, x, pred_type="glm")
    assert calls[-1] is None

    class Outside(torch.nn.Module):  # the last layer's weight also shifts every output
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)

        def forward(self, v):
            return self.b(torch.tanh(self.a(v))) + self.b.weight.sum()

    outside = Outside().double()
    post = adapt(outside, x, ["b.weight", "b.bias"], "entropy", "laplace", prior_scale=0.5, seed=0)
    probit = predict(outside, post, x, pred_type="glm", link_approx="probit")
    assert calls[-1] is None
    monkeypatch.setattr(linearized, "_layer_jacobians", lambda *a: None)
    torch.testing.assert_close(probit, predict(outside, post, x, pred_type="glm", link_approx="probit"), rtol=1e-12,
                               atol=1e-12)


def test_linearised_classification_links(float64):
    net, x, post = _classifier_with_bias_posterior()
    # the logits are linear in the output bias: the GLM is exact, so its Monte Carlo link is the weight average
    exact = predict(net, post, x, num_samples=40000, seed=1)
    mc = predict(net, post, x, num_samples=40000, seed=2, pred_type="glm", link_approx="mc")
    assert (mc - exact).abs().max() < 0.01  # two independent 40000-draw averages of probabilities
    probit = predict(net, post, x, pred_type="glm", link_approx="probit")
    assert (probit - exact).abs().max() < 0.05  # an approximation: sd 0.5 logits, error a few hundredths
    bridge = predict(net, post, x, pred_type="glm", link_approx="bridge")
    torch.testing.assert_close(bridge.sum(-1), torch.ones(30), atol=1e-12, rtol=0)
    map_post = adapt(net, x, "2.bias", "entropy", "map", prior_scale=0.5, seed=0)  # no spread: the plug-in
    torch.testing.assert_close(predict(net, map_post, x, pred_type="glm"), predict(net, map_post, x), atol=1e-12,
                               rtol=0)
    with pytest.raises(ValueError, match="pred_type must be"):
        predict(net, post, x, pred_type="laplace")
    with pytest.raises(ValueError, match="link_approx must be"):
        predict(net, post, x, pred_type="glm", link_approx="sigmoid")


@pytest.mark.parametrize("prior_mean", ["trained", "zero"])
def test_evidence_chooses_the_prior_scale_that_maximises_the_exact_marginal_likelihood(linear, prior_mean):
    # linear-Gaussian: Laplace's evidence is the exact marginal likelihood of y at every scale, so the tuned scale
    # must be its maximiser (found here by a fine 1-D search on the closed form); the prior centred at the trained
    # weights (test-time adaptation) or at zero (a weight-decay prior, Laplace of a trained network)
    from scipy import optimize

    net, x, y = linear
    b = net.bias.detach()
    w0 = net.weight.detach().reshape(-1) if prior_mean == "trained" else torch.zeros(3)

    def neg_log_ml(log_s):
        s = math.exp(log_s)
        mvn = torch.distributions.MultivariateNormal(x @ w0 + b, s**2 * x @ x.T + SIGMA**2 * torch.eye(20))
        return -float(mvn.log_prob(y))

    best = optimize.minimize_scalar(neg_log_ml, bounds=(-5, 3), method="bounded", options={"xatol": 1e-10})
    post = adapt(net, (x, y), "weight", supervised("squared", SIGMA), "laplace", prior_scale="evidence",
                 prior_mean=prior_mean, seed=0)
    assert post.diagnostics["prior_scale"]["weight"] == pytest.approx(math.exp(best.x), rel=1e-4)
    s = post.diagnostics["prior_scale"]["weight"]
    cov = torch.linalg.inv(torch.eye(3) / s**2 + x.T @ x / SIGMA**2)
    torch.testing.assert_close(post.mean()["weight"].reshape(-1), cov @ (w0 / s**2 + x.T @ (y - b) / SIGMA**2),
                               atol=1e-7, rtol=0)
    gauss_norm = 20 * math.log(SIGMA * math.sqrt(2 * math.pi))
    assert post.log_evidence == pytest.approx(-best.fun + gauss_norm, abs=1e-7)
    path = post.diagnostics["log_evidence_path"]
    assert path[-1] >= path[0]  # tuning raised the evidence from the starting scale's
    # one scale per latent name: the weight and the bias get their own
    both = adapt(net, (x, y), ["weight", "bias"], supervised("squared", SIGMA), "laplace",
                 prior_scale=ttt.Evidence(per_latent=True), seed=0)
    assert set(both.diagnostics["prior_scale"]) == {"weight", "bias"}
    assert both.log_evidence >= adapt(net, (x, y), ["weight", "bias"], supervised("squared", SIGMA), "laplace",
                                      prior_scale="evidence", seed=0).log_evidence - 1e-8
    with pytest.raises(ValueError, match="needs method='laplace'"):
        adapt(net, (x, y), "weight", supervised("squared", SIGMA), "map", prior_scale="evidence")
    with pytest.raises(ValueError, match="prior_mean must be"):
        adapt(net, (x, y), "weight", supervised("squared", SIGMA), "map", prior_mean="trainde")
    with pytest.raises(ValueError, match="shared adaptation"):
        adapt(net, (x, y), "weight", supervised("squared", SIGMA), "map", prior_mean="zero", independent=True)


@pytest.mark.parametrize("hessian", ["full", "diag", "kron"])
def test_evidence_tunes_the_observation_noise_with_the_prior_scale(linear, hessian):
    # linear-Gaussian: the Laplace evidence with the likelihood's normaliser is the exact marginal likelihood of y at
    # every (s, sigma), so the tuned pair must be its joint maximiser (found here by Nelder-Mead on the closed form);
    # the data's curvature scales as 1/sigma^2 in every structure (diag: the posterior is then mean-field, so only
    # "full" is exact; "kron" of a one-layer network with one output is exact too: its input factor is X^T X / N)
    from scipy import optimize

    net, x, y = linear
    b = net.bias.detach()

    def neg_log_ml(p):
        s, sigma = math.exp(p[0]), math.exp(p[1])
        mvn = torch.distributions.MultivariateNormal(b.expand(20), s**2 * x @ x.T + sigma**2 * torch.eye(20))
        return -float(mvn.log_prob(y))

    best = optimize.minimize(neg_log_ml, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    method = pyebm.Laplace(hessian="ggn", structure=hessian) if hessian != "full" else "laplace"
    post = adapt(net, (x, y), "weight", supervised("squared", 1.0), method, prior_mean="zero",
                 prior_scale=ttt.Evidence(noise=True), seed=0)
    if hessian == "diag":  # mean field: a lower bound's maximiser, near but not at the exact one
        assert post.diagnostics["noise"] == pytest.approx(math.exp(best.x[1]), rel=0.05)
        return
    assert post.diagnostics["prior_scale"]["weight"] == pytest.approx(math.exp(best.x[0]), rel=1e-5)
    assert post.diagnostics["noise"] == pytest.approx(math.exp(best.x[1]), rel=1e-5)
    assert post.diagnostics["log_evidence_path"][-1] == pytest.approx(-best.fun, abs=1e-6)
    with pytest.raises(ValueError, match="noise of a Gaussian likelihood"):
        adapt(net, (x, y), "weight", supervised("cross_entropy"), "laplace", prior_scale=ttt.Evidence(noise=True))


def test_post_hoc_laplace_of_a_trained_layer_under_a_zero_mean_prior(linear):
    # at= the weights as given, no optimisation; the precision is the exact XᵀX/σ² + I/s² wherever it is taken
    net, x, y = linear
    trained = {"weight": net.weight.detach()}
    post = adapt(net, (x, y), "weight", supervised("squared", SIGMA), pyebm.Laplace(at=trained), prior_scale=S,
                 prior_mean="zero", seed=0)
    torch.testing.assert_close(post.mode["weight"], trained["weight"], atol=0, rtol=0)
    precision = x.T @ x / SIGMA**2 + torch.eye(3) / S**2
    torch.testing.assert_close(torch.as_tensor(post.diagnostics["hessian"]), precision, atol=1e-10, rtol=1e-10)
