"""End-to-end tracking speed on ../shared/data/videos: attnmesh (PyTorch and ONNX Runtime backends) vs
``mp.solutions.face_mesh``, on the same decoded frames.

    python benchmarks/tracking_fps.py [--frames 90] [--threads 2] [--max-faces 1]

Each clip is decoded once (up to ``--frames`` frames); then each engine processes all of them in video
mode (refine_landmarks=True) and only that processing is timed. Engines alternate clip by clip, so
background load hits them alike. fps = frames / seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _machine import describe  # noqa: E402
from reference import VIDEOS, ReferenceFaceMesh, video_frames  # noqa: E402

import attnmesh  # noqa: E402


def engines(max_faces: int, threads: int) -> dict:
    def ours(backend: str):
        fm = attnmesh.FaceMesh(static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True,
                               backend=backend)
        return lambda frame: fm.process(frame), fm.reset

    def mediapipe():
        holder = {}

        def reset():
            if "fm" in holder:
                holder["fm"].close()
            holder["fm"] = ReferenceFaceMesh(static_image_mode=False, max_num_faces=max_faces,
                                             refine_landmarks=True)
        reset()
        return lambda frame: holder["fm"](frame), reset

    return {"mediapipe 0.10.21 (TFLite, XNNPACK)": mediapipe(), "attnmesh torch CPU": ours("torch"),
            "attnmesh ORT CPU fp32": ours("onnxruntime")}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-faces", type=int, default=1)
    p.add_argument("--clips", nargs="*", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    clips = a.clips or sorted(q.name for q in VIDEOS.glob("*.mp4"))
    runs = engines(a.max_faces, a.threads)
    totals = {k: [0, 0.0] for k in runs}
    rows = []
    for clip in clips:
        frames = list(video_frames(VIDEOS / clip, a.frames))
        row = {}
        for name, (process, reset) in runs.items():
            reset()
            process(frames[0])  # warm-up (first detection, lazy init)
            reset()
            t = time.perf_counter()
            for f in frames:
                process(f)
            dt = time.perf_counter() - t
            row[name] = len(frames) / dt
            totals[name][0] += len(frames)
            totals[name][1] += dt
        rows.append((clip, frames[0].shape, len(frames), row))
    names = list(runs)
    print(f"machine: {describe()}; {a.threads} threads; max_num_faces={a.max_faces}, refine_landmarks=True\n")
    print("| clip | size | frames | " + " | ".join(f"{n} fps" for n in names) + " | ORT / mediapipe |")
    print("|---" * (len(names) + 4) + "|")
    for clip, shape, n, row in rows:
        ratio = row[names[2]] / row[names[0]]
        print(f"| {clip} | {shape[1]}x{shape[0]} | {n} | " + " | ".join(f"{row[k]:.1f}" for k in names)
              + f" | {ratio:.2f}x |")
    fps = {k: n / s for k, (n, s) in totals.items()}
    print("| **all** | | " + str(totals[names[0]][0]) + " | " + " | ".join(f"**{fps[k]:.1f}**" for k in names)
          + f" | **{fps[names[2]] / fps[names[0]]:.2f}x** |")


if __name__ == "__main__":
    main()
