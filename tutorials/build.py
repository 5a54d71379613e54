"""Regenerate every tutorial from its make_NN.py and execute it in full (the committed notebooks are this output).

    python tutorials/build.py [NN ...]      # all, or the numbered ones
    python tutorials/build.py --thumbnails  # only the gallery thumbnails, from the committed notebooks

Each notebook runs in a fresh kernel with an inline matplotlib backend, so every figure is saved in the notebook;
its first figure, scaled down, is the notebook's thumbnail in the tutorials gallery (``thumb_NN.png``).
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
    thumbnail(path)


def thumbnail(path: pathlib.Path, width: int = 320) -> None:
    """The notebook's first figure, ``width`` pixels wide, as ``thumb_NN.png`` beside it (none without a figure)."""
    import base64
    import io

    import nbformat
    from PIL import Image

    nb = nbformat.read(path, as_version=4)
    png = next((o["data"]["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if "image/png" in o.get("data", {})), None)
    if png is None:
        return
    image = Image.open(io.BytesIO(base64.b64decode(png)))
    image.thumbnail((width, width))
    image.save(path.parent / f"thumb_{path.stem.split('_')[0]}.png", optimize=True)


if __name__ == "__main__":
    os.chdir(HERE.parent)
    if sys.argv[1:] == ["--thumbnails"]:
        for notebook in sorted(HERE.glob("[0-9]*.ipynb")):
            thumbnail(notebook)
        sys.exit()
    numbers = sys.argv[1:] or sorted(p.stem.split("_")[1] for p in HERE.glob("make_*.py"))
    for n in numbers:
        build(n)
