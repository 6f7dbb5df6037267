"""Fit a model's 68-point read-out (:mod:`attnmesh.weights.readout`) on the TRAINING split of a 300-W style
folder and choose its kind on the VALIDATION split; optionally record it in the shipped weights' manifest entry.

    python -m attnmesh.train.readout MODEL [--data ../shared/data/300w-train] [--ship]

The model's landmarks come from ``attnmesh eval``'s pipeline (detector ROI, the model, the face matched to the
annotation): on the training split they fit the ``linear`` map (16 vertices per iBUG point, weights summing to 1)
and the ``dense`` map (ridge regression from every vertex, its ridge chosen on the validation split too); on the
validation split the three kinds (``fixed`` included) are compared by NME (all points / inter-ocular distance)
and the lowest is the model's read-out. Faces missed by the detector are left out of the fit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..eval import metrics
from ..weights.readout import Readout68, face_frame, fixed_indices

DENSE_RIDGES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # x the number of training faces


def fit_linear(mesh: np.ndarray, gt: np.ndarray) -> Readout68:
    """The ``linear`` read-out fitted to (n, K, 2+) landmarks and their (n, 68, 2) annotations."""
    from .make_maps import linear_map

    cols, weights = linear_map(np.asarray(mesh, np.float64), np.asarray(gt, np.float64), fixed_indices())
    return Readout68("linear", {"columns": cols, "weights": weights})


def fit_dense(mesh: np.ndarray, gt: np.ndarray, ridge: float, vertices: int | None = None) -> Readout68:
    """The ``dense`` read-out: ridge regression (penalty ``ridge`` x n on the weights, none on the bias) from
    the first ``vertices`` landmarks (default all) to the 68 points, both in the face frame of the landmarks."""
    xy = np.asarray(mesh, np.float64)[..., :2]
    vertices = vertices or xy.shape[1]
    centroid, rotation, scale = face_frame(xy)

    def local(points: np.ndarray) -> np.ndarray:
        out = np.einsum("nij,nkj->nki", rotation, points - centroid[:, None, :]) / scale[:, None, None]
        return out.reshape(len(points), -1)

    x = np.concatenate([local(xy[:, :vertices]), np.ones((len(xy), 1))], 1)
    y = local(np.asarray(gt, np.float64))
    penalty = ridge * len(x) * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    matrix = np.linalg.solve(x.T @ x + penalty, x.T @ y).T  # (136, 2 V + 1)
    return Readout68("dense", {"vertices": vertices, "matrix": np.round(matrix, 7).tolist()})


def summary(readout: Readout68, mesh: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """``attnmesh eval``'s summary (NME all / eyes / lips, failures...) of ``readout`` on faces (NaN rows: missed)."""
    pred = np.full(gt.shape, np.nan)
    ok = ~np.isnan(mesh[:, 0, 0])
    pred[ok] = readout(mesh[ok])
    return metrics.summarize(pred, gt)


def nme(readout: Readout68, mesh: np.ndarray, gt: np.ndarray) -> float:
    """Mean NME (all 68 points, % of the inter-ocular distance) of ``readout`` on faces (NaN rows: missed)."""
    return float(summary(readout, mesh, gt)["nme_all"])


def choose(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]
           ) -> tuple[Readout68, list[tuple[str, float]]]:
    """The read-out with the lowest validation NME among ``fixed``, ``linear`` and ``dense`` (each ridge of
    :data:`DENSE_RIDGES`), fitted on ``train``; and every candidate's (name, validation NME)."""
    ok = ~np.isnan(train[0][:, 0, 0])
    mesh, gt = train[0][ok], train[1][ok]
    candidates = [("fixed", Readout68("fixed")), ("linear", fit_linear(mesh, gt))]
    candidates += [(f"dense ridge {r:g}", fit_dense(mesh, gt, r)) for r in DENSE_RIDGES]
    table = [(name, nme(readout, *val)) for name, readout in candidates]
    best = int(np.argmin([score for _, score in table]))
    return candidates[best][1], table


def matched_landmarks(model: str, records: list[Any], device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(n, K, 3) landmarks of the face matched to each annotated record (NaN when missed) and the (n, 68, 2)
    annotations, as ``attnmesh eval`` finds them."""
    from ..eval.evaluate import evaluate

    report = evaluate(records, [model], mapping="fixed", device=device, progress=sys.stderr.isatty())
    gt = np.stack([r.points68 for r in records if r.points68 is not None])
    return report["_matched"][model], gt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attnmesh.train.readout", description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a registered model or an Attention Mesh weights file")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/300w-train"))
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--ship", action="store_true",
                    help="record the chosen read-out in the registered model's manifest entry")
    args = ap.parse_args(argv)
    from ..eval.datasets import w300_records

    train = matched_landmarks(args.model, w300_records(args.data, "train", args.val_fraction))
    val = matched_landmarks(args.model, w300_records(args.data, "val", args.val_fraction))
    best, table = choose(train, val)
    for name, score in table:
        print(f"{name:<20} validation NME all {score:.3f}")
    s = summary(best, *val)
    print(f"chosen: {best.kind}: validation NME all {s['nme_all']:.3f}, eyes {s['nme_eyes']:.3f}, "
          f"lips {s['nme_lips']:.3f}, failures {s['failure_rate']:.2f}%, missed {s['missed']}")
    if args.ship:
        from ..registry import get_model_spec
        from ..weights.readout import store_readout

        weights = get_model_spec(args.model).weights[0]
        fit = {"data": f"{args.data.name}, training split (val_fraction {args.val_fraction})",
               "faces": int((~np.isnan(train[0][:, 0, 0])).sum()),
               "validation_nme": {name: round(score, 4) for name, score in table}}
        store_readout(best, weights, fit)
        print(f"recorded in the manifest entry of {weights}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
