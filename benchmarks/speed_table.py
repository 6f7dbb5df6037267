"""The paper's Table 1 on this machine: per-face model latency of the cascade vs the Attention Mesh, on
PyTorch CPU fp32, ONNX Runtime CPU fp32 and INT8, and (when CUDA is present) PyTorch GPU fp16.

    python benchmarks/speed_table.py [--threads 2] [--rounds 15] [--iters 10] [--model-dir DIR]

Rows: mesh-only model (face_landmark), eye & iris model x2 (two 64x64 eye crops per face), the cascade
(the sum of the two), the Attention Mesh; all at batch 1 (one face), model only (no crops). Backends are
timed interleaved (round robin over rounds), so background load hits all columns alike; each cell is the
median over rounds of the mean of ``iters`` runs, and the smallest round mean in brackets. The INT8
column needs ``python -m attnmesh.eval.quantize`` (only the Attention Mesh is quantized).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from attnmesh.runtime.onnxruntime import OrtGraph  # noqa: E402
from attnmesh.export.onnx import build_module, default_cache_dir, export_all  # noqa: E402

MODELS = {"face_landmark": 192, "iris_landmark": 64, "attention_mesh": 192}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--model-dir", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model_dir = a.model_dir or default_cache_dir()
    export_all(model_dir, list(MODELS))
    rng = np.random.default_rng(0)
    inputs = {m: rng.random((1, 3, s, s), dtype=np.float32) for m, s in MODELS.items()}

    runners: dict[tuple[str, str], object] = {}
    for m in MODELS:
        net = build_module(m)
        x = torch.from_numpy(inputs[m])
        runners[("torch CPU fp32", m)] = lambda net=net, x=x: net(x)
        g = OrtGraph(m, model_dir, threads=a.threads)
        runners[("ORT CPU fp32", m)] = lambda g=g, x=inputs[m]: g(x)
    int8 = model_dir / "attention_mesh.int8.onnx"
    if int8.is_file():
        g8 = OrtGraph("attention_mesh.int8", model_dir, threads=a.threads)
        runners[("ORT CPU INT8", "attention_mesh")] = lambda g=g8, x=inputs["attention_mesh"]: g(x)
    if torch.cuda.is_available():  # not measured on the development machine (no GPU)
        for m in MODELS:
            net = build_module(m).cuda()
            x = torch.from_numpy(inputs[m]).cuda()

            def run(net=net, x=x):
                with torch.autocast("cuda", dtype=torch.float16):
                    net(x)
                torch.cuda.synchronize()
            runners[("torch GPU fp16", m)] = run

    times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    with torch.inference_mode():
        for f in runners.values():  # warm-up
            for _ in range(3):
                f()
        for _ in range(a.rounds):
            for k, f in runners.items():
                t = time.perf_counter()
                for _ in range(a.iters):
                    f()
                times[k].append((time.perf_counter() - t) / a.iters * 1e3)

    backends = list(dict.fromkeys(b for b, _ in runners))
    med = {k: float(np.median(v)) for k, v in times.items()}
    best = {k: float(np.min(v)) for k, v in times.items()}

    def cell(b: str, m: str, factor: float = 1.0) -> str:
        return f"{factor * med[(b, m)]:.2f} ({factor * best[(b, m)]:.2f})" if (b, m) in med else "—"

    print(f"machine: {describe()}; {a.threads} threads\n")
    print("per-face latency, ms: median over rounds (best round)\n")
    print("| model | " + " | ".join(backends) + " |")
    print("|---" * (len(backends) + 1) + "|")
    print("| mesh-only (face_landmark) | " + " | ".join(cell(b, "face_landmark") for b in backends) + " |")
    print("| eye & iris (x2) | " + " | ".join(cell(b, "iris_landmark", 2) for b in backends) + " |")
    cascade = {}
    for b in backends:
        if (b, "face_landmark") in med:
            cascade[b] = (med[(b, "face_landmark")] + 2 * med[(b, "iris_landmark")],
                          best[(b, "face_landmark")] + 2 * best[(b, "iris_landmark")])
    print("| cascade (sum) | " + " | ".join(f"{cascade[b][0]:.2f} ({cascade[b][1]:.2f})" if b in cascade else "—"
                                           for b in backends) + " |")
    print("| attention mesh | " + " | ".join(cell(b, "attention_mesh") for b in backends) + " |")
    print("| attention mesh vs cascade | " + " | ".join(
        f"{100 * (1 - med[(b, 'attention_mesh')] / cascade[b][0]):+.0f}% faster" if b in cascade else
        (f"{100 * (1 - med[(b, 'attention_mesh')] / cascade['ORT CPU fp32'][0]):+.0f}% vs ORT fp32 cascade"
         if "ORT CPU fp32" in cascade else "—") for b in backends) + " |")


if __name__ == "__main__":
    main()
