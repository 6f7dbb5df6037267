"""Ship a distilled face transformer as named weights beside the imported ones::

    python -m research.face_transformer.ship out/ft_xs11pair/checkpoint.pt \\
        --recipe research/face_transformer/recipe.toml --steps 1958 --steps 3000 ... --minutes 910

(``python -m research.face_transformer.recipe`` runs it with the steps and minutes of the recipe's stages.)

Writes ``attnmesh/weights/face_transformer_<size>.safetensors`` (float16; the landmark head's bias stays
float32, since it holds the mean shape in input pixels and float16 would round it by up to 1/16 px) and its
manifest entry (sha256, input size, recipes, steps, training time). Reports the largest landmark change
float16 storage causes on a random batch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnmesh.io.atomic import write_text_atomic
from attnmesh.models.face_transformer import FaceTransformer
from attnmesh.train.ship import store_float16
from attnmesh.weights.checkpoints import model_from_checkpoint, read_checkpoint
from attnmesh.weights import MANIFEST_NAME

FLOAT32_KEYS = ("landmark_out.bias",)


def ship(checkpoint: Path, recipes: list[str], steps: list[int], minutes: float, threads: int = 1,
         directory: Path | None = None, stages: list[str] | None = None) -> dict:
    """Store the model of ``checkpoint`` (a :mod:`research.face_transformer.distill` checkpoint) through
    :func:`attnmesh.train.ship.store_float16` and return its manifest entry. ``steps``: the distillation steps of
    each stage; ``stages``: their names in the recipe (recorded as ``recipe_stages``), one per entry of ``steps``."""
    if stages is not None and len(stages) != len(steps):
        raise ValueError(f"{len(stages)} stage names for {len(steps)} stages' steps")
    ck = read_checkpoint(checkpoint)
    arch = {"refine_dim": ck["refine_dim"], "refine_steps": ck["refine_steps"]}
    model = model_from_checkpoint(ck)
    name = f"face_transformer_{ck['size']}"
    return store_float16(
        model, name, "face_transformer", lambda: FaceTransformer(ck["size"], ck["input_size"], **arch),
        model.input_size,
        fields={"input_size": model.input_size, **arch},
        fine_tuned={"from": "attention_mesh", "recipe": recipes[0] if len(recipes) == 1 else recipes,
                    **({"recipe_stages": stages} if stages is not None else {}),
                    "kind": "distillation: student trained from scratch, 'from' is the teacher",
                    "steps": sum(steps), "steps_per_stage": steps, "refit_heads": bool(ck.get("refit", False)),
                    "train_minutes": minutes, "threads": threads},
        metadata={"model": name, "input_size": str(model.input_size)}, float32_keys=FLOAT32_KEYS, check_batch=4,
        directory=directory)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m research.face_transformer.ship",
                                 description="ship a distilled face transformer as named weights")
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--recipe", action="append", required=True, help="recipe file(s), in training order")
    ap.add_argument("--steps", type=int, action="append", required=True, help="steps of each stage")
    ap.add_argument("--minutes", type=float, required=True, help="total wall-clock training minutes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stage", action="append", default=None, help="the recipe's name of each stage, in order")
    ap.add_argument("--dir", type=Path, default=None,
                    help="write the weights and a manifest here instead of the package (a stage's weights as shipped)")
    args = ap.parse_args(argv)
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        if not (args.dir / MANIFEST_NAME).is_file():
            write_text_atomic(args.dir / MANIFEST_NAME, json.dumps({"models": {}}, indent=1) + "\n")
    try:
        entry = ship(args.checkpoint, args.recipe, args.steps, args.minutes, args.threads, args.dir, args.stage)
    except (ValueError, OSError, RuntimeError) as e:  # WeightsError, a checkpoint of another model
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(entry, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
