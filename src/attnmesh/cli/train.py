"""``attnmesh train CONFIG [--no-resume] [--steps N]``: fine-tune the Attention Mesh from a TOML / JSON / YAML
config (:mod:`attnmesh.train.trainer`); resumes from ``OUT/last.pt`` unless ``--no-resume``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CliError
from .common import common_parents, positive_int

# -- train ----------------------------------------------------------------------------------------------------


def add_train(sub: argparse._SubParsersAction,
              common: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", parents=common_parents(common), help="fine-tune the Attention Mesh (two phases, distillation)",
        description="Train from a config file (.toml, .json, .yaml): phase 1 on ideal region crops from the "
                    "target mesh, phase 2 end to end; supervision from 68-point annotations through the mesh->68 "
                    "map and distillation from the imported model. Checkpoints, resume, log.csv in the config's "
                    "'out' folder; OUT/model.safetensors at the end.")
    p.add_argument("config", help="training config (.toml, .json, .yaml); see configs/finetune_300w.toml")
    p.add_argument("--no-resume", action="store_true", help="start again even if OUT/last.pt exists")
    p.add_argument("--steps", type=positive_int, metavar="N", help="stop after global step N (resumable)")
    p.add_argument("--device", help="override the config's torch device")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_train(args: argparse.Namespace) -> int:
    from ..train.trainer import ConfigError, Trainer, load_config

    path = Path(args.config)
    if not path.is_file():
        raise CliError(f"{path}: no such config file")
    try:
        cfg = load_config(path)
    except (ConfigError, ValueError, TypeError) as e:
        raise CliError(f"{path}: {e}") from None
    if args.device:
        cfg.device = args.device
    if args.no_progress:
        cfg.progress = False
    try:
        trainer = Trainer(cfg)
        summary = trainer.run(resume=not args.no_resume, stop_after=args.steps)
    except (ConfigError, FileNotFoundError) as e:
        raise CliError(str(e)) from None
    print(f"trained to step {summary['steps']} of {trainer.total_steps} in {summary['seconds']:.0f} s; "
          f"checkpoint {Path(cfg.out) / 'last.pt'}"
          + (f"; weights {Path(cfg.out) / 'model.safetensors'}" if summary["steps"] >= trainer.total_steps else ""))
    return 0
