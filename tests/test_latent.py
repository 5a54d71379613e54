import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyebm
from pyebm.energies import Ellipse, KMeans, SparseCoding

INF = float("inf")


@pytest.fixture
def kmeans(float64):
    g = torch.Generator().manual_seed(0)
    return KMeans(3 * torch.randn(5, 2, generator=g, dtype=torch.float64)), torch.randn(7, 2, generator=g,
                                                                                     dtype=torch.float64) * 3


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.0, 4.0, 50.0])
def test_discrete_free_energy_is_the_logsumexp(kmeans, beta):
    km, x = kmeans
    e = km(x)  # (K, N)
    low = e.min(0).values  # shift by the minimum so exp does not underflow at large β
    direct = low - torch.log(torch.exp(-beta * (e - low)).sum(0)) / beta
    torch.testing.assert_close(km.free_energy(x, beta), direct, atol=1e-12, rtol=1e-12)


def test_beta_inf_is_the_min_and_the_bounds_hold(kmeans):
    km, x = kmeans
    f_inf = km.free_energy(x, INF)
    torch.testing.assert_close(f_inf, km(x).min(0).values)
    K = km.centres.shape[0]
    for beta in [0.1, 1.0, 10.0]:
        f = km.free_energy(x, beta)
        assert (f <= f_inf + 1e-12).all()
        assert (f_inf - f <= math.log(K) / beta + 1e-12).all()


@pytest.mark.parametrize("beta", [0.25, 1.0, 3.0])
def test_kmeans_free_energy_is_a_gaussian_mixture(kmeans, beta):
    # -βF_β - log K - D/2 log 2πσ² = log p_GMM(x) with σ² = 1/(2β)
    km, x = kmeans
    sd = math.sqrt(1 / (2 * beta))
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.ones(5, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(km.centres, sd), 1))
    torch.testing.assert_close(km.mixture_log_density(x, beta), mix.log_prob(x), atol=1e-12, rtol=1e-12)


def test_continuous_beta_inf_on_the_ellipse_is_the_squared_distance(float64):
    el = Ellipse(2.0, 1.0)
    g = torch.Generator().manual_seed(1)
    angle = torch.rand(50, generator=g, dtype=torch.float64) * 2 * math.pi
    radius = 1.3 + torch.rand(50, generator=g, dtype=torch.float64)  # outside the ellipse, up to 2.3x
    x = torch.stack([2 * radius * torch.cos(angle), radius * torch.sin(angle)], -1)
    f = pyebm.free_energy(lambda theta: el(x, theta), {"theta": ()}, INF, init={"theta": el.angle_guess(x)})
    torch.testing.assert_close(f, el.distance_squared(x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("beta", [0.3, 1.0, 5.0])
def test_continuous_finite_beta_is_exact_on_a_quadratic(beta, float64):
    g = torch.Generator().manual_seed(2)
    A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.7]])
    m = torch.randn(4, 3, generator=g)

    def energy(z):
        d = z - m
        return 0.5 * ((d @ A) * d).sum(-1) + 1.5

    exact = 1.5 - (1.5 * math.log(2 * math.pi / beta) - 0.5 * float(torch.logdet(A))) / beta
    f = pyebm.free_energy(energy, {"z": 3}, beta)
    torch.testing.assert_close(f, torch.full((4,), exact), atol=1e-10, rtol=0)


def test_importance_sampling_checks_laplace_on_the_ellipse(float64):
    el = Ellipse(2.0, 1.0)
    x = torch.tensor([[3.0, 0.5], [-1.0, 2.0], [0.5, -1.8]])
    beta = 2.0
    exact = el.free_energy_exact(x, beta)
    kw = dict(init={"theta": el.angle_guess(x)})
    lap = pyebm.free_energy(lambda theta: el(x, theta), {"theta": ()}, beta, **kw)
    imp, info = pyebm.free_energy(lambda theta: el(x, theta), {"theta": ()}, beta, method="importance", num_samples=4000,
                                  seed=0, return_details=True, **kw)
    # the Laplace error here is ~0.01; importance sampling with ESS ~ 4000 brings it to ~1e-3
    assert ((imp - exact).abs() < 0.3 * (lap - exact).abs()).all()
    assert (info["ess"] > 1000).all()


def test_gradients_through_discrete_free_energy(float64):
    x = torch.randn(4, 2)
    centres = torch.randn(3, 2, requires_grad=True)
    fn = lambda c: pyebm.free_energy(lambda z: ((x - z[:, None]) ** 2).sum(-1), c, 0.7)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (centres,))


@pytest.mark.parametrize("beta", [INF, 0.8])
def test_gradients_through_continuous_free_energy(beta, float64):
    # a non-quadratic energy: the minimiser and the curvature there both move with the parameters
    x = torch.tensor([0.3, -1.2, 2.0])

    def fn(a, m):
        energy = lambda z: 0.5 * a * (z - m * x) ** 2 + 0.25 * z**4 + torch.cos(z)  # noqa: E731
        return pyebm.free_energy(energy, {"z": ()}, beta, tol=1e-12)

    a = torch.tensor(1.7, requires_grad=True)
    m = torch.tensor(0.9, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (a, m), atol=1e-6)


def test_free_energy_does_not_touch_parameter_grads(float64):
    a = torch.tensor(2.0, requires_grad=True)
    pyebm.free_energy(lambda z: a * (z - 1) ** 2 + 0.1 * z**4, {"z": ()}, 1.0)
    assert a.grad is None


@pytest.mark.parametrize("beta, match", [(0.0, "beta > 0"), (-1.0, "negative"), (float("nan"), "NaN")])
def test_bad_beta(beta, match):
    with pytest.raises(ValueError, match=match):
        pyebm.free_energy(lambda z: z.sum(-1), torch.ones(3, 2), beta)


def test_bad_support_and_shapes():
    with pytest.raises(ValueError, match="empty"):
        pyebm.free_energy(lambda z: z.sum(-1), torch.empty(0, 2), 1.0)
    with pytest.raises(ValueError, match="len\\(z\\)"):
        pyebm.free_energy(lambda z: z.sum(), torch.ones(3, 2), 1.0)
    with pytest.raises(ValueError, match="empty dict"):
        pyebm.free_energy(lambda **z: 0.0, {}, 1.0)
    with pytest.raises(ValueError, match="unknown method"):
        pyebm.free_energy(lambda z: (z**2).sum(-1), {"z": 2}, 1.0, method="quadrature")
    with pytest.raises(TypeError, match="support points"):
        pyebm.free_energy(lambda z: z, [1.0, 2.0], 1.0)


def test_sparse_coding_codes_are_soft_thresholds_for_an_orthonormal_dictionary(float64):
    g = torch.Generator().manual_seed(3)
    W = torch.linalg.qr(torch.randn(5, 5, generator=g))[0]
    sc = SparseCoding(W, lam=0.3)
    x = torch.randn(6, 5, generator=g)
    torch.testing.assert_close(sc.codes(x), torch.nn.functional.softshrink(x @ W, 0.3), atol=1e-12, rtol=0)
    assert (sc.min_energy(x) <= sc(x, x @ W) + 1e-12).all()


# --- profile: latents minimised or marginalised out inside a Pyro model --------------------------------
S0, S1, S2, Y = 1.5, 0.7, 0.4, 1.1


def hierarchical():
    theta = pyro.sample("theta", dist.Normal(torch.tensor(0.0), S0))
    z = pyro.sample("z", dist.Normal(theta, S1))
    pyro.sample("y", dist.Normal(z, S2), obs=torch.tensor(Y))


def exact_theta_posterior():
    # z integrates out: y | θ ~ N(θ, S1² + S2²); posterior of θ is Gaussian
    prec = 1 / S0**2 + 1 / (S1**2 + S2**2)
    return Y / (S1**2 + S2**2) / prec, math.sqrt(1 / prec)


@pytest.mark.parametrize("beta", [1.0, INF])
def test_profile_gives_the_gaussian_marginal(beta, float64):
    # for jointly Gaussian (θ, z), U is quadratic in z: marginalising (β = 1, Laplace exact) and minimising
    # (β = ∞) give the same θ-density up to a constant, the exact marginal posterior
    post = pyebm.infer(pyebm.profile(hierarchical, "z", beta=beta), method="laplace", seed=0, progress=False)
    mean, sd = exact_theta_posterior()
    assert set(post.site_shapes) == {"theta"}
    assert float(post.mean()["theta"]) == pytest.approx(mean, abs=1e-7)
    assert float(post.std()["theta"]) == pytest.approx(sd, abs=1e-7)
    if beta == 1.0:  # marginalising is exact, so Laplace's evidence is log p(y)
        log_py = float(dist.Normal(0.0, math.sqrt(S0**2 + S1**2 + S2**2)).log_prob(torch.tensor(Y)))
        assert post.log_evidence == pytest.approx(log_py, abs=1e-7)


@pytest.mark.slow
def test_profiled_model_samples_with_nuts(float64):
    post = pyebm.infer(pyebm.profile(hierarchical, "z", beta=1.0),
                       method=pyebm.NUTS(num_samples=300, warmup_steps=200, num_chains=1), seed=0, progress=False)
    mean, sd = exact_theta_posterior()
    ess = post.diagnostics["ess_bulk"]["theta"]
    assert abs(float(post.mean()["theta"]) - mean) <= 4 * sd / math.sqrt(ess)


def test_profile_bad_sites():
    with pytest.raises(ValueError, match="not latent sites"):
        pyebm.infer(pyebm.profile(hierarchical, "w"), method="map", progress=False)

    def positive():
        pyro.sample("s", dist.Gamma(2.0, 1.0))
        pyro.sample("t", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="on the reals"):
        pyebm.infer(pyebm.profile(positive, "s"), method="map", progress=False)
    with pytest.raises(ValueError, match="beta > 0"):
        pyebm.profile(hierarchical, "z", beta=0.0)


def test_no_grad_mode_returns_a_detached_free_energy(float64):
    a = torch.tensor(2.0, requires_grad=True)
    with torch.no_grad():
        f = pyebm.free_energy(lambda z: a * (z - 1) ** 2 + 0.1 * z**4, {"z": ()}, 1.0)
    assert not f.requires_grad
    assert pyebm.free_energy(lambda z: a * (z - 1) ** 2 + 0.1 * z**4, {"z": ()}, 1.0).requires_grad


def test_sparse_coding_codes_meet_the_lasso_optimality_conditions_for_an_overcomplete_dictionary(float64):
    # F_∞ is the lasso: z* = argmin ½|x - Wz|² + λ|z|₁ iff Wⱼᵀ(x - Wz*) = λ sign(z*ⱼ) on the support and
    # |Wⱼᵀ(x - Wz*)| ≤ λ off it (KKT). Two atoms per dimension, correlated; FISTA's error after 5000 steps is ~1e-8.
    g = torch.Generator().manual_seed(0)
    W = torch.randn(20, 40, generator=g)
    W = W / W.norm(dim=0)
    x = torch.randn(5, 20, generator=g)
    z = SparseCoding(W, lam=0.1).codes(x, steps=5000)
    correlation = (x - z @ W.T) @ W
    support = z != 0
    assert 0 < int(support.sum()) < z.numel()  # both conditions are exercised
    assert float((correlation[support] - 0.1 * z[support].sign()).abs().max()) < 1e-6
    assert float(correlation[~support].abs().max()) <= 0.1 + 1e-6
