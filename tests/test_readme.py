"""The README's example runs as written."""

import pathlib
import re

import matplotlib

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
