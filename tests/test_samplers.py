import math

import pytest
import torch

import pyebm
from pyebm.samplers import ReplayBuffer, langevin_init, langevin_step, sample_langevin

PRECISION = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
MU = torch.tensor([1.0, -2.0], dtype=torch.float64)


def gaussian_energy(x):
    d = x - MU
    return 0.5 * ((d @ PRECISION) * d).sum(-1)


def test_mala_is_stationary_for_the_gaussian():
    # 4000 independent chains from an overdispersed start; after burn-in the final positions are (nearly) iid
    # draws, so the mean's error is sd/sqrt(4000) and the variance's var*sqrt(2/4000): 4 standard errors
    chains = 4000
    x0 = 3 * torch.randn(chains, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    state, info = sample_langevin(gaussian_energy, x0, 400, 0.3, metropolis=True, seed=1)
    cov = torch.linalg.inv(PRECISION)
    sd = cov.diagonal().sqrt()
    x = state.position
    assert ((x.mean(0) - MU).abs() <= 4 * sd / math.sqrt(chains)).all()
    assert ((x.var(0) - sd**2).abs() <= 4 * sd**2 * math.sqrt(2 / chains)).all()
    emp_cov = torch.cov(x.T)[0, 1]
    assert abs(float(emp_cov - cov[0, 1])) <= 4 * float(sd[0] * sd[1]) * math.sqrt((1 + (cov[0, 1] / (sd[0] * sd[1])) ** 2) / chains)
    assert 0.5 < sum(info["acceptance"][-50:]) / 50 < 1.0


@pytest.mark.parametrize("beta", [1.0, 2.5])
def test_unadjusted_langevin_bias_is_the_theoretical_one_and_shrinks_with_the_step(beta):
    # 1-D E = a x^2 / 2 at inverse temperature β: ULA's stationary variance is exactly 1 / (βa (1 - εβa/2)),
    # a bias of order ε above the exact 1/(βa)
    a, chains = 2.0, 20000
    energy = lambda x: 0.5 * a * (x**2).sum(-1)  # noqa: E731
    biases = []
    for scaled in [0.2, 0.1, 0.05]:  # ε βa, the dimensionless step: first-order behaviour needs it small
        eps = scaled / (beta * a)
        x0 = torch.randn(chains, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        state, _ = sample_langevin(energy, x0, 300, eps, beta=beta, seed=2)
        var = float(state.position.var())
        theory = 1 / (beta * a * (1 - eps * beta * a / 2))
        assert var == pytest.approx(theory, abs=4 * theory * math.sqrt(2 / chains))
        biases.append(theory - 1 / (beta * a))
    assert biases[0] > biases[1] > biases[2] > 0
    assert biases[1] / biases[0] == pytest.approx(0.5, abs=0.1)  # first order in ε


def test_non_finite_energy_names_the_step():
    energy = lambda x: -(x**4).sum(-1)  # noqa: E731  unbounded below: chains blow up
    with pytest.raises(pyebm.InferenceError, match="at step"):
        sample_langevin(energy, torch.ones(10, 2, dtype=torch.float64), 100, 0.5, seed=0)


def test_step_is_reproducible_with_a_generator_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    s = langevin_init(gaussian_energy, torch.zeros(5, 2, dtype=torch.float64))
    a, _ = langevin_step(s, gaussian_energy, 0.1, generator=torch.Generator().manual_seed(3))
    b, _ = langevin_step(s, gaussian_energy, 0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.position, b.position)
    assert torch.equal(torch.get_rng_state(), before)


def test_bad_options():
    s = langevin_init(gaussian_energy, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="step_size"):
        langevin_step(s, gaussian_energy, 0.0)
    with pytest.raises(ValueError, match="MALA needs"):
        langevin_step(s, gaussian_energy, 0.1, metropolis=True, noise_scale=0.5)
    with pytest.raises(ValueError, match="one value per chain"):
        langevin_init(lambda x: x.sum(), torch.zeros(3, 2))


def test_clipping_and_bounds_hold():
    s = langevin_init(lambda x: 100.0 * (x**2).sum(-1), torch.full((50, 2), 5.0, dtype=torch.float64))
    new, _ = langevin_step(s, lambda x: 100.0 * (x**2).sum(-1), 0.01, grad_clip=1.0, bounds=(-6.0, 6.0),
                           generator=torch.Generator().manual_seed(0))
    assert (new.position.abs() <= 6.0).all()
    assert ((new.position - 5.0).abs() <= 0.01 + math.sqrt(0.02) * 6).all()  # the drift was clipped to 1


def test_replay_buffer_samples_updates_and_reinitialises():
    buf = ReplayBuffer(100, lambda k, g: torch.zeros(k, 2), reinit_prob=0.0, seed=0)
    idx, x = buf.sample(10)
    buf.update(idx, x + 1.0)
    assert float(buf.buffer.sum()) == pytest.approx(2.0 * len(set(idx.tolist())))
    fresh = ReplayBuffer(100, lambda k, g: torch.full((k, 2), 7.0), reinit_prob=1.0, seed=0)
    fresh.update(torch.arange(100), torch.zeros(100, 2))
    assert (fresh.sample(5)[1] == 7.0).all()


def test_replay_buffer_update_with_repeated_indices_keeps_the_last_write():
    # sample() draws with replacement; a plain indexed assignment with repeats leaves the winner unspecified, which
    # made PCD runs with one seed differ from each other
    buffer = ReplayBuffer(5, lambda n, g: torch.zeros(n, 1), reinit_prob=0.0, seed=0)
    buffer.update(torch.tensor([1, 3, 1, 1]), torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    assert buffer.buffer[:, 0].tolist() == [0.0, 4.0, 0.0, 2.0, 0.0]


def test_pcd_runs_with_one_seed_are_identical():
    from pyebm.energies import MLPEnergy
    from pyebm.train import fit

    x = torch.rand(300, 8, generator=torch.Generator().manual_seed(0))

    def run():
        torch.manual_seed(0)
        energy = MLPEnergy(8, (32,))
        fit(energy, x, "pcd", buffer_size=300, steps=20, batch_size=128, seed=0, progress=False)
        return torch.cat([p.detach().flatten() for p in energy.parameters()])

    assert torch.equal(run(), run())
