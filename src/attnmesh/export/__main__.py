"""Build the ONNX graphs from the shipped weights (the INT8 Attention Mesh: ``python -m attnmesh.eval.quantize``).

    python -m attnmesh.export [--out DIR] [--force] [--models NAME...]

Default folder: ``$ATTNMESH_CACHE/onnx/<key>`` or ``~/.cache/attnmesh/onnx/<key>`` (see
:mod:`attnmesh.export.onnx`). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .onnx import GRAPHS, OPSET, default_cache_dir, export_all


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnmesh.export", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the cache folder)")
    p.add_argument("--models", nargs="+", choices=sorted(GRAPHS), default=None)
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--force", action="store_true", help="re-export files that exist")
    a = p.parse_args(argv)
    if a.opset < 16:
        p.error("--opset must be >= 16 (GridSample)")
    out = a.out or default_cache_dir(a.opset)
    export_all(out, a.models, a.opset, a.force, log=print)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
