"""The validation curve of a fine-tuning run: NME on the 300-W validation split (fixed map) of the run's
``step-*.pt`` checkpoints (``keep_checkpoints = true`` in the config), every ``--every`` steps, next to the
training loss of ``log.csv``. Prints a Markdown table; ``--plot`` draws both.

    python benchmarks/finetune_curve.py out/finetune_300w [--every 1000] [--plot docs/images/curve.png]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from attnmesh.eval.datasets import w300_records  # noqa: E402
from attnmesh.eval.evaluate import evaluate  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "300w-train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="the training run's folder (the config's 'out')")
    ap.add_argument("--every", type=int, default=1000, help="steps between the checkpoints evaluated")
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    steps = sorted(int(m.group(1)) for p in args.run.glob("step-*.pt") if (m := re.match(r"step-(\d+)\.pt", p.name)))
    chosen = [s for s in steps if s % args.every == 0] + ([steps[-1]] if steps and steps[-1] % args.every else [])
    records = w300_records(DATA, "val")
    models = ["attention_mesh"] + [str(args.run / f"step-{s:06d}.pt") for s in chosen]
    report = evaluate(records, models, mapping="fixed", progress=sys.stderr.isatty())
    with open(args.run / "log.csv") as f:
        log = list(csv.DictReader(f))
    loss = {int(row["step"]): float(row["loss"]) for row in log if row.get("loss")}
    print(f"300-W validation split ({len(records)} faces), NME all / eyes / lips (% of the normalising distance), "
          "fixed map\n")
    print("| step | train loss (mean of the last 100 steps) | NME all | eyes | lips |\n|---|---|---|---|---|")
    rows = []
    for step, model in zip([0, *chosen], models):
        s = report["models"][model]
        recent = [v for k, v in loss.items() if step - 100 < k <= step]
        mean_loss = float(np.mean(recent)) if recent else float("nan")
        rows.append((step, mean_loss, s["nme_all"], s["nme_eyes"], s["nme_lips"]))
        print(f"| {step} | {mean_loss:.4f} | {s['nme_all']:.2f} | {s['nme_eyes']:.2f} | {s['nme_lips']:.2f} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r[0] for r in rows], [r[2] for r in rows], "o-", label="validation NME all (%)")
        ax.set_xlabel("step")
        ax.set_ylabel("NME (% IOD)")
        ax2 = ax.twinx()
        ks = sorted(loss)
        window = 100
        smooth = np.convolve([loss[k] for k in ks], np.ones(window) / window, mode="valid")
        ax2.plot(ks[window - 1:], smooth, color="tab:gray", alpha=0.6, label="training loss (100-step mean)")
        ax2.set_ylabel("training loss")
        fig.legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
