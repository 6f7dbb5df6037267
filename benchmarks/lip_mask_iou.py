"""Lip-mask IoU against the human 300-W lip annotations.

For each of N images of ../shared/data/300w-train (a fixed spread over lfpw, helen and afw), run
FaceMesh(static_image_mode=True), take the face whose landmarks best match the annotation, and compare our
lip mask (outer minus inner lip loop, thresholded at 0.5 of the unfeathered mask: the headline
"mean IoU") with the polygon of the
300-W points 48-59 minus 60-67. Also: "outer-only IoU" (the filled outer lip polygons, mouth included) and
"polygon IoU (4x)" (both polygons rasterised 4x finer: the IoU of the polygon areas without pixel
quantisation, which matters for lips a few pixels thick). Prints a table per subset and overall.

    .venv/bin/python benchmarks/lip_mask_iou.py [--count 300]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import read_pts, read_rgb, w300_paths  # noqa: E402

import attnmesh  # noqa: E402
from attnmesh.apps.lipstick import iou, lip_mask, lip_polygons, polygon_mask, w300_lip_polygons  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with attnmesh.FaceMesh(static_image_mode=True, max_num_faces=3) as fm:
        for path in w300_paths(args.count):
            image = read_rgb(path)
            pts = read_pts(path.with_suffix(".pts"))
            faces = fm.process(image)
            subset = path.parent.name
            if not faces:
                rows.append((subset, path.name, None, None, None))
                continue
            face = min(faces, key=lambda f: np.linalg.norm(f.landmarks[list(range(468))][:, :2].mean(0)
                                                            - pts.mean(0)))
            ours = lip_mask(face.landmarks, image.shape, feather_px=0) >= 0.5
            outer, inner = w300_lip_polygons(pts)
            ref = polygon_mask(outer, inner, image.shape)
            # also outer-only IoU (the filled lips + mouth), less sensitive to the inner-contour convention
            o_out, _ = lip_polygons(face.landmarks)
            outer_iou = iou(polygon_mask(o_out, None, image.shape), polygon_mask(outer, None, image.shape))
            o_in = lip_polygons(face.landmarks)[1]
            fine = iou(polygon_mask(o_out, o_in, image.shape, 4), polygon_mask(outer, inner, image.shape, 4))
            rows.append((subset, path.name, iou(ours, ref), outer_iou, fine))
    print(f"{'subset':8s} {'images':>6s} {'no face':>7s} {'mean IoU':>8s} {'median':>7s} {'>=0.8':>6s} "
          f"{'outer-only IoU':>14s} {'polygon IoU (4x)':>16s}")
    for name in sorted({r[0] for r in rows}) + ["all"]:
        sel = [r for r in rows if name == "all" or r[0] == name]
        v = np.array([r[2] for r in sel if r[2] is not None])
        o = np.array([r[3] for r in sel if r[3] is not None])
        q = np.array([r[4] for r in sel if r[4] is not None])
        missed = sum(r[2] is None for r in sel)
        print(f"{name:8s} {len(sel):6d} {missed:7d} {v.mean():8.3f} {np.median(v):7.3f} {(v >= 0.8).mean():6.1%} "
              f"{o.mean():14.3f} {q.mean():16.3f}")
    v = np.array([r[2] for r in rows if r[2] is not None])
    worst = sorted((r for r in rows if r[2] is not None), key=lambda r: r[2])[:5]
    print("worst:", ", ".join(f"{r[0]}/{r[1]} {r[2]:.2f}" for r in worst))
    print(f"mean IoU over {len(v)} images with a face: {v.mean():.3f}")


if __name__ == "__main__":
    main()
