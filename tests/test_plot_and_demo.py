import matplotlib
import pytest
import torch

import pyebm

from conftest import gaussian_2d

matplotlib.use("Agg")


@pytest.fixture
def posts(float64):
    e = gaussian_2d()
    model = pyebm.model_from_energy(e, {"x": 2})
    return e, [pyebm.infer(model, method=m, seed=0, progress=False) for m in ("map", "laplace")]


def test_compare_2d_draws_one_panel_per_posterior_over_the_exact_density(posts):
    e, ps = posts
    fig = pyebm.plot.compare(*ps, energy=e, num_samples=100)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["map", "laplace"]
    assert len(axes[1].collections) >= 2  # filled density contours plus the draws
    assert axes[0].lines and axes[0].lines[0].get_marker() == "*"  # MAP is a point


def test_compare_marginals_beyond_two_dimensions(float64):
    e = pyebm.energies.Gaussian(torch.zeros(3), torch.eye(3))
    post = pyebm.infer(pyebm.model_from_energy(e, {"w": 3}), method="laplace", seed=0, progress=False)
    fig = pyebm.plot.compare(post, num_samples=200)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["w[0]", "w[1]", "w[2]"]


def test_landscape_draws_energy_contours():
    ax = pyebm.plot.landscape(pyebm.energies.Ring(), [(-3, 3), (-3, 3)], num=50)
    assert ax.collections


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    from pyebm.__main__ import main

    out = tmp_path / "demo.png"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "laplace" in text and "exact" in text and "nuts" in text
    assert torch.get_default_dtype() == torch.float32  # the demo restores the dtype it changed
