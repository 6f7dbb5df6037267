"""Derive ``src/attnmesh/data/landmark_maps.json`` (the script that made that file; see :mod:`attnmesh.eval.maps`).

    python -m attnmesh.train.make_maps [--data ../shared/data/300w-train] [--cache out/cache]

1. ``mirror_478``: for each of the 468 canonical-face vertices, the vertex nearest to its mirror image
   (x -> -x) in ``canonical_face_model.json``; checked to be an involution. The 10 iris slots: 468 <-> 473
   (centres), and each contour point of one iris paired with the contour point of the other whose mean
   offset from its centre, mirrored, is nearest (imported model on the training split).
2. ``mirror_68``: the iBUG scheme's left/right pairs (:func:`attnmesh.eval.maps.ibug_mirror_68`).
3. ``mesh_to_68``: teacher (imported Attention Mesh) landmarks of every face of the TRAINING split of
   300w-train (split by :func:`attnmesh.train.datasets.split_of`); for each iBUG point, the vertex with the
   smallest mean distance to that annotation, distances divided by each face's inter-ocular distance (outer
   eye corners 36-45). The validation split is never read.
4. ``linear_68``: for each iBUG point, weights on the 16 vertices nearest (canonical face) to its fixed-map
   vertex, rows summing to 1, minimising the same IOD-normalised squared error on the training split plus a
   small ridge pull (1e-3 x number of faces) towards the fixed map.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

import numpy as np

from ..eval.maps import MAPS_FILE, ibug_mirror_68
from .datasets import _vertex_positions, teacher_labels, w300_records

DEFAULT_DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "300w-train"


def mesh_mirror_468() -> np.ndarray:
    d = json.loads(resources.files("attnmesh").joinpath("data/canonical_face_model.json").read_text())
    v = np.asarray(d["vertices_xyz"], np.float64)
    m = v * np.array([-1.0, 1.0, 1.0])
    perm = np.argmin(((v[None, :, :] - m[:, None, :]) ** 2).sum(-1), axis=1)
    if not np.array_equal(perm[perm], np.arange(len(v))):
        raise RuntimeError("nearest-mirror-vertex map is not an involution")
    return perm


def iris_mirror(teacher: np.ndarray) -> list[int]:
    """Permutation of the 10 iris slots (468..477) from mean offsets to each iris centre."""
    iod = np.linalg.norm(teacher[:, 33, :2] - teacher[:, 263, :2], axis=1)[:, None, None]
    right = ((teacher[:, 469:473, :2] - teacher[:, 468:469, :2]) / iod).mean(0)
    left = ((teacher[:, 474:478, :2] - teacher[:, 473:474, :2]) / iod).mean(0)
    mirrored = right * np.array([-1.0, 1.0])
    pair = np.argmin(((mirrored[:, None] - left[None]) ** 2).sum(-1), axis=1)  # right k <-> left pair[k]
    if sorted(pair.tolist()) != [0, 1, 2, 3]:
        raise RuntimeError(f"iris contour points do not pair up: {pair}")
    perm = list(range(468, 478))
    perm[0], perm[5] = 473, 468
    for k, j in enumerate(pair):
        perm[1 + k], perm[6 + j] = 474 + j, 469 + k
    return perm


def fixed_map(teacher: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)[:, None, None]
    idx, err = [], []
    for k in range(68):
        d = np.linalg.norm(teacher[:, :, :2] - gt[:, k:k + 1], axis=-1) / iod[:, :, 0]
        mean = d.mean(0)
        idx.append(int(mean.argmin()))
        err.append(float(mean.min()))
    return np.array(idx), np.array(err)


def linear_map(teacher: np.ndarray, gt: np.ndarray, idx: np.ndarray, neighbours: int = 16,
               ridge: float = 1e-3) -> tuple[list[list[int]], list[list[float]]]:
    pos = _vertex_positions()[:468]
    iod = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=1)
    n = len(gt)
    cols_all, w_all = [], []
    for k in range(68):
        cols = np.argsort(((pos - pos[idx[k]]) ** 2).sum(-1))[:neighbours]
        assert cols[0] == idx[k]
        # rows: 2 coordinates per face; features relative to the fixed vertex (translation-free)
        a = (teacher[:, cols, :2] - teacher[:, idx[k]:idx[k] + 1, :2]) / iod[:, None, None]  # (n, m, 2)
        b = (gt[:, k] - teacher[:, idx[k], :2]) / iod[:, None]  # (n, 2)
        a = a.transpose(0, 2, 1).reshape(-1, neighbours)
        b = b.reshape(-1)
        e = np.zeros(neighbours)
        e[0] = 1.0
        lam = ridge * n
        h = a.T @ a + lam * np.eye(neighbours)
        g = a.T @ b + lam * e
        # minimise |a w - b|^2 + lam |w - e|^2 subject to 1^T w = 1 (KKT system)
        kkt = np.block([[2 * h, np.ones((neighbours, 1))], [np.ones((1, neighbours)), np.zeros((1, 1))]])
        sol = np.linalg.solve(kkt, np.concatenate([2 * g, [1.0]]))
        w = sol[:neighbours]
        cols_all.append([int(c) for c in cols])
        w_all.append([round(float(x), 6) for x in w])
    return cols_all, w_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=Path("out/cache"))
    ap.add_argument("--out", type=Path, default=Path(str(resources.files("attnmesh").joinpath(MAPS_FILE))))
    args = ap.parse_args(argv)

    import torch

    from ..models.attention_mesh import AttentionMesh
    from ..weights import load_model_weights

    torch.set_num_threads(2)
    records = w300_records(args.data, split="train")
    net = load_model_weights(AttentionMesh(), "attention_mesh").eval()
    labels = teacher_labels(records, net, cache_dir=args.cache)
    teacher = labels["teacher"].astype(np.float64)
    gt = np.stack([r.points68 for r in records])

    perm = np.concatenate([mesh_mirror_468(), iris_mirror(teacher)])
    assert np.array_equal(perm[perm], np.arange(478))
    idx, err = fixed_map(teacher, gt)
    cols, weights = linear_map(teacher, gt, idx)
    out = {
        "_doc": "Written by `python -m attnmesh.train.make_maps` (see that module for the derivations).",
        "source": {"data": "300w-train, training split only (attnmesh.train.datasets.split_of, val_fraction 0.15)",
                   "faces": len(records), "teacher": "attention_mesh (imported)"},
        "mesh_to_68": {"indices": [int(i) for i in idx],
                       "mean_error_iod": [round(float(x), 5) for x in err]},
        "linear_68": {"num_landmarks": 478, "columns": cols, "weights": weights},
        "mirror_478": [int(i) for i in perm],
        "mirror_68": [int(i) for i in ibug_mirror_68()],
    }
    args.out.write_text(json.dumps(out) + "\n")
    print(f"wrote {args.out}: fixed map mean error {100 * err.mean():.2f}% IOD over {len(records)} faces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
