"""Regenerate every tutorial from its make_NN.py and execute it in full (the committed notebooks are this output).

    python tutorials/build.py [NN ...]      # all, or the numbered ones

Each notebook runs in a fresh kernel with an inline matplotlib backend, so every figure is saved in the notebook.
"""

from __future__ import annotations

import os
import pathlib
import runpy
import sys
import time

HERE = pathlib.Path(__file__).parent


def build(number: str) -> None:
    import nbformat
    from nbclient import NotebookClient

    runpy.run_path(str(HERE / f"make_{number}.py"))  # writes the notebook's cells
    path = next(HERE.glob(f"{number}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    for name in ("CI", "MPLBACKEND"):  # full settings, inline figures
        os.environ.pop(name, None)
    start = time.perf_counter()
    NotebookClient(nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, path)
    print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    os.chdir(HERE.parent)
    numbers = sys.argv[1:] or sorted(p.stem.split("_")[1] for p in HERE.glob("make_*.py"))
    for n in numbers:
        build(n)
