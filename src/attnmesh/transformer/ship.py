"""Ship a distilled face transformer as named weights beside the imported ones::

    python -m attnmesh.transformer.ship out/ft_xs2/checkpoint.pt \\
        --recipe configs/face_transformer_xs.toml --recipe configs/face_transformer_xs_continue.toml \\
        --steps 1958 --steps 8000 --minutes 112

Writes ``attnmesh/weights/face_transformer_<size>.safetensors`` (float16; the landmark head's bias stays
float32, since it holds the mean shape in input pixels and float16 would round it by up to 1/16 px) and its
manifest entry (sha256, input size, recipes, steps, training time). Reports the largest landmark change
float16 storage causes on a random batch.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ..models.face_transformer import FaceTransformer
from ..weights import set_manifest_entry, sha256_file, weights_dir
from ..weights.checkpoints import model_from_checkpoint, read_checkpoint

FLOAT32_KEYS = ("landmark_out.bias",)


def ship(checkpoint: Path, recipes: list[str], steps: list[int], minutes: float, threads: int = 1,
         directory: Path | None = None) -> dict:
    """Store the model of ``checkpoint`` (a :mod:`attnmesh.transformer.distill` checkpoint) and return its
    manifest entry."""
    from safetensors.torch import save_file

    directory = directory or weights_dir()
    ck = read_checkpoint(checkpoint)
    arch = {"refine_dim": ck["refine_dim"], "refine_steps": ck["refine_steps"]}
    model = model_from_checkpoint(ck)
    name = f"face_transformer_{ck['size']}"
    state = {k: (v.float() if k in FLOAT32_KEYS else v.half()) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    file = directory / f"{name}.safetensors"
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
              metadata={"architecture": "face_transformer", "model": name, "input_size": str(model.input_size)})
    os.replace(tmp, file)
    os.chmod(file, 0o644)
    half = FaceTransformer(ck["size"], ck["input_size"], **arch)
    half.load_state_dict({k: v.float() for k, v in state.items()})
    half.eval()
    x = torch.rand(4, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        diff = float((model(x).landmarks - half(x).landmarks).abs().max())
    return set_manifest_entry(name, {
        "file": file.name, "sha256": sha256_file(file), "dtype": "float16", "input_size": model.input_size,
        **arch,
        "fine_tuned": {
            "from": "attention_mesh", "recipe": recipes[0] if len(recipes) == 1 else recipes,
            "kind": "distillation: student trained from scratch, 'from' is the teacher",
            "steps": sum(steps), "steps_per_stage": steps, "refit_heads": bool(ck.get("refit", False)),
            "train_minutes": minutes, "threads": threads, "float16_max_landmark_change_px": round(diff, 5),
        },
    }, directory)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="ship a distilled face transformer as named weights")
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--recipe", action="append", required=True, help="config file(s), in training order")
    ap.add_argument("--steps", type=int, action="append", required=True, help="steps of each stage")
    ap.add_argument("--minutes", type=float, required=True, help="total wall-clock training minutes")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    entry = ship(args.checkpoint, args.recipe, args.steps, args.minutes, args.threads)
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
