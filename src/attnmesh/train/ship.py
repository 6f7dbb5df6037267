"""Ship a trained model as named weights: float16 ``.safetensors`` beside the imported ones plus its manifest
entry (file, sha256, dtype, provenance: base model, data, recipe, run)::

    python -m attnmesh.train.ship out/finetune_300w --name attention_mesh_300w \\
        --config configs/finetune_300w.toml --data "300w-train, training split (...)"

After that, ``load_model_weights(AttentionMesh(), "attention_mesh_300w")`` and ``attnmesh eval --model
attention_mesh_300w`` use it. Float16 storage changes landmarks by far less than 0.01 px (checked here).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ..weights import set_manifest_entry, sha256_file, weights_dir


def ship(run_dir: Path, name: str, config: Path, data: str, notes: str = "", directory: Path | None = None) -> dict:
    from ..weights.checkpoints import load_attention_mesh_file
    from .trainer import export_weights

    directory = directory or weights_dir()
    net = load_attention_mesh_file(str(run_dir / "last.pt")).eval()
    ckpt = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    file = directory / f"{name}.safetensors"
    export_weights(net, file, torch.float16, metadata={"source": f"attnmesh train {config.name}, step {ckpt['step']}"})
    os.chmod(file, 0o644)
    # float16 check: landmarks of a random batch agree closely
    half = load_attention_mesh_file(str(file)).eval()
    x = torch.rand(2, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = float((net(x).landmarks - half(x).landmarks).abs().max())
    return set_manifest_entry(name, {
        "file": file.name, "sha256": sha256_file(file), "dtype": "float16",
        "fine_tuned": {
            "from": ckpt["config"]["init"], "data": data, "recipe": config.read_text(),
            "steps": int(ckpt["step"]), "trainer": "attnmesh.train.trainer (attnmesh train)",
            "float16_max_landmark_change_px": round(diff, 5), "notes": notes,
        },
    }, directory)


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
