"""The training loop: method resolution, reproducibility, checkpoint/resume, clear errors."""

import copy
import random

import numpy as np
import pytest
import torch

import pyebm
from pyebm.energies import MLPEnergy
from pyebm.train import CD, fit


@pytest.fixture
def data():
    return torch.randn(500, 2, generator=torch.Generator().manual_seed(0))


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_unknown_method_and_option_are_named(data):
    with pytest.raises(ValueError, match="unknown training method 'langevin'.*'cd'"):
        fit(MLPEnergy(), data, "langevin", steps=1, progress=False)
    with pytest.raises(TypeError, match="no option.*'sigma'"):
        fit(MLPEnergy(), data, "cd", sigma=0.1, steps=1, progress=False)


def test_bad_data_and_energy_shapes(data):
    with pytest.raises(ValueError, match="NaN"):
        fit(MLPEnergy(), torch.full((10, 2), float("nan")), "dsm", steps=1, progress=False)
    with pytest.raises(ValueError, match="first"):
        fit(MLPEnergy(), (data, data[:10]), "infonce", steps=1, progress=False)
    with pytest.raises(ValueError, match="one energy per example"):
        fit(pyebm.energies.KMeans(torch.zeros(3, 2), learnable=True), data, "dsm", steps=1, progress=False)
    with pytest.raises(TypeError, match="pairs"):
        fit(MLPEnergy(), data, "infonce", steps=1, progress=False)


@pytest.mark.parametrize("method, options", [("pcd", dict(k=3, buffer_size=100)), ("nce", {}), ("dsm", {})])
def test_resumed_run_equals_uninterrupted_run(data, method, options, tmp_path):
    torch.manual_seed(0)
    start = MLPEnergy(hidden=(16,))
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    full = fit(a, data, method, steps=20, batch_size=32, lr=0.01, lr_decay=0.5, seed=3, progress=False, **options)
    path = tmp_path / "ck.pt"

    def interrupt(step, loss):  # the same run, stopped after step 10 (as a crash would stop it)
        return step == 10

    fit(b, data, method, steps=20, batch_size=32, lr=0.01, lr_decay=0.5, seed=3, progress=False, checkpoint=path,
        checkpoint_every=5, callback=interrupt, **options)
    fresh = copy.deepcopy(start)  # a new process would rebuild the energy and load everything else
    resumed = fit(fresh, data, method, steps=20, batch_size=32, lr=0.01, lr_decay=0.5, progress=False, resume=path,
                  **options)
    assert resumed.loss == full.loss
    assert all(torch.equal(p, q) for p, q in zip(_params(fresh), _params(a)))
    if method == "pcd":
        assert torch.equal(resumed.buffer.buffer, full.buffer.buffer)
    in_memory = fit(copy.deepcopy(start), data, method, steps=20, batch_size=32, lr=0.01, lr_decay=0.5, seed=3,
                    progress=False, callback=interrupt, **options)
    again = fit(copy.deepcopy(start), data, method, steps=20, batch_size=32, lr=0.01, lr_decay=0.5, progress=False,
                resume=in_memory.checkpoint(), **options)
    assert again.loss == full.loss


def test_seeded_runs_repeat_and_leave_the_global_rng_alone(data):
    torch.manual_seed(0)
    start = MLPEnergy(hidden=(16,))
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    a, b = copy.deepcopy(start), copy.deepcopy(start)
    ra = fit(a, data, CD(k=2), steps=5, seed=11, progress=False)
    rb = fit(b, data, CD(k=2), steps=5, seed=11, progress=False)
    assert ra.loss == rb.loss and ra.seed == 11
    assert torch.equal(torch.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all() and random.getstate() == states[2]


def test_callback_can_stop_training(data):
    seen = []
    result = fit(MLPEnergy(hidden=(8,)), data, "dsm", steps=50, seed=0, progress=False,
                 callback=lambda step, loss: seen.append(step) or step == 7)
    assert seen == list(range(1, 8)) and len(result.loss) == 7


def test_divergent_negatives_end_with_an_error_naming_the_steps(data):
    class Unbounded(pyebm.Energy):  # linear: exp(-E) is not integrable, Langevin runs away
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1e200, 0.0], dtype=torch.float64))

        def forward(self, x):
            return (x.double() * self.w).sum(-1) * 1e200

    with pytest.raises(pyebm.InferenceError, match=r"training step 1: Langevin step 1 of 5"):
        fit(Unbounded(), data.double(), "cd", k=5, steps=3, progress=False)


def test_non_finite_loss_names_the_step(data):
    class Blows(pyebm.Energy):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(1.0))

        def forward(self, x):
            return self.a * (x**2).sum(-1) + torch.log(self.a - 1.0)  # log(0) = -inf at the start

    with pytest.raises(pyebm.InferenceError, match="loss became inf at training step 1"):
        fit(Blows(), data, "nce", steps=3, progress=False)
