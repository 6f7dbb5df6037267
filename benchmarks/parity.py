"""Parity of attnmesh with the reference runtime (mp.solutions, MediaPipe 0.10.21), printed as a table.

    python benchmarks/parity.py [--w300 300]

Static mode on every photo of ../shared/data/photos and N 300-W images (refine on and off), detector on
the photos, video mode on the clips of the test suite. Errors are mean 2D landmark distances as % of the
inter-ocular distance (outer eye corners 33-263) of the reference face.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import attnmesh  # noqa: E402
from reference import (VIDEOS, ReferenceFaceMesh, photo_paths, read_rgb, reference_detections,  # noqa: E402
                       reference_version, video_frames, w300_paths)
from test_face_mesh_parity import VIDEO_CLIPS, compare  # noqa: E402


def row(name: str, s: dict) -> str:
    e = 100 * s["errors"]
    within = lambda t: 100 * float((s["errors"] <= t).mean()) if len(e) else 0.0  # noqa: E731
    return (f"| {name} | {s['frames']} | {s['faces']} | {100 * s['count_agreement']:.1f}% | "
            f"{np.median(e):.3f} | {np.quantile(e, 0.99):.3f} | {e.max():.3f} | {within(0.005):.1f}% | "
            f"{within(0.01):.1f}% |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--w300", type=int, default=300)
    a = p.parse_args()
    print(f"reference: {reference_version()}; attnmesh {attnmesh.__version__}; {platform.platform()}; "
          f"python {platform.python_version()}\n")
    print("| set | images/frames | matched faces | same face count | median % IOD | p99 % IOD | max % IOD "
          "| faces ≤0.5% IOD | faces ≤1% IOD |")
    print("|---|---|---|---|---|---|---|---|---|")
    images = [read_rgb(q) for q in photo_paths() + w300_paths(a.w300)]
    for refine in (True, False):
        opts = dict(static_image_mode=True, refine_landmarks=refine, max_num_faces=5)
        ref_fm = ReferenceFaceMesh(**opts)
        ref = [ref_fm(im) for im in images]
        fm = attnmesh.FaceMesh(**opts)
        ours = [[f.landmarks for f in fm.process(im)] for im in images]
        print(row(f"static, {'478 (refine)' if refine else '468'}", compare(ours, ref)))
    for clip, n in sorted(VIDEO_CLIPS.items()):
        frames = list(video_frames(VIDEOS / clip))
        opts = dict(static_image_mode=False, refine_landmarks=True, max_num_faces=n)
        ref_fm = ReferenceFaceMesh(**opts)
        ref = [ref_fm(f) for f in frames]
        fm = attnmesh.FaceMesh(**opts)
        ours = [[f.landmarks for f in fm.process(frame)] for frame in frames]
        print(row(f"video {clip} (max {n})", compare(ours, ref)))

    photos = [read_rgb(q) for q in photo_paths()]
    ref = reference_detections(photos)
    det = attnmesh.FaceDetector(min_detection_confidence=0.5)
    ious, kps, scores, counts = [], [], [], 0
    for im, r in zip(photos, ref):
        ours = det.process(im)
        counts += len(ours) == len(r)
        for d in ours:
            j = int(np.argmin([np.abs(d.box - rb).sum() for _, rb, _ in r]))
            sc, rb, rk = r[j]
            ix = max(0, min(d.box[2], rb[2]) - max(d.box[0], rb[0])) * max(0, min(d.box[3], rb[3]) - max(d.box[1], rb[1]))
            union = np.prod(d.box[2:] - d.box[:2]) + np.prod(rb[2:] - rb[:2]) - ix
            ious.append(ix / union)
            kps.append(np.linalg.norm(d.keypoints - rk, axis=1).max() / (rb[2] - rb[0]))
            scores.append(abs(d.score - sc))
    print(f"\ndetector on {len(photos)} photos: same count on {counts}/{len(photos)}, {len(ious)} faces, "
          f"min box IoU {min(ious):.4f}, max keypoint error {100 * max(kps):.3f}% of box width, "
          f"max score difference {max(scores):.4f}")


if __name__ == "__main__":
    t = time.time()
    main()
    print(f"\n({time.time() - t:.0f} s)")
