"""``attnmesh eval DATASET [--model M]... [--split all|train|val] [--map fixed|linear] [--out report.json]
[--ced ced.png]``: the paper's Table 2 columns (all / eyes / lips NME), failure rate and AUC at 10% on the
68 iBUG points of a 300-W style folder (images + .pts), or, for a folder of unannotated photos, the faces found
and the mesh drift between the models. ``--model`` takes a registered model name, a ``.safetensors`` file or
a training checkpoint ``.pt``; repeat it to compare models on the same detections (drift is reported against
the first)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import CliError
from ..registry import list_models
from .common import InputFiles, check_output_target, common_parents, positive_int, write_atomic

# -- eval -----------------------------------------------------------------------------------------------------


def add_eval(sub: argparse._SubParsersAction,
             common: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval", parents=common_parents(common), help="landmark error (Table 2 of the paper) on an annotated data set",
        description="Normalised mean error on the 68 iBUG points (all points / inter-ocular distance, eyes / "
                    "each eye's corner distance, lips / mouth-corner distance), failure rate and AUC at 10%%, "
                    "CED plot; missed faces count as failures. Faces are found as FaceMesh(static_image_mode="
                    "True) finds them.")
    p.add_argument("dataset", help="300-W style folder (images with 68-point .pts files), an attnmesh landmark "
                                   "file (.jsonl/.npz), or a folder of photos (drift only)")
    p.add_argument("--model", action="append", metavar="M",
                   help=f"a registered model ({', '.join(list_models())}), a .safetensors file or a training "
                        "checkpoint .pt (Attention Mesh or face transformer, as recorded in the file); repeat to "
                        "compare (default: attention_mesh)")
    p.add_argument("--split", choices=("all", "train", "val"), default="all",
                   help="the deterministic hash split of the data set to use (default: all)")
    p.add_argument("--val-fraction", type=float, default=0.15, metavar="F",
                   help="validation share of the hash split (default: 0.15)")
    p.add_argument("--map", dest="mapping", choices=("fixed", "linear", "shipped"), default="fixed",
                   help="mesh -> 68 points: the fixed index map, the imported model's fitted linear map, or each "
                        "model's shipped read-out (Face.landmarks68; the fixed map for a weights file) "
                        "(default: fixed)")
    p.add_argument("--max-faces", type=positive_int, default=4, metavar="N",
                   help="most faces per image, as FaceMesh(max_num_faces=N) (default: 4)")
    p.add_argument("--out", metavar="REPORT.json", help="write the report as JSON")
    p.add_argument("--ced", metavar="CED.png", help="write the cumulative error distribution plot (needs matplotlib)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_eval(args: argparse.Namespace) -> int:
    models = args.model or ["attention_mesh"]
    out = check_output_target(args.out, "--out", (".json",)) if args.out else None
    ced = check_output_target(args.ced, "--ced", (".png",)) if args.ced else None
    if ced is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--ced needs matplotlib: pip install matplotlib") from None
    if not 0.0 < args.val_fraction < 1.0:
        raise CliError("--val-fraction must be between 0 and 1", 2)
    from ..eval.datasets import load_records
    from ..weights import WeightsError

    try:
        records = load_records(args.dataset, args.split, args.val_fraction)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    if not records:
        raise CliError(f"{args.dataset}: no images found (split {args.split})")
    inputs = InputFiles([args.dataset, *(r.image_path for r in records)])
    inputs.refuse("--out", args.out)
    inputs.refuse("--ced", args.ced)
    for m in models:
        if m.endswith((".pt", ".safetensors")) and not Path(m).is_file():
            raise CliError(f"--model {m}: no such file")
    import torch

    from ..eval.evaluate import evaluate, format_table, landmark_runner
    from ..eval.metrics import plot_ced
    from ..options import check_device

    try:
        check_device(args.device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CliError(f"--device {args.device}: {e}", 2) from None
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    runners = {}
    for m in models:  # all weights loaded before any work: a wrong --model is a usage error
        try:
            runners[m] = landmark_runner(m, args.device)
        except WeightsError as e:
            message = str(e) if str(e).startswith(m) else f"{m}: {e}"
            raise CliError(f"--model {message}", 2) from None
    try:
        report = evaluate(records, models, mapping=args.mapping, device=args.device, max_faces=args.max_faces,
                          progress=not args.no_progress and sys.stderr.isatty(), runners=runners)
    except WeightsError as e:
        raise CliError(str(e)) from None
    errors = report.pop("_errors_all")
    report.pop("_matched")
    report["dataset"] = str(args.dataset)
    report["split"] = args.split
    print(format_table(report))
    if out is not None:
        write_atomic(out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1) + "\n"), "--out")
    if ced is not None:
        if not errors:
            raise CliError("--ced: the data set has no annotations")
        write_atomic(ced, lambda tmp: plot_ced({Path(k).name: v for k, v in errors.items()}, tmp,
                                                title=f"{Path(args.dataset).name} ({args.split})"), "--ced")
    return 0
