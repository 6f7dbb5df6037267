"""Ship a trained model as named weights: float16 ``.safetensors`` beside the imported ones plus its manifest
entry (file, sha256, dtype, provenance: base model, data, recipe, run)::

    python -m attnmesh.train.ship out/finetune_300w --name attention_mesh_300w \\
        --config configs/finetune_300w.toml --data "300w-train, training split (...)"

After that, ``load_model_weights(AttentionMesh(), "attention_mesh_300w")`` and ``attnmesh eval --model
attention_mesh_300w`` use it. Float16 storage changes landmarks by far less than 0.01 px (checked here).

:func:`store_float16` is the one writer of shipped weights: :func:`ship` (an ``attnmesh train`` run) and the
face transformer's shipping step (``research/face_transformer/ship.py``) both go through it.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..io.atomic import atomic_path
from ..weights import set_manifest_entry, sha256_file, weights_dir


def store_float16(model: torch.nn.Module, name: str, architecture: str, rebuild: Callable[[], torch.nn.Module],
                  input_size: int, fine_tuned: dict[str, Any], fields: dict[str, Any] | None = None,
                  metadata: dict[str, str] | None = None, float32_keys: Sequence[str] = (), check_batch: int = 2,
                  directory: Path | None = None) -> dict:
    """Write ``model``'s weights as ``<directory>/<name>.safetensors`` (float16; the tensors named in
    ``float32_keys`` and non-float buffers keep their dtype; ``architecture``, e.g. ``"attention_mesh"``, and
    ``metadata`` in the file's metadata), replacing any earlier file atomically, and record them in the
    manifest; returns the manifest entry.

    The float16 check: ``rebuild()`` (a fresh model of the same architecture) loads the stored weights (as
    float32), and the largest change of ``.landmarks`` (input pixels of the ``input_size`` square crop) against
    ``model`` on ``check_batch`` random crops (seed 0) is recorded as ``fine_tuned["float16_max_landmark_change_px"]``.
    The entry is ``file``, ``sha256``, ``dtype``, then ``fields`` (e.g. the input size), then ``fine_tuned``."""
    from safetensors.torch import save_file

    directory = directory or weights_dir()
    model = model.eval()
    state = {k: (v.detach().cpu().float() if k in float32_keys else v.detach().cpu().half())
             if v.is_floating_point() else v.detach().cpu() for k, v in model.state_dict().items()}
    file = directory / f"{name}.safetensors"
    with atomic_path(file) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"architecture": architecture, **(metadata or {})})
    os.chmod(file, 0o644)
    half = rebuild()
    half.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    half.eval()
    x = torch.rand(check_batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = float((model(x).landmarks - half(x).landmarks).abs().max())
    return set_manifest_entry(name, {
        "file": file.name, "sha256": sha256_file(file), "dtype": "float16", **(fields or {}),
        "fine_tuned": {**fine_tuned, "float16_max_landmark_change_px": round(diff, 5)},
    }, directory)


def ship(run_dir: Path, name: str, config: Path, data: str, notes: str = "", directory: Path | None = None) -> dict:
    """Store the model of an ``attnmesh train`` run (``run_dir/last.pt``) as the named weights ``name`` (float16)
    with its provenance (``config``'s text as the recipe, ``data``, ``notes``); returns the manifest entry."""
    from ..models.attention_mesh import INPUT_SIZE, AttentionMesh
    from ..weights import read_weights_file
    from ..weights.checkpoints import load_attention_mesh_file

    ckpt = read_weights_file(run_dir / "last.pt")
    net = load_attention_mesh_file(str(run_dir / "last.pt")).eval()
    return store_float16(
        net, name, "attention_mesh", AttentionMesh, INPUT_SIZE,
        fine_tuned={"from": ckpt["config"]["init"], "data": data, "recipe": config.read_text(),
                    "steps": int(ckpt["step"]), "trainer": "attnmesh.train.trainer (attnmesh train)", "notes": notes},
        metadata={"source": f"attnmesh train {config.name}, step {ckpt['step']}"}, directory=directory)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ship a trained model as named weights")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--notes", default="")
    args = ap.parse_args(argv)
    entry = ship(args.run_dir, args.name, args.config, args.data, args.notes)
    print(json.dumps({k: v for k, v in entry.items() if k != "fine_tuned"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
