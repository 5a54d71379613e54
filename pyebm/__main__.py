"""Command line: ``python -m pyebm demo [--out PATH] [--seed N] [--quick] [--no-progress]``."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyebm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="MAP, Laplace, SVI and NUTS on a banana energy, against the exact answer")
    demo.add_argument("--out", default="pyebm_demo.png", help="where to write the picture (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="fewer steps (a smoke test)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    from .demo import run

    run(out=args.out, seed=args.seed, progress=not args.no_progress, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
