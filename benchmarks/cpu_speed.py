"""CPU speed against the reference runtime, in one run: MediaPipe 0.10.21 vs attnmesh on OpenVINO (the default),
ONNX Runtime and PyTorch.

    python benchmarks/cpu_speed.py [--threads 1] [--frames 150] [--clips talking-d9.mp4 talking-d3.mp4]
                                   [--photos ../shared/data/300w-train] [--repeats 3] [--skip-models]

(a) The paper's Table 1: per-face model latency at batch 1 (model only, no crops), the cascade (face_landmark
    + two iris passes) vs the Attention Mesh, per backend, timed round robin so background load hits all alike
    (median over rounds). MediaPipe's own TFLite/XNNPACK timings where its interpreter runs the file alone (the
    attention model needs MediaPipe's custom ops, so only inside its graph, i.e. in (b)).
(b) Tracking fps per clip: ``FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1)`` on the
    same decoded frames, each engine in turn, round after round (``--repeats``; every other round in reverse
    order, so that a machine speeding up or slowing down during the run favours no engine), clip by clip;
    median per engine, warm-up excluded.
(c) A photo folder, whole process (Python start-up, imports, model loading and decoding included): ``attnmesh
    images DIR --out x.parquet`` per backend vs a MediaPipe user's loop (``cv2.imread`` + static ``FaceMesh``,
    refine on, max 5 faces) over the same files; alternated, ``--repeats`` times, median wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _machine import describe  # noqa: E402
from reference import VIDEOS, ReferenceFaceMesh, video_frames  # noqa: E402

import attnmesh  # noqa: E402

BACKENDS = ("openvino", "onnxruntime", "torch")
MEDIAPIPE_LOOP = HERE / "_mediapipe_images.py"


def model_table(threads: int, rounds: int = 15, iters: int = 20) -> None:
    import torch

    from attnmesh.runtime.onnxruntime import OrtGraph
    from attnmesh.runtime.openvino import OvGraph, graph_spec
    from attnmesh.export.onnx import build_module, default_cache_dir, export_all

    models = {"face_landmark": 192, "iris_landmark": 64, "attention_mesh": 192}
    torch.set_num_threads(threads)
    export_all(default_cache_dir(), list(models))
    rng = np.random.default_rng(0)
    runners: dict[tuple[str, str], object] = {}
    for m, s in models.items():
        x = rng.random((1, 3, s, s), dtype=np.float32)
        u8 = np.ascontiguousarray((x * 255).round().astype(np.uint8).transpose(0, 2, 3, 1))
        tflite = _tflite_runner(m, x, threads)
        if tflite is not None:
            runners[("MediaPipe TFLite", m)] = tflite
        g = OvGraph(graph_spec(m), threads=threads)
        runners[("OpenVINO", m)] = lambda g=g, u8=u8: g(u8)
        o = OrtGraph(m, threads=threads)
        runners[("ONNX Runtime", m)] = lambda o=o, x=x: o(x)
        net, xt = build_module(m), torch.from_numpy(x)
        runners[("PyTorch", m)] = lambda net=net, xt=xt: net(xt)
    times = {k: [] for k in runners}
    with torch.inference_mode():
        for f in runners.values():
            for _ in range(5):
                f()
        for _ in range(rounds):
            for k, f in runners.items():
                t = time.perf_counter()
                for _ in range(iters):
                    f()
                times[k].append((time.perf_counter() - t) / iters * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    columns = list(dict.fromkeys(b for b, _ in runners))
    print(f"\n(a) per-face model latency, ms, batch 1, {threads} threads (median of {rounds} rounds)\n")
    print("| model | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")

    def cell(b: str, m: str, k: float = 1.0) -> str:
        return f"{k * med[(b, m)]:.2f}" if (b, m) in med else "—"

    print("| mesh-only (face_landmark) | " + " | ".join(cell(b, "face_landmark") for b in columns) + " |")
    print("| eye & iris (x2) | " + " | ".join(cell(b, "iris_landmark", 2) for b in columns) + " |")
    cascade = {b: med[(b, "face_landmark")] + 2 * med[(b, "iris_landmark")] for b in columns}
    print("| cascade (sum) | " + " | ".join(f"{cascade[b]:.2f}" for b in columns) + " |")
    print("| Attention Mesh | " + " | ".join(cell(b, "attention_mesh") for b in columns) + " |")
    print("| Attention Mesh faster than the cascade by | " + " | ".join(
        f"{100 * (1 - med[(b, 'attention_mesh')] / cascade[b]):.0f}%" if (b, "attention_mesh") in med else "—"
        for b in columns) + " |")


def _tflite_runner(model: str, x: np.ndarray, threads: int):
    """MediaPipe's own .tflite file on the TFLite interpreter with XNNPACK, or None if it cannot run alone."""
    try:
        import mediapipe
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    files = {"face_landmark": "face_landmark/face_landmark.tflite", "iris_landmark": "iris_landmark/iris_landmark.tflite"}
    if model not in files:
        return None
    it = Interpreter(model_path=str(Path(mediapipe.__file__).parent / "modules" / files[model]), num_threads=threads)
    it.allocate_tensors()
    index, nhwc = it.get_input_details()[0]["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def run() -> None:
        it.set_tensor(index, nhwc)
        it.invoke()
    return run


def tracking_table(clips: list[str], frames_per_clip: int, rounds: int = 3) -> dict[str, float]:
    def ours(backend: str):
        fm = attnmesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True, backend=backend)
        return fm.process, fm.reset

    def mediapipe():
        holder = {}

        def reset() -> None:
            if "fm" in holder:
                holder["fm"].close()
            holder["fm"] = ReferenceFaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
        reset()
        return (lambda frame: holder["fm"](frame)), reset

    engines = {"MediaPipe 0.10.21": mediapipe(), **{f"attnmesh {b}": ours(b) for b in BACKENDS}}
    rows, totals = [], {k: [0, 0.0] for k in engines}
    for clip in clips:
        path = VIDEOS / clip
        if not path.is_file():
            raise SystemExit(f"cpu_speed.py: no clip {path} (the clips are files of {VIDEOS})")
        frames = list(video_frames(path, frames_per_clip))
        if not frames:
            raise SystemExit(f"cpu_speed.py: {path} has no frames")
        seconds: dict[str, list[float]] = {k: [] for k in engines}
        order = list(engines.items())
        for r in range(rounds):  # engines in turn, round after round, every other round in reverse order
            for name, (process, reset) in (order if r % 2 == 0 else order[::-1]):  # (a drift hits all alike)
                reset()
                for f in frames[:3]:  # warm-up: first detection, lazy compilation
                    process(f)
                reset()
                t = time.perf_counter()
                for f in frames:
                    process(f)
                seconds[name].append(time.perf_counter() - t)
        row = {}
        for name, s in seconds.items():
            dt = statistics.median(s)
            row[name] = len(frames) / dt
            totals[name][0] += len(frames)
            totals[name][1] += dt
        rows.append((clip, frames[0].shape, len(frames), row))
    names = list(engines)
    print(f"\n(b) tracking fps, refine_landmarks=True, max_num_faces=1, frames decoded beforehand, median of "
          f"{rounds} rounds\n")
    print("| clip | size | frames | " + " | ".join(names) + " | default (OpenVINO) / MediaPipe |")
    print("|---" * (len(names) + 4) + "|")
    for clip, shape, n, row in rows:
        print(f"| {clip} | {shape[1]}x{shape[0]} | {n} | " + " | ".join(f"{row[k]:.0f}" for k in names)
              + f" | {row[names[1]] / row[names[0]]:.2f}x |")
    fps = {k: n / s for k, (n, s) in totals.items()}
    print("| **all** | | " + str(totals[names[0]][0]) + " | " + " | ".join(f"**{fps[k]:.0f}**" for k in names)
          + f" | **{fps[names[1]] / fps[names[0]]:.2f}x** |")
    return fps


def photo_table(folder: Path, repeats: int, backends: tuple[str, ...] = ("openvino", "onnxruntime")) -> None:
    n_images = sum(1 for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"MediaPipe loop (cv2.imread + static FaceMesh)": [sys.executable, str(MEDIAPIPE_LOOP), str(folder)]}
        for b in backends:
            commands[f"attnmesh images, {b}"] = [sys.executable, "-m", "attnmesh", "images", str(folder), "--out",
                                                  str(Path(tmp) / f"{b}.parquet"), "--backend", b]
        for cmd in commands.values():  # first runs build the model caches; not timed
            subprocess.run(cmd, check=True, capture_output=True)
        walls = {k: [] for k in commands}
        order = list(commands.items())
        for r in range(repeats):  # alternated, every other repeat in reverse order
            for name, cmd in (order if r % 2 == 0 else order[::-1]):
                t = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                walls[name].append(time.perf_counter() - t)
    print(f"\n(c) photo folder, whole process: {folder} ({n_images} images), median of {repeats} runs\n")
    print("| command | seconds | images/s | vs MediaPipe loop |")
    print("|---|---|---|---|")
    base = statistics.median(next(iter(walls.values())))
    for name, w in walls.items():
        m = statistics.median(w)
        print(f"| {name} | {m:.2f} | {n_images / m:.0f} | {base / m:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1,
                   help="threads of each network in table (a) (default 1: attnmesh's default; MediaPipe's "
                        "FaceMesh used about one core in table (b) here)")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--clips", nargs="*", default=["talking-d9.mp4", "talking-d3.mp4"])
    p.add_argument("--photos", type=Path, default=HERE.parents[1] / "shared" / "data" / "300w-train")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-models", action="store_true")
    p.add_argument("--skip-photos", action="store_true")
    p.add_argument("--photo-backends", nargs="+", default=["openvino", "onnxruntime"], choices=BACKENDS,
                   help="backends timed on the photo folder (torch takes minutes there)")
    a = p.parse_args()
    print(f"machine: {describe()}; $ATTNMESH_THREADS={os.environ.get('ATTNMESH_THREADS', 'unset')}")
    import onnxruntime
    import torch

    from attnmesh.runtime.openvino import import_openvino  # without its telemetry-sending tools

    print(f"versions: attnmesh {attnmesh.__version__}, OpenVINO {import_openvino().get_version()}, ONNX Runtime "
          f"{onnxruntime.__version__}, PyTorch {torch.__version__}")
    if not a.skip_models:
        model_table(a.threads)
    tracking_table(a.clips, a.frames, a.repeats)
    if not a.skip_photos:
        photo_table(a.photos, a.repeats, tuple(a.photo_backends))


if __name__ == "__main__":
    main()
