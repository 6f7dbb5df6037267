"""Distractor-face composites for the distillation cache.

Group photos put a second face inside the detector's ROI of the first (a face behind a shoulder, two heads
side by side). The teacher then meshes one face and a student that has only seen single faces lands between
the two. This module makes such crops from the cache itself: a cached face crop (the *main* face) gets
another cached face (the *donor*, another image of the same split) pasted beside it, partly overlapping,
either behind the main face (the main face's own pixels stay on top) or in front of it (the donor hides part
of it), and its last ``BETWEEN_VIEWS`` views are moved part of the way toward the donor, as a detector's
box around two overlapping faces is. Each composite is then labelled like every other cache item: the
teacher runs on the composite crop of each of its views and on its mirror, so the labels are the teacher's
exact answers on what the student will see, never a transformed copy.

Composites are cache items with ``source`` ``"composite"`` (no identity label: the embedding head never
trains on them). Their crop is the 160-pixel cache crop, so the teacher's 192-pixel input is resampled from
it and the view's area outside the cache crop is the replicated border, exactly as :func:`data.make_batch`
builds the student's input.

    python -m research.face_transformer.composite --cache out/ft_cache --out out/ft_cache_composite
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from . import synthetic
from .data import CACHE_CROP, COMPOSITE_SOURCE, Cache
from .synthetic import FACE_ROI_IN_CACHE

BEHIND = 0.7  # probability that the donor is pasted behind the main face (else in front of it)
DONOR_SCALE = (0.75, 1.15)  # donor face side / main face side
DONOR_OFFSET_X = (0.3, 0.75)  # |horizontal| centre distance, in main face sides
DONOR_OFFSET_Y = (-0.45, 0.45)  # vertical centre distance, in main face sides
DONOR_ROTATION = (-0.35, 0.35)  # radians
MASK_GROW = 1.12  # the face's convex hull, scaled about its centre (covers the hairline and jaw edge)
FEATHER = 2.0  # Gaussian sigma of the mask edges, cache pixels
BETWEEN_VIEWS = 2  # the last views of a composite: ROIs drifted toward the donor (a detector box between faces)
BETWEEN_SHIFT = (0.1, 0.5)  # fraction of the way from the main face's centre to the donor's
BETWEEN_LOG_SCALE = (-0.1, 0.15)
BETWEEN_ROTATION = (-0.4, 0.4)  # radians


def face_mask(points: np.ndarray, size: int = CACHE_CROP) -> np.ndarray:
    """(size, size) float32 soft mask of the convex hull of ``points`` (K, >=2, cache pixels), grown by
    ``MASK_GROW`` about its centre and feathered."""
    p = np.asarray(points, np.float64)[:, :2]
    p = p[np.isfinite(p).all(1)]
    c = p.mean(0)
    hull = cv2.convexHull(((p - c) * MASK_GROW + c).astype(np.float32))
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, np.round(hull[:, 0] * 16).astype(np.int32), 1.0, lineType=cv2.LINE_AA, shift=4)
    return cv2.GaussianBlur(mask, (0, 0), FEATHER)


def composite(main: np.ndarray, main_points: np.ndarray, donor: np.ndarray, donor_points: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Paste the donor's face into the main face's cache crop (both (160, 160, 3) uint8, points in their own
    crop's pixels). Returns the composite and what was drawn (placement in main face sides, layering)."""
    side = FACE_ROI_IN_CACHE.size
    scale = rng.uniform(*DONOR_SCALE)
    dx = rng.choice((-1.0, 1.0)) * rng.uniform(*DONOR_OFFSET_X)
    dy = rng.uniform(*DONOR_OFFSET_Y)
    rot = rng.uniform(*DONOR_ROTATION)
    c, s = math.cos(rot) * scale, math.sin(rot) * scale
    a = np.array([[c, -s], [s, c]])
    centre = np.array([CACHE_CROP / 2, CACHE_CROP / 2])
    t = centre + side * np.array([dx, dy]) - a @ centre  # donor face centre -> main centre + offset
    m = np.concatenate([a, t[:, None]], 1)
    warped = cv2.warpAffine(donor, m, (CACHE_CROP, CACHE_CROP), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)
    donor_mask = face_mask(np.asarray(donor_points)[:, :2] @ a.T + t)
    behind = bool(rng.random() < BEHIND)
    if behind:  # the main face stays on top
        donor_mask = donor_mask * (1 - face_mask(main_points))
    alpha = donor_mask[..., None]
    out = np.clip(np.round(main * (1 - alpha) + warped * alpha), 0, 255).astype(np.uint8)
    return out, {"offset": [float(dx), float(dy)], "scale": float(scale), "rotation": float(rot), "behind": behind}


def between_view(offset: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """A view (cx, cy, side, rotation; cache pixels) of the face ROI moved part of the way toward a donor at
    ``offset`` (main face sides), rescaled and rotated: the box a detector draws around two overlapping faces."""
    side = FACE_ROI_IN_CACHE.size
    t = rng.uniform(*BETWEEN_SHIFT)
    return np.array([CACHE_CROP / 2 + t * offset[0] * side, CACHE_CROP / 2 + t * offset[1] * side,
                     side * math.exp(rng.uniform(*BETWEEN_LOG_SCALE)), rng.uniform(*BETWEEN_ROTATION)], np.float32)


def _composites(cache: Cache, split: str, pool: np.ndarray, count: int, rng: np.random.Generator):
    """(crop, views, meta) of ``count`` composites of faces of ``pool`` (main and donor from different images)."""
    if len({cache.meta[k]["key"] for k in pool}) < 2:
        raise ValueError(f"the cache has {split} faces from fewer than two images")
    for _ in range(count):
        i, j = (int(k) for k in rng.choice(pool, 2, replace=False))
        while cache.meta[j]["key"] == cache.meta[i]["key"]:
            j = int(rng.choice(pool))
        crop, how = composite(np.asarray(cache.crops[i]), cache.teacher[i], np.asarray(cache.crops[j]),
                              cache.teacher[j], rng)
        views = np.array(cache.views[i], np.float32)
        views[len(views) - BETWEEN_VIEWS:] = [between_view(how["offset"], rng) for _ in range(BETWEEN_VIEWS)]
        key = f"{COMPOSITE_SOURCE}/{cache.meta[i]['key']}+{cache.meta[j]['key']}"
        yield crop, views, {"source": COMPOSITE_SOURCE, "key": key, "main": i, "donor": j, **how}


def build(cache_dir: Path, out: Path, train: int, val: int, threads: int = 1, seed: int = 0, log=print) -> Path:
    """Copy the cache at ``cache_dir`` to ``out`` with ``train`` + ``val`` composites appended (main and donor
    faces of the same split, from different images; faces the teacher accepts with all views)."""
    return synthetic.build(cache_dir, out, train, val, _composites, kind="composites",
                           min_views=2 + BETWEEN_VIEWS, threads=threads, seed=seed, log=log)


def main(argv: list[str] | None = None) -> None:
    synthetic.main(build, argv, prog="python -m research.face_transformer.composite",
                   description=__doc__.split("\n\n")[0],
                   cache="out/ft_cache", out="out/ft_cache_composite", train=1500, what="composites",
                   min_views=2 + BETWEEN_VIEWS,
                   views_hint=f"the face ROI, the detector's ROI and {BETWEEN_VIEWS} random views per face (build it "
                   "without --no-views, --random-views >= 2)")


if __name__ == "__main__":
    main()
