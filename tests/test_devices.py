"""Results live where the user's tensors live. Each test runs on every available device (see the ``device`` fixture:
CPU always, CUDA where present) against the same exact answers as on the CPU."""

import pytest
import torch

import pyebm
from pyebm.energies import Gaussian


def gaussian_on(device):
    precision = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    return Gaussian(torch.tensor([1.0, -2.0], dtype=torch.float64), precision).to(device)


@pytest.mark.parametrize("method", ["map", "laplace"])
def test_model_from_energy_follows_the_energy_to_its_device(method, device, float64):
    e = gaussian_on(device)
    post = pyebm.infer(pyebm.model_from_energy(e, {"x": 2}), method=method, seed=0, progress=False)
    mean = post.mean()["x"]
    assert mean.device.type == device.type
    torch.testing.assert_close(mean, e.mu, atol=1e-6, rtol=0)
    if method == "laplace":
        assert post.log_evidence == pytest.approx(e.log_normalizer(), abs=1e-8)


def test_many_chain_samplers_keep_their_draws_on_the_device(device, float64):
    model = pyebm.model_from_energy(gaussian_on(device), {"x": 2})
    chees = pyebm.infer(model, method=pyebm.ChEES(num_samples=50, warmup_steps=50, num_chains=4), seed=0,
                        progress=False)
    smc = pyebm.infer(model, method=pyebm.SMC(reference=5.0, num_particles=64), seed=0, progress=False)
    assert chees.approximation.draws["x"].device.type == device.type
    assert smc.approximation.draws["x"].device.type == device.type
    assert abs(smc.log_evidence - gaussian_on("cpu").log_normalizer()) <= 3 * smc.diagnostics["log_evidence_se"]


def test_free_energy_and_langevin_on_the_device(device, float64):
    e = gaussian_on(device)
    x = torch.tensor([0.5, 1.0], device=device, dtype=torch.float64)
    f = pyebm.free_energy(lambda z: e(torch.stack(torch.broadcast_tensors(x, z[..., 0]), -1)), {"z": 1})
    assert f.device.type == device.type
    A = e.precision.cpu()  # integrating z out of the quadratic: the Schur complement, and the Gaussian's volume
    exact = 0.5 * (A[0, 0] - A[0, 1] ** 2 / A[1, 1]) * (x.cpu() - 1.0) ** 2 - 0.5 * torch.log(2 * torch.pi / A[1, 1])
    torch.testing.assert_close(f.cpu(), exact, atol=1e-8, rtol=0)
    start = torch.zeros(16, 2, device=device, dtype=torch.float64)
    a, _ = pyebm.samplers.sample_langevin(e, start, 20, 0.1, seed=3)
    b, _ = pyebm.samplers.sample_langevin(e, start, 20, 0.1, seed=3)
    assert a.position.device.type == device.type and torch.equal(a.position, b.position)  # seeded: reproducible


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_seeded_call_leaves_the_cuda_generator_as_it_was(float64):
    """A seeded call draws reproducibly on the GPU and gives the caller's CUDA generator back unchanged."""
    torch.cuda.init()
    before = torch.cuda.get_rng_state_all()
    runs = [pyebm.infer(pyebm.model_from_energy(gaussian_on("cuda"), {"x": 2}), method=pyebm.NUTS(
        num_samples=20, warmup_steps=20), seed=3, progress=False).draws()["x"] for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(before, torch.cuda.get_rng_state_all()))
