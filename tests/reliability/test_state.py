"""No public entry leaks global state: RNGs, Pyro's param store and handler stack, validation, dtype, grad mode."""

import random

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.poutine.runtime import _PYRO_STACK

import pyebm


def snapshot():
    store = pyro.get_param_store()
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].copy(), "random": random.getstate(),
            "params": {k: v.detach().clone() for k, v in store.items()}, "stack": len(_PYRO_STACK),
            "validation": pyro.poutine.util.is_validation_enabled(), "dtype": torch.get_default_dtype(),
            "grad": torch.is_grad_enabled()}


def same(a, b) -> list[str]:
    diff = [k for k in ("stack", "validation", "dtype", "grad") if a[k] != b[k]]
    diff += [k for k in ("torch",) if not torch.equal(a[k], b[k])]
    diff += ["numpy"] if not np.array_equal(a["numpy"], b["numpy"]) else []
    diff += ["random"] if a["random"] != b["random"] else []
    if set(a["params"]) != set(b["params"]) or any(not torch.equal(a["params"][k], b["params"][k]) for k in a["params"]):
        diff.append("params")
    return diff


def line(x, y):
    noise = pyro.param("noise", torch.tensor(0.5), constraint=dist.constraints.positive)
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, noise), obs=y)


def hierarchy(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    with pyro.plate("groups", len(y)):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        pyro.sample("y", dist.Normal(z, 1.0), obs=y)


X, Y = torch.linspace(-1, 1, 20), torch.linspace(-1, 1, 20) * 0.7
torch.manual_seed(0)  # the networks the entries use are made here, not inside them
MLP, NET = pyebm.energies.MLPEnergy(2, (8,)), torch.nn.Linear(3, 2)


def energy_model():
    return pyebm.model_from_energy(lambda x: 0.5 * (x**2).sum(), {"x": 2})


ENTRIES = {
    "infer map": lambda: pyebm.infer(line, X, Y, method="map", seed=1, progress=False),
    "infer laplace + sample": lambda: pyebm.infer(line, X, Y, method="laplace", seed=1, progress=False).sample(5),
    "infer svi (learns a param)": lambda: pyebm.infer(line, X, Y, method=pyebm.SVI(steps=30), seed=1,
                                                      progress=False),
    "infer nuts + arviz": lambda: pyebm.infer(line, X, Y, method=pyebm.NUTS(num_samples=20, warmup_steps=20,
                                                                              num_chains=1),
                                              seed=1, progress=False).to_arviz(),
    "infer under no_grad": lambda: _no_grad(lambda: pyebm.infer(energy_model(), method="laplace", progress=False)),
    "predictive": lambda: pyebm.infer(line, X, Y, method="laplace", seed=1, progress=False).predictive(num_samples=5),
    "free_energy": lambda: pyebm.free_energy(lambda z: 0.5 * (z**2).sum(-1), {"z": 2}, 2.0, method="importance",
                                             num_samples=10),
    "profile": lambda: pyebm.infer(pyebm.profile(hierarchy, "z", beta=1.0), Y, method=pyebm.NUTS(
        num_samples=10, warmup_steps=10, num_chains=1), seed=0, progress=False),
    "sample_langevin": lambda: pyebm.samplers.sample_langevin(lambda x: 0.5 * (x**2).sum(-1), torch.zeros(8, 2), 5,
                                                              0.1),
    "train.fit": lambda: pyebm.train.fit(MLP, torch.linspace(-1, 1, 128).reshape(64, 2), "dsm", steps=3,
                                         progress=False),
    "ttt.adapt": lambda: pyebm.ttt.adapt(NET, torch.linspace(-1, 1, 18).reshape(6, 3), "bias", "entropy", "laplace"),
    "compare + summary": lambda: pyebm.compare(pyebm.infer(energy_model(), method="laplace", progress=False))
    .shape,
    "temper context": lambda: _temper(),
}


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def _temper():
    with pyebm.temper(beta=2.0):
        return pyebm.infer(energy_model(), method="laplace", progress=False)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_no_public_entry_leaks_global_state(name):
    pyro.param("noise", torch.tensor(0.1), constraint=dist.constraints.positive)
    pyro.param("unrelated", torch.tensor([1.0, 2.0]))
    torch.manual_seed(12)
    np.random.seed(3)
    random.seed(4)
    before = snapshot()
    ENTRIES[name]()
    assert same(before, snapshot()) == []


def test_importing_the_numpyro_backend_does_not_move_numpys_rng():
    import subprocess
    import sys

    code = ("import numpy as np; np.random.seed(0); a = np.random.get_state()[1].copy(); import pyebm.numpyro; "
            "assert (np.random.get_state()[1] == a).all()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_a_seeded_block_inside_another_seeds_alike_and_the_outermost_restores():
    """An inner seeded block draws what it would alone (seeded the same way) without saving and restoring the
    generators itself; the outermost gives the caller's states back, the inner one's draws included."""
    from pyebm.state import seeded

    with seeded(3):
        alone = (torch.rand(2), np.random.rand(2), random.random())
    before = snapshot()
    with seeded(1):
        torch.rand(5)
        with seeded(3):
            inner = (torch.rand(2), np.random.rand(2), random.random())
        torch.rand(5)
    assert torch.equal(inner[0], alone[0]) and np.array_equal(inner[1], alone[1]) and inner[2] == alone[2]
    assert same(before, snapshot()) == []
    with seeded(3):  # out of every block, a block saves and restores again
        torch.rand(2)
    assert same(before, snapshot()) == []
