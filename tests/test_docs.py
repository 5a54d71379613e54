"""The documentation site builds from the committed pages, notebooks and docstrings with no warning (mkdocs strict
mode: a broken link, a missing page or a docstring mkdocstrings cannot parse fails it). Needs the `docs` extra."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parent.parent


def test_the_docs_site_builds_without_warnings(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("mkdocs_jupyter")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    import pyebm

    for name in pyebm.__all__:  # every public name has its entry
        assert f'id="pyebm.{name}"' in api, name
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        assert (tmp_path / "site" / "tutorials" / nb.stem / "index.html").exists(), nb.name


def test_no_source_file_carries_a_control_character():
    # a backslash lost in a non-raw string turns LaTeX into control characters (\t of \tfrac, \v of \varphi, \b of
    # \beta), which render as garbage in the API pages
    bad = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]|\t")
    files = [p for d in ("pyebm", "tests", "benchmarks", "tutorials") for p in (ROOT / d).rglob("*.py")]
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1) if bad.search(line)]
    assert files and not offenders, offenders
