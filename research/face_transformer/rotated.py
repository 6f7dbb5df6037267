"""Rotated views for the distillation cache.

The face ROI is turned upright from the detector's two eye keypoints. When those are off (a face in a
collage, a profile, an occluded eye), the crop shows the face turned by a large angle: one held-out photo
face is seen 0.45 rad from upright, and the student, which only ever saw views within ~0.15 rad of upright,
is three times further from the teacher there than on an ordinary face. The teacher itself was trained with
in-plane rotations and meshes such crops.

This module adds cache items that show a cached face through ROIs turned ``ROTATION`` radians (either way)
from its face ROI, with the shift and scale ranges of the ordinary random views (:data:`data.VIEW_*`).
Row 0 stays the face ROI; every other view is a rotated one. As for every synthetic item
(:mod:`.synthetic`) each view is labelled by the teacher on the crop of that view and on its mirror. The
corners of a view turned far enough reach past the 160-pixel cache crop and show its replicated border, for
the teacher's input as for the student's.

    python -m research.face_transformer.rotated --cache out/ft_cache_composite --out out/ft_cache_rotated
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import synthetic
from .data import (CACHE_CROP, IDENTITY_VIEW, ROTATED_SOURCE, VIEW_LOG_SCALE, VIEW_SHIFT_X, VIEW_SHIFT_Y,
                   Cache)
from .synthetic import FACE_ROI_IN_CACHE

ROTATION = (0.15, 0.75)  # |in-plane turn| of a rotated view from the face ROI, radians (sign drawn at random)


def rotated_view(rng: np.random.Generator) -> np.ndarray:
    """A view (cx, cy, side, rotation; cache pixels, rotation relative to the face ROI in radians) of the face
    ROI shifted and scaled like :func:`data.random_view` and turned by ``ROTATION`` either way."""
    side = FACE_ROI_IN_CACHE.size
    turn = rng.choice((-1.0, 1.0)) * rng.uniform(*ROTATION)
    return np.array([CACHE_CROP / 2 + rng.uniform(*VIEW_SHIFT_X) * side,
                     CACHE_CROP / 2 + rng.uniform(*VIEW_SHIFT_Y) * side,
                     side * math.exp(rng.uniform(*VIEW_LOG_SCALE)), turn], np.float32)


def _rotated_items(cache: Cache, split: str, pool: np.ndarray, count: int, rng: np.random.Generator):
    """(crop, views, meta) of ``count`` rotated-view items of faces of ``pool`` (no face twice while there are
    enough)."""
    for i in (int(k) for k in rng.choice(pool, count, replace=count > len(pool))):
        views = np.stack([IDENTITY_VIEW] + [rotated_view(rng) for _ in range(cache.views.shape[1] - 1)])
        yield (np.asarray(cache.crops[i]), views,
               {"source": ROTATED_SOURCE, "key": f"{ROTATED_SOURCE}/{cache.meta[i]['key']}", "base": i})


def build(cache_dir: Path, out: Path, train: int, val: int, threads: int = 1, seed: int = 0, log=print) -> Path:
    """Copy the cache at ``cache_dir`` to ``out`` with ``train`` + ``val`` rotated-view items appended (faces
    of each split drawn without repeats while the split has enough of them)."""
    return synthetic.build(cache_dir, out, train, val, _rotated_items, kind="rotated",
                           threads=threads, seed=seed, log=log)


def main(argv: list[str] | None = None) -> None:
    synthetic.main(build, argv, prog="python -m research.face_transformer.rotated",
                   description=__doc__.split("\n\n")[0],
                   cache="out/ft_cache_composite", out="out/ft_cache_rotated", train=2000, what="rotated items")


if __name__ == "__main__":
    main()
