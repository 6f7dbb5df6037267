"""Index maps between the 478-point mesh and the iBUG 68-point scheme, and the left/right mirror permutations.

All of it is data in ``src/attnmesh/data/landmark_maps.json``, written by ``python -m attnmesh.train.make_maps``
(see that module for how each map was derived):

* ``mesh_to_68``: for each of the 68 iBUG points, the mesh vertex (0..477) whose position, over the TRAINING
  split of 300w-train (:func:`attnmesh.train.datasets.split_of`), is closest on average to that annotation
  (distances normalised by the inter-ocular distance, imported model's landmarks).
* ``linear_68``: optionally, a linear map (68 x 478, sparse: 16 vertices per row, rows sum to 1) fitted by
  constrained least squares on the same training split.
* ``mirror_478``: ``perm[i]`` = the index of the vertex that is the mirror image of vertex ``i`` (from the
  canonical face model: nearest vertex to (-x, y, z), plus the iris slots), an involution.
* ``mirror_68``: the iBUG 68 left/right permutation (fixed by the annotation scheme).

Mirroring a face: ``mirrored[perm] = flip_x(points)``, i.e. ``mirrored = flip_x(points)[perm]`` (perm is its own
inverse).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from ..topology import mirror_478  # noqa: F401  (re-exported: the map file's mirror_478 entry)

MAPS_FILE = "data/landmark_maps.json"

# iBUG / Multi-PIE 68-point scheme: regions and the normalising corner pairs (0-based indices).
IBUG_ALL = tuple(range(68))
IBUG_RIGHT_EYE = tuple(range(36, 42))  # image-left eye of an unmirrored photo (the subject's right)
IBUG_LEFT_EYE = tuple(range(42, 48))
IBUG_EYES = IBUG_RIGHT_EYE + IBUG_LEFT_EYE
IBUG_LIPS = tuple(range(48, 68))
IBUG_OUTER_EYE_CORNERS = (36, 45)  # inter-ocular distance (IOD)
IBUG_RIGHT_EYE_CORNERS = (36, 39)
IBUG_LEFT_EYE_CORNERS = (42, 45)
IBUG_MOUTH_CORNERS = (48, 54)


def ibug_mirror_68() -> np.ndarray:
    """The iBUG 68 left/right permutation: ``perm[i]`` is the point that ``i`` becomes in the mirrored face."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw 0..16 (8 is the chin)
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils (27..30 and 33 on the midline)
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips (51, 57 midline)
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips (62, 66 midline)
    perm = np.arange(68)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


@lru_cache(maxsize=1)
def load_maps() -> dict[str, Any]:
    text = resources.files("attnmesh").joinpath(MAPS_FILE).read_text()
    return json.loads(text)


def mesh_to_68() -> np.ndarray:
    """(68,) mesh vertex index for each iBUG point (the documented fixed map)."""
    return np.asarray(load_maps()["mesh_to_68"]["indices"], np.int64)


def linear_68() -> np.ndarray:
    """(68, 478) linear map, rows sum to 1 (fitted on the training split)."""
    entry = load_maps()["linear_68"]
    w = np.zeros((68, entry["num_landmarks"]), np.float64)
    for row, (cols, vals) in enumerate(zip(entry["columns"], entry["weights"])):
        w[row, cols] = vals
    return w


def mirror_68() -> np.ndarray:
    return np.asarray(load_maps()["mirror_68"], np.int64)


def to_68(landmarks: np.ndarray, mapping: str = "fixed") -> np.ndarray:
    """(..., 478 or 468, 2+) mesh landmarks -> (..., 68, 2) iBUG points, by the ``"fixed"`` index map or the ``"linear"``
    map."""
    xy = np.asarray(landmarks)[..., :2]
    if mapping == "fixed":
        return xy[..., mesh_to_68(), :]
    if mapping == "linear":
        w = linear_68()
        if xy.shape[-2] < w.shape[1]:  # the 468-point base mesh: the map must not use the iris slots
            if np.any(w[:, xy.shape[-2]:]):
                raise ValueError(f"the linear map needs {w.shape[1]} landmarks, got {xy.shape[-2]}")
            w = w[:, :xy.shape[-2]]
        return np.einsum("kj,...jc->...kc", w, xy)
    raise ValueError(f"mapping must be 'fixed' or 'linear', got {mapping!r}")
