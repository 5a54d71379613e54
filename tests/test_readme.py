"""The README's and the docs' examples run as written."""

import pathlib
import re

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

ROOT = pathlib.Path(__file__).parent.parent


def python_blocks(path: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / path).read_text(), re.S)


def run_block(block: str, path: str, **namespace) -> dict:
    exec(compile(block, path, "exec"), namespace)  # noqa: S102
    return namespace


def test_readme_pyro_model_example_runs_and_agrees_with_least_squares(capsys):
    ns = run_block(python_blocks("README.md")[0], "README.md")
    assert "log_evidence" in capsys.readouterr().out  # the comparison table was printed
    posts = ns["posts"]
    assert [p.method for p in posts] == ["map", "laplace", "svi", "nuts"]
    assert {"posterior", "log_likelihood", "observed_data", "posterior_predictive"} <= set(ns["idata"].groups())
    # with 50 points and a N(0, 1) prior the mode of w is the least-squares line up to the prior's pull, which is
    # (sigma^2 / (n var x)) ~ 0.5% of the slope: 0.02 absolute is far above that and far below the slope's sd (0.07)
    design = torch.stack([torch.ones(50), ns["x"]], -1)
    ols = torch.linalg.lstsq(design, ns["y"][:, None]).solution.squeeze(-1)
    assert torch.allclose(posts[0].mode["w"], ols, atol=0.02)


def test_readme_energy_example_runs(capsys):
    ns = run_block(python_blocks("README.md")[1], "README.md")
    assert "log_evidence" in capsys.readouterr().out
    assert [p.method for p in ns["posts"]] == ["map", "laplace", "svi", "nuts"]
    # tempering by 1/2 doubles the Gaussian volume in 2-D: log Z gains exactly log 2
    assert abs(ns["lap"].log_evidence - ns["posts"][1].log_evidence - 0.6931471805599453) < 1e-3


@pytest.mark.slow  # 3000 training steps as written in docs/training.md (about 25 s)
def test_training_example_reaches_the_truth_within_a_tenth_of_a_nat():
    ns = run_block(python_blocks("docs/training.md")[0], "docs/training.md", print=lambda *a: None)
    from pyebm.train import evaluate_2d

    report = evaluate_2d(ns["energy"], ns["target"], ns["target"].sample(10_000, seed=1))
    assert report["kl"] < 0.1  # the benchmark's claim for score matching on 8 Gaussians (benchmark: 0.015)
