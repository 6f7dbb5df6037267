"""Build the ONNX graphs (and optionally the INT8 Attention Mesh) from the shipped weights.

    python -m attnmesh.export [--out DIR] [--force] [--int8 [--calibration-dir DIR] [--calibration N]]

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
    p.add_argument("--int8", action="store_true", help="also build attention_mesh.int8.onnx (static INT8)")
    p.add_argument("--calibration-dir", type=Path, default=Path("../shared/data/300w-train"))
    p.add_argument("--calibration", type=int, default=None, help="number of calibration crops (default 128)")
    a = p.parse_args(argv)
    if a.opset < 16:
        p.error("--opset must be >= 16 (GridSample)")
    out = a.out or default_cache_dir(a.opset)
    paths = export_all(out, a.models, a.opset, a.force, log=print)
    if a.int8:
        from .quantize import DEFAULT_CALIBRATION, face_crops, quantize_attention_mesh, split_images

        if not a.calibration_dir.is_dir():
            p.error(f"calibration folder not found: {a.calibration_dir}")
        calib, _ = split_images(a.calibration_dir)
        crops, _ = face_crops(calib, a.calibration or DEFAULT_CALIBRATION, log=print)
        fp32 = paths.get("attention_mesh") or export_all(out, ["attention_mesh"])["attention_mesh"]
        q = quantize_attention_mesh(fp32, Path(out) / "attention_mesh.int8.onnx", crops)
        print(f"quantized {q} ({q.stat().st_size / 1e6:.1f} MB, calibrated on {len(crops)} crops)")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
