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

    python -m attnmesh.transformer.rotated --cache out/ft_cache_composite --out out/ft_cache_rotated
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from .data import (CACHE_CROP, IDENTITY_VIEW, ROTATED_SOURCE, VIEW_LOG_SCALE, VIEW_SHIFT_X, VIEW_SHIFT_Y, Cache,
                   _Teacher)
from .synthetic import FACE_ROI_IN_CACHE, append_items, label_views, usable_faces

ROTATION = (0.15, 0.75)  # |in-plane turn| of a rotated view from the face ROI, radians (sign drawn at random)


def rotated_view(rng: np.random.Generator) -> np.ndarray:
    """A view (cx, cy, side, rotation; cache pixels, rotation relative to the face ROI in radians) of the face
    ROI shifted and scaled like :func:`data.random_view` and turned by ``ROTATION`` either way."""
    side = FACE_ROI_IN_CACHE.size
    turn = rng.choice((-1.0, 1.0)) * rng.uniform(*ROTATION)
    return np.array([CACHE_CROP / 2 + rng.uniform(*VIEW_SHIFT_X) * side,
                     CACHE_CROP / 2 + rng.uniform(*VIEW_SHIFT_Y) * side,
                     side * math.exp(rng.uniform(*VIEW_LOG_SCALE)), turn], np.float32)


def build(cache_dir: Path, out: Path, train: int, val: int, threads: int = 1, seed: int = 0, log=print) -> Path:
    """Copy the cache at ``cache_dir`` to ``out`` with ``train`` + ``val`` rotated-view items appended (faces
    of each split drawn without repeats while the split has enough of them)."""
    from ..eval.maps import mirror_478

    if train < 0 or val < 0:
        raise ValueError(f"rotated item counts must be >= 0, got train={train}, val={val}")
    if Path(out).resolve() == Path(cache_dir).resolve():
        raise ValueError("the output folder must differ from the base cache")
    cache = Cache(cache_dir)
    if cache.views.shape[1] < 2 or cache.view_teacher_flip is None:
        raise ValueError(f"{cache_dir} has no views (build it with attnmesh.transformer.data's default views)")
    rng = np.random.default_rng(seed)
    teacher = _Teacher(threads)
    mirror = mirror_478()
    ok = usable_faces(cache)
    made: list[dict] = []
    t0 = time.perf_counter()
    for split, count in (("train", train), ("val", val)):
        pool = np.nonzero(ok & (cache.split == split))[0]
        if count and not len(pool):
            raise ValueError(f"{cache_dir} has no usable {split} faces")
        picks = rng.choice(pool, count, replace=count > len(pool)) if count else []
        for n, i in enumerate(int(k) for k in picks):
            crop = np.asarray(cache.crops[i])
            views = np.stack([IDENTITY_VIEW] + [rotated_view(rng) for _ in range(cache.views.shape[1] - 1)])
            plain, flipped, score = label_views(teacher, crop, views, mirror)
            made.append({"crop": crop, "views": views, "plain": plain, "flipped": flipped, "score": score,
                         "meta": {"source": ROTATED_SOURCE, "split": split, "face": 0,
                                  "key": f"{ROTATED_SOURCE}/{cache.meta[i]['key']}", "base": i}})
            if (n + 1) % 250 == 0 or n + 1 == count:
                log(f"{split}: {n + 1}/{count} rotated items ({time.perf_counter() - t0:.0f} s)")
    return append_items(cache_dir, made, out, "rotated")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m attnmesh.transformer.rotated", description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path("out/ft_cache_composite"), help="base cache (built with views)")
    p.add_argument("--out", type=Path, default=Path("out/ft_cache_rotated"))
    p.add_argument("--train", type=int, default=2000, help="training items")
    p.add_argument("--val", type=int, default=300, help="validation items (reported separately)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.train < 0 or a.val < 0:
        p.error("--train and --val must be >= 0")
    if not (a.cache / "meta.json").is_file():
        sys.exit(f"error: {a.cache} is not a cache folder (no meta.json)")
    views = a.cache / "views.npy"
    if not views.is_file() or np.load(views, mmap_mode="r").shape[1] < 2:
        sys.exit(f"error: {a.cache} has no views (build it without --no-views)")
    if a.out.resolve() == a.cache.resolve():
        p.error("--out must differ from --cache")
    build(a.cache, a.out, a.train, a.val, a.threads, a.seed, log=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
