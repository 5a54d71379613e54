"""Every training objective recovers parameters whose answer is known exactly.

Exact answers are computed from the same training data (sample mean and covariance, PPCA's closed form, cluster
means), so the only error left is the optimiser's: stochastic gradients with a learning rate decayed 100-fold.
Tolerances are about three times the errors measured on these seeds and far below what a wrong objective gives
(a sign error diverges, a missing term shifts the answer by O(1)).
"""

import math

import pytest
import torch

import pyebm
from pyebm.energies import GaussianDecoder, KMeans, SparseCoding
from pyebm.train import fit

MU = torch.tensor([1.0, -2.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=torch.float64)


class LearnableGaussian(pyebm.Energy):
    """E(x) = ½ (x-μ)ᵀ L Lᵀ (x-μ), L lower triangular with a positive diagonal; starts at N(0, I)."""

    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(2))
        self.raw = torch.nn.Parameter(torch.zeros(3))

    def chol(self):
        return torch.diag_embed(self.raw[:2].exp()) + torch.tensor([[0.0, 0.0], [1.0, 0.0]]) * self.raw[2]

    def precision(self):
        L = self.chol()
        return L @ L.T

    def forward(self, x):
        return 0.5 * (((x - self.mu) @ self.chol()) ** 2).sum(-1)


@pytest.fixture
def gaussian_data(float64):
    g = torch.Generator().manual_seed(0)
    return MU + torch.randn(4000, 2, generator=g) @ torch.linalg.cholesky(COV).T


def _relative(cov, target):
    sd = target.diagonal().sqrt()
    return float(((cov - target).abs() / sd.outer(sd)).max())


@pytest.mark.parametrize("method, options, cov_tol", [
    ("cd", dict(k=5, step_size=0.05, metropolis=True), 0.05),
    ("pcd", dict(k=5, step_size=0.05, metropolis=True, buffer_size=2000), 0.1),  # chains lag the moving model
    ("nce", dict(ratio=4), 0.05),
    ("dsm", dict(sigma=0.1), 0.05),
    ("ssm", dict(), 0.05),
    ("generator", dict(layers=2, hidden=32), 0.05),  # a small flow: the default 6 x 64 diverges at lr 0.05
])
def test_gaussian_mean_and_precision_are_recovered(gaussian_data, method, options, cov_tol):
    x = gaussian_data
    energy = LearnableGaussian()
    result = fit(energy, x, method, steps=1000, lr=0.05, lr_decay=0.01, seed=1, progress=False, **options)
    target_mean, target_cov = x.mean(0), torch.cov(x.T, correction=0)
    if method == "dsm":  # DSM fits the noised data: covariance Σ + σ²I (exactly, not approximately)
        target_cov = target_cov + options["sigma"] ** 2 * torch.eye(2)
    with torch.no_grad():
        assert float((energy.mu - target_mean).abs().max()) < 0.05
        assert _relative(torch.linalg.inv(energy.precision()), target_cov) < cov_tol
    assert len(result.loss) == 1000 and result.evaluations > 0
    if method == "nce":  # the learned normaliser is log Z of the learned energy: ½ log det(2π Σ)
        log_z = 0.5 * torch.logdet(2 * math.pi * torch.linalg.inv(energy.precision()))
        assert float(result.state.log_z.detach()) == pytest.approx(float(log_z), abs=0.02)
    if method == "pcd":
        assert result.buffer is not None and len(result.buffer) == 2000
    if method == "generator":  # the generator samples the learned model: its draws have the data's moments
        with torch.no_grad():
            draws, _ = result.state.generator.sample(20_000, torch.Generator().manual_seed(2))
        assert float((draws.mean(0) - target_mean).abs().max()) < 0.05
        assert _relative(torch.cov(draws.T), target_cov) < 0.1


def test_infonce_recovers_the_log_density_ratio(float64):
    # (x, y) jointly Gaussian with correlation ρ: log p(y|x)/p(y) = ρxy/(1-ρ²) - ρ²y²/(2(1-ρ²)) + c(x); the critic
    # family -E = w·xy + v·y² contains it, and InfoNCE's minimiser is it for any batch size.
    rho = 0.8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, generator=g)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(4000, generator=g)

    class Critic(pyebm.Energy):
        def __init__(self):
            super().__init__()
            self.w, self.v = torch.nn.Parameter(torch.zeros(())), torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, y):
            return -(self.w * x * y + self.v * y**2)

    critic = Critic()
    fit(critic, (x, y), "infonce", steps=1500, lr=0.05, lr_decay=0.01, seed=0, progress=False)
    assert float(critic.w) == pytest.approx(rho / (1 - rho**2), rel=0.03)  # measured 0.3%
    assert float(critic.v) == pytest.approx(-(rho**2) / (2 * (1 - rho**2)), rel=0.03)


def test_generalised_margin_loss_finds_the_max_margin_answer(float64):
    # x = ±1 with label 1 for x > 0; E(x, c) = -w·x·s_c with s = (-1, +1). The hinge loss max(0, m - 2w|x|) plus a
    # small L2 penalty on w is minimised exactly at the smallest w meeting the margin: w = m/2.
    x = torch.tensor([[-1.0], [1.0]]).repeat(50, 1)
    labels = (x[:, 0] > 0).long()

    class Classifier(pyebm.Energy):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return -self.w * x * torch.tensor([-1.0, 1.0])

    model = Classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.01)
    fit(model, (x, labels), "margin", margin=2.0, steps=600, optimizer=opt, lr_decay=0.01, seed=0, progress=False)
    assert float(model.w) == pytest.approx(1.0, abs=0.02)


def test_margin_with_langevin_negatives_opens_a_gap(gaussian_data):
    energy = LearnableGaussian()
    fit(energy, gaussian_data, "margin", margin=1.0, k=10, step_size=0.05, steps=300, lr=0.02, seed=0, progress=False)
    with torch.no_grad():  # data energies now sit below those of points 3 sd away
        far = gaussian_data[:500] + 3 * torch.randn(500, 2, generator=torch.Generator().manual_seed(1))
        assert float(energy(far).mean() - energy(gaussian_data[:500]).mean()) > 1.0


def test_kmeans_recovers_the_cluster_means(float64):
    means = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    g = torch.Generator().manual_seed(0)
    k = torch.randint(3, (3000,), generator=g)
    x = means[k] + 0.5 * torch.randn(3000, 2, generator=g)
    energy = KMeans(x[:3], learnable=True)  # three data points as the start
    fit(energy, x, "kmeans", steps=1000, lr=0.05, lr_decay=0.01, seed=0, progress=False)
    centres = energy.centres.detach()
    order = torch.cdist(centres, means).argmin(1)
    assert sorted(order.tolist()) == [0, 1, 2]
    cluster_means = torch.stack([x[k == j].mean(0) for j in range(3)])[order]  # the k-means fixed point here
    assert float((centres - cluster_means).abs().max()) < 0.02  # measured 0.004


def test_sparse_coding_recovers_an_orthonormal_dictionary(float64):
    D = 8
    g = torch.Generator().manual_seed(0)
    W = torch.linalg.qr(torch.randn(D, D, generator=g))[0]
    codes = torch.zeros(2000, D)
    active = torch.rand(2000, D, generator=g).argsort(1)[:, :2]  # two atoms per example
    values = (1 + torch.rand(2000, 2, generator=g)) * torch.randn(2000, 2, generator=g).sign()
    codes.scatter_(1, active, values)
    x = codes @ W.T + 0.01 * torch.randn(2000, D, generator=g)
    energy = SparseCoding(torch.randn(D, D, generator=g), lam=0.1, learnable=True)
    fit(energy, x, "sparse_coding", steps=400, lr=0.05, lr_decay=0.02, batch_size=128, seed=0, progress=False)
    W_hat = energy.dictionary.detach()
    assert torch.allclose(W_hat.norm(dim=0), torch.ones(D))  # the projection kept atoms on the sphere
    assert float((W_hat.T @ W).abs().max(0).values.min()) > 0.98  # every true atom found (|cos|; measured 0.999)


def test_vae_with_a_linear_decoder_is_probabilistic_pca(float64):
    # The ELBO optimum of a linear-Gaussian VAE is PPCA's maximum-likelihood fit (Tipping & Bishop): top
    # eigenvalues of the sample covariance kept, the rest averaged into σ².
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 2, generator=g) @ torch.randn(5, 2, generator=g).T + 0.5 * torch.randn(4000, 5, generator=g)
    x = x - x.mean(0)
    S = torch.cov(x.T, correction=0)
    lam, U = torch.linalg.eigh(S)
    lam, U = lam.flip(0), U.flip(1)
    sigma2 = lam[2:].mean()
    P = U[:, :2] @ U[:, :2].T
    C = U[:, :2] @ torch.diag(lam[:2]) @ U[:, :2].T + sigma2 * (torch.eye(5) - P)
    torch.manual_seed(0)
    decoder = GaussianDecoder(2, 5)
    fit(decoder, x, "vae", latent_dim=2, hidden=(), steps=2000, lr=0.05, lr_decay=0.02, seed=0, progress=False)
    C_hat = decoder.marginal_covariance().detach()

    def nll(cov):
        return float(-torch.distributions.MultivariateNormal(torch.zeros(5), cov).log_prob(x).mean())

    assert nll(C_hat) - nll(C) < 0.02  # nats per example; measured 0.006
    assert _relative(C_hat, C) < 0.05


def test_vae_refuses_an_unnormalised_energy(gaussian_data):
    with pytest.raises(ValueError, match="normalised"):
        fit(LearnableGaussian(), gaussian_data, "vae", steps=1, progress=False)


def test_generator_negatives_refuse_bad_settings_and_one_coordinate(float64):
    with pytest.raises(ValueError, match="layers"):
        pyebm.train.GeneratorNegatives(layers=0)
    with pytest.raises(ValueError, match="at least 2 coordinates"):
        fit(LearnableGaussian(), torch.randn(100, 1), "generator", steps=1, progress=False)
