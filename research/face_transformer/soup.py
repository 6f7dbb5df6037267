"""Average the weights of distillation checkpoints (a "model soup", as timm's ``avg_checkpoints.py``)::

    python -m research.face_transformer.soup out/ft_xs8/checkpoint.pt out/ft_xs8b/checkpoint.pt \\
        --out out/ft_xs8soup/checkpoint.pt

Runs that start from the same weights and train on the same data end near each other, and the mean of their
weights is often a little better than either. The checkpoints must hold the same architecture (size, input
size, point refiner). Every floating-point tensor is averaged (BatchNorm running statistics included); integer
buffers are taken from the first checkpoint. The embedding and expression heads of separately refitted runs
need not agree, so refit them on the soup afterwards (``python -m research.face_transformer.distill CONFIG
--refit-only`` with the config's ``out`` folder holding the soup).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from attnmesh.weights.checkpoints import read_checkpoint

ARCHITECTURE = ("size", "input_size", "refine_dim", "refine_steps")


def average(paths: list[Path]) -> dict:
    """The checkpoint (``model``, ``size``, ``input_size``, ``step``) whose weights are the mean of ``paths``'
    weights (float32); ``step`` is the sum of their steps, ``soup`` lists the sources."""
    if len(paths) < 2:
        raise ValueError("a soup needs at least two checkpoints")
    cks = [read_checkpoint(p) for p in paths]
    for p, ck in zip(paths[1:], cks[1:]):
        if any(ck[k] != cks[0][k] for k in ARCHITECTURE) or ck["model"].keys() != cks[0]["model"].keys():
            raise ValueError(f"{p} holds another architecture than {paths[0]} "
                             f"({', '.join(f'{k} {ck[k]} vs {cks[0][k]}' for k in ARCHITECTURE)})")
    state = {}
    for k, v in cks[0]["model"].items():
        if v.is_floating_point():
            state[k] = torch.stack([ck["model"][k].float() for ck in cks]).mean(0)
        else:
            state[k] = v.clone()
    return {"architecture": "face_transformer", "model": state, "size": cks[0]["size"],
            "input_size": cks[0]["input_size"], "step": sum(int(ck.get("step", 0)) for ck in cks),
            "soup": [str(p) for p in paths]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m research.face_transformer.soup", description=__doc__.split("::")[0])
    p.add_argument("checkpoints", type=Path, nargs="+", help="distillation checkpoints (.pt) or shipped .safetensors")
    p.add_argument("--out", type=Path, required=True, help="the averaged checkpoint (.pt)")
    a = p.parse_args(argv)
    for path in a.checkpoints:
        if not path.is_file():
            sys.exit(f"error: no such checkpoint: {path}")
    if a.out.resolve() in {path.resolve() for path in a.checkpoints}:
        p.error("--out must not be one of the checkpoints")
    try:
        soup = average(a.checkpoints)
    except (ValueError, KeyError, RuntimeError) as e:
        sys.exit(f"error: {e}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(soup, a.out)
    print(f"{a.out}: mean of {len(a.checkpoints)} checkpoints", file=sys.stderr)


if __name__ == "__main__":
    main()
