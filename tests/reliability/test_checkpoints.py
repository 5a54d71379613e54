"""Training checkpoints: a kill mid-write leaves a loadable file; any corruption, truncation, foreign file or pickled
code is a CheckpointError; a checkpoint resumes only the run it came from."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import pyebm
from pyebm.train.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    energy = pyebm.energies.MLPEnergy(2, (16,))
    data = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "ck.pt"
    pyebm.train.fit(energy, data, "dsm", steps=4, seed=0, progress=False, checkpoint=path, checkpoint_every=2)
    return energy, data, path


def test_every_single_bit_flip_is_caught(trained):
    _, _, path = trained
    raw = path.read_bytes()
    rng = np.random.default_rng(0)
    for position in rng.integers(0, len(raw), 60):
        flipped = bytearray(raw)
        flipped[position] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(flipped))
        with pytest.raises(pyebm.CheckpointError):
            load_checkpoint(path)
    path.write_bytes(raw)
    assert load_checkpoint(path)["step"] == 4


def test_truncated_foreign_and_missing_files_are_checkpoint_errors(trained, tmp_path):
    _, _, path = trained
    raw = path.read_bytes()
    for cut in (0, 10, len(raw) // 2, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(pyebm.CheckpointError):
            load_checkpoint(path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"step": 3, "energy": {}}, foreign)
    with pytest.raises(pyebm.CheckpointError, match="not a pyebm training checkpoint"):
        load_checkpoint(foreign)
    foreign.write_bytes(os.urandom(1000))
    with pytest.raises(pyebm.CheckpointError):
        load_checkpoint(foreign)
    with pytest.raises(pyebm.CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_a_pickle_that_runs_code_is_refused_unrun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(pyebm.CheckpointError):
        load_checkpoint(path)
    import hashlib
    import io

    from pyebm.train.checkpoint import MAGIC

    buffer = io.BytesIO()
    torch.save({"step": 1, "energy": _Exploit()}, buffer)  # a well-formed file whose payload would run code
    path.write_bytes(MAGIC + hashlib.sha256(buffer.getvalue()).digest() + buffer.getvalue())
    with pytest.raises(pyebm.CheckpointError, match="cannot be read safely"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned_by_checkpoint").exists()


def test_a_checkpoint_resumes_only_its_own_method_and_options(trained):
    energy, data, path = trained
    with pytest.raises(pyebm.CheckpointError, match="method 'dsm'.*Pass method='dsm'"):
        pyebm.train.fit(energy, data, "cd", steps=6, progress=False, resume=path)
    with pytest.raises(pyebm.CheckpointError, match="sigma"):
        pyebm.train.fit(energy, data, "dsm", steps=6, progress=False, resume=path, sigma=0.5)
    resumed = pyebm.train.fit(energy, data, "dsm", steps=6, progress=False, resume=path)
    assert resumed.steps == 6


def test_the_previous_checkpoint_is_kept(trained):
    _, _, path = trained
    assert load_checkpoint(path)["step"] == 4
    assert load_checkpoint(path.with_name(path.name + ".prev"))["step"] == 4  # the final save after step 4
    save_checkpoint(path, {"step": 99})
    assert load_checkpoint(path.with_name(path.name + ".prev"))["step"] == 4


def test_dropout_resumes_bit_for_bit(tmp_path):
    # an energy that draws from torch's global RNG (dropout): the checkpoint carries that state too
    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Dropout(0.3), torch.nn.SiLU(),
                                   torch.nn.Linear(32, 1), torch.nn.Flatten(0))

    data = torch.randn(100, 2, generator=torch.Generator().manual_seed(1))
    full = pyebm.train.fit(make(), data, "dsm", steps=8, seed=5, progress=False)
    path = tmp_path / "d.pt"
    pyebm.train.fit(make(), data, "dsm", steps=8, seed=5, progress=False, checkpoint=path, checkpoint_every=3,
                    callback=lambda step, loss: step == 3)
    resumed = pyebm.train.fit(make(), data, "dsm", steps=8, progress=False, resume=path)
    assert resumed.loss == full.loss


WRITER = textwrap.dedent("""
    import sys, torch
    from pyebm.train.checkpoint import save_checkpoint
    path, step = sys.argv[1], 0
    big = torch.randn(4_000_000)  # 16 MB: a write takes long enough to be interrupted
    while True:
        step += 1
        save_checkpoint(path, {"step": step, "weights": big + step})
        print(step, flush=True)
""")


def test_a_kill_during_saving_leaves_a_loadable_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    for trial in range(3):
        path = tmp_path / f"ck{trial}.pt"
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "1" or path.exists()
        time.sleep(float(rng.uniform(0.05, 0.6)))  # somewhere in the middle of a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_checkpoint(path)  # never half a file: the last complete checkpoint
        assert float((state["weights"] - state["step"]).abs().max()) < 10  # its weights are its own step's
        previous = path.with_name(path.name + ".prev")
        if previous.exists():
            assert load_checkpoint(previous)["step"] <= state["step"]  # killed between keeping it and the move: equal
