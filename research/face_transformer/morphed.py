"""Morphed faces for the distillation cache: a cached face warped toward another face's shape.

The student is 1.7% IOD from the teacher on its training faces and 2.0-2.3% on unseen 300-W and YTF faces
(stage 8, detector ROIs): with 4,409 real faces, of about 350 YTF people, it has learnt them better than faces
in general. A morph pairs one face's pixels with another face's geometry, so that every training face lends
its appearance to many shapes (proportions, expression, head turn as it shows in the image plane).

Each item takes a cached face ``base`` and a second face ``other`` of the same split. The other face's mesh
(the teacher's face-ROI answer, 468 points) is aligned to the base's by a similarity transform
(:func:`similarity`); the target shape is ``base + t * (aligned other - base)``, ``t`` drawn from
:data:`AMOUNT`. A thin-plate spline through every :data:`CONTROL_STEP`-th mesh point and fixed points on the crop's
border (:func:`warp_field`) moves the base crop so that its mesh goes to the target shape (:func:`morph`); the
background stays put at the border. Fresh ordinary views are drawn (:func:`synthetic.ordinary_views`); as for
every synthetic item (:mod:`.synthetic`), each view is labelled by the teacher on the crop of that view and
on its mirror: the target shape only steers the warp, it is never a label.

Measured on the 300 validation items of the build below: the target shape lies 5.9% IOD from the base mesh, and
the teacher's answer on the morphed crop 2.6% from the target shape and 5.9% from the base mesh (the face moved
as intended); the teacher finds a face on 99.7% of the views. The stage-7 student is 2.60% from the teacher on
them, against 2.22% on the ordinary validation faces. Building 3,000 + 300 items takes about 9 minutes.
Trained on them (stage 10, not shipped), the student learnt the morphs (stage 8: 2.54%, the stage-10 runs:
2.35%) but got no closer to the teacher on real validation faces (model card, limitations).

    python -m research.face_transformer.morphed --cache out/ft_cache_rotated --out out/ft_cache_morphed
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from attnmesh.topology import NUM_MESH_LANDMARKS

from . import synthetic
from .data import CACHE_CROP, MORPHED_SOURCE, Cache

AMOUNT = (0.4, 0.9)  # how far the base mesh moves toward the aligned other mesh, drawn uniformly
CONTROL_STEP = 3  # every 3rd mesh point steers the spline (156 of 468)
BORDER_POINTS = 6  # fixed points per side of the cache crop, corners included


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity (scale, rotation, shift; no reflection) that best maps (K, 2) points ``src`` onto
    ``dst`` in least squares (Umeyama 1991)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    s = float((sig * np.diag(d)).sum() / (a ** 2).sum())
    return np.concatenate([s * r, (md - s * r @ ms)[:, None]], 1)


def border_points(side: int = CACHE_CROP, count: int = BORDER_POINTS) -> np.ndarray:
    """(4 * count - 4, 2) points evenly along the border of a ``side``-pixel crop (continuous pixels)."""
    e = np.linspace(0.0, side, count)
    z, f = np.zeros(count), np.full(count, float(side))
    pts = np.concatenate([np.stack(p, 1) for p in ((e, z), (e, f), (z, e), (f, e))])
    return np.unique(pts, axis=0)


def warp_field(base: np.ndarray, target: np.ndarray, side: int = CACHE_CROP) -> np.ndarray:
    """(side, side, 2) float32 sampling map for ``cv2.remap``: for every output pixel, where to read the input
    so that the (468, 2) mesh points ``base`` of the input land on ``target`` in the output. Continuous pixel
    coordinates in, OpenCV's (pixel centres at integers) out; the crop's border stays fixed."""
    anchors = border_points(side)
    step = slice(None, None, CONTROL_STEP)
    spline = RBFInterpolator(np.concatenate([target[step], anchors]), np.concatenate([base[step], anchors]),
                             kernel="thin_plate_spline")
    centres = np.arange(side) + 0.5
    field = spline(np.stack(np.meshgrid(centres, centres), -1).reshape(-1, 2)) - 0.5
    return field.reshape(side, side, 2).astype(np.float32)


def target_shape(base: np.ndarray, other: np.ndarray, amount: float) -> np.ndarray:
    """(468, 2) ``base`` moved by ``amount`` toward ``other`` aligned to it (:func:`similarity`)."""
    a = similarity(other, base)
    return base + amount * (other @ a[:, :2].T + a[:, 2] - base)


def morph(crop: np.ndarray, base: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The cache crop warped so that its mesh ``base`` (468, 2) goes to ``target`` (cache pixels)."""
    field = warp_field(base, target, crop.shape[0])
    return cv2.remap(crop, field[..., 0], field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def mesh(cache: Cache, i: int) -> np.ndarray:
    """(468, 2) float64: the teacher's face-ROI answer of cached face ``i`` (cache pixels), what a morph moves."""
    return np.asarray(cache.view_teacher[i, 0, :NUM_MESH_LANDMARKS, :2], np.float64)


def _morphed_items(cache: Cache, split: str, pool: np.ndarray, count: int, rng: np.random.Generator):
    """(crop, views, meta) of ``count`` morphed items: bases from ``pool`` (no face twice while there are
    enough), each paired with another face of ``pool``."""
    for i in (int(k) for k in rng.choice(pool, count, replace=count > len(pool))):
        j = int(rng.choice(pool[pool != i]))
        amount = float(rng.uniform(*AMOUNT))
        base = mesh(cache, i)
        crop = morph(np.asarray(cache.crops[i]), base, target_shape(base, mesh(cache, j), amount))
        yield (crop, synthetic.ordinary_views(cache.views.shape[1], rng),
               {"source": MORPHED_SOURCE, "key": f"{MORPHED_SOURCE}/{cache.meta[i]['key']}", "base": i, "other": j,
                "amount": amount})


def build(cache_dir: Path, out: Path, train: int, val: int, threads: int = 1, seed: int = 0, log=print) -> Path:
    """Copy the cache at ``cache_dir`` to ``out`` with ``train`` + ``val`` morphed items appended (base faces
    of each split drawn without repeats while the split has enough of them)."""
    return synthetic.build(cache_dir, out, train, val, _morphed_items, kind="morphed",
                           threads=threads, seed=seed, log=log)


def main(argv: list[str] | None = None) -> None:
    synthetic.main(build, argv, prog="python -m research.face_transformer.morphed",
                   description=__doc__.split("\n\n")[0],
                   cache="out/ft_cache_rotated", out="out/ft_cache_morphed", train=3000, what="morphed items")


if __name__ == "__main__":
    main()
