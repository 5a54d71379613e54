"""The README's example runs as written."""

import pathlib
import re

import matplotlib
import pytest

matplotlib.use("Agg")


def test_readme_example_runs(capsys):
    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "log_evidence" in out  # the comparison table was printed
    posts = namespace["posts"]
    assert [p.method for p in posts] == ["map", "laplace", "svi", "nuts"]
    assert abs(namespace["lap"].log_evidence - namespace["posts"][1].log_evidence - 0.6931471805599453) < 1e-3


@pytest.mark.slow  # 3000 training steps as written in the README (about 25 s)
def test_readme_training_example_reaches_the_truth_within_a_tenth_of_a_nat():
    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, re.S)[1]
    namespace: dict = {"print": lambda *a: None}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    from pyebm.train import evaluate_2d

    report = evaluate_2d(namespace["energy"], namespace["target"], namespace["target"].sample(10_000, seed=1))
    assert report["kl"] < 0.1  # the benchmark's claim for score matching on 8 Gaussians (benchmark: 0.015)
