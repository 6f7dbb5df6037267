"""Robustness of the 68-point error on the 300-W validation split (269 faces never trained on): NME of each
model on the clean photos and under each degradation of the fine-tuning's augmentation at test time, in one run.

    python benchmarks/robustness_300w.py [--models attention_mesh attention_mesh_300w] [--map shipped]

Conditions (each applied to the whole photo, annotations moved with it where the geometry changes):

* ``rotated +30`` / ``rotated -30``: the photo turned by 30 degrees about the annotated face's centre (canvas
  grown so nothing is cut);
* ``gaussian blur``: sigma 2 px; ``motion blur``: a 9-px line at a per-photo random angle;
* ``occluded``: a per-photo random occluder (rectangle, hand, glasses or mask) over the annotated face box;
* ``low resolution``: downscaled to 35% and back; ``jpeg 20``: JPEG at quality 20.

Faces are found and matched as ``attnmesh eval`` does (missed faces count as failures); NME is all 68 points over
the inter-ocular distance, in %, with each model's read-out (``--map``). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import describe  # noqa: E402

from attnmesh.eval.datasets import FaceRecord, w300_records  # noqa: E402
from attnmesh.eval.evaluate import evaluate  # noqa: E402
from attnmesh.train.datasets import jpeg_artefacts, motion_blur, occlude  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "300w-train"


def rotated(image: np.ndarray, points: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    centre = points.mean(0)
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), degrees, 1.0)
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) @ m[:, :2].T + m[:, 2]
    lo, hi = corners.min(0), corners.max(0)
    m[:, 2] -= lo
    size = tuple(int(math.ceil(v)) for v in hi - lo)
    out = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, points @ m[:, :2].T + m[:, 2]


def degrade(name: str, image: np.ndarray, points: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """The photo (RGB uint8) and its 68 points under condition ``name``."""
    if name == "clean":
        return image, points
    if name.startswith("rotated"):
        return rotated(image, points, float(name.split()[1]))
    x = image.astype(np.float32) / 255.0
    if name == "gaussian blur":
        x = cv2.GaussianBlur(x, (0, 0), 2.0)
    elif name == "motion blur":
        x = motion_blur(x, 9, rng.uniform(0, math.pi))
    elif name == "low resolution":
        h, w = x.shape[:2]
        x = cv2.resize(cv2.resize(x, (max(8, round(w * 0.35)), max(8, round(h * 0.35))), interpolation=cv2.INTER_AREA),
                       (w, h), interpolation=cv2.INTER_LINEAR)
    elif name == "jpeg 20":
        x = jpeg_artefacts(x, 20)
    elif name == "occluded":
        x0, y0 = np.floor(points.min(0)).astype(int)
        x1, y1 = np.ceil(points.max(0)).astype(int)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, x.shape[1]), min(y1, x.shape[0])
        x[y0:y1, x0:x1] = occlude(x[y0:y1, x0:x1], rng)
    else:
        raise ValueError(name)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), points


CONDITIONS = ("clean", "rotated +30", "rotated -30", "gaussian blur", "motion blur", "occluded", "low resolution",
              "jpeg 20")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["attention_mesh", "attention_mesh_300w"])
    ap.add_argument("--map", dest="mapping", default="shipped", choices=("fixed", "linear", "shipped"))
    ap.add_argument("--limit", type=int, default=None, help="first N validation faces only")
    args = ap.parse_args()
    records = w300_records(DATA, "val")[: args.limit]
    rows = {m: {} for m in args.models}
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        for c, condition in enumerate(CONDITIONS):
            made = []
            for i, r in enumerate(records):
                rng = np.random.default_rng([c, i])
                image = cv2.cvtColor(cv2.imread(str(r.image_path)), cv2.COLOR_BGR2RGB)
                out, points = degrade(condition, image, np.asarray(r.points68, np.float64), rng)
                path = Path(tmp) / f"{c}-{i:04d}.png"
                cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
                made.append(FaceRecord(f"{c}/{i}", path, points))
            report = evaluate(made, args.models, mapping=args.mapping, progress=False)
            for m in args.models:
                rows[m][condition] = report["models"][m]["nme_all"]
            print(f"{condition}: " + ", ".join(f"{m} {rows[m][condition]:.2f}" for m in args.models), file=sys.stderr)
    print(f"300-W validation split, {len(records)} faces, NME all (% IOD), {args.mapping} read-out; {describe()}\n")
    print("| model | " + " | ".join(CONDITIONS) + " |")
    print("|---" * (len(CONDITIONS) + 1) + "|")
    for m in args.models:
        print(f"| {m} | " + " | ".join(f"{rows[m][c]:.2f}" for c in CONDITIONS) + " |")


if __name__ == "__main__":
    main()
