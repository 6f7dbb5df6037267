"""Degraded faces for the distillation cache: low resolution and squeezed crops.

Measured on 150 validation faces each, the stage-8 student is 3.0% IOD from the teacher on a face seen at low
resolution (the face ROI 24-64 pixels wide, half of them also JPEG-compressed) and 2.8% on a squeezed face
(the crop narrowed to 70-100% of its width or height, with a shear), against 2.2% on the ordinary faces: small
faces in group photos and faces turned away or leaning (whose outline a squeeze imitates in the image plane)
are where it is furthest from the teacher.

Each item copies a cached face's crop, degrades the whole crop one of two ways (:data:`KINDS`, drawn with
equal odds; the parameters go into the item's meta, so the crop can be rebuilt from its base), and draws
fresh ordinary views of it (:func:`synthetic.ordinary_views`); row 0 stays the face ROI. As for every synthetic item
(:mod:`.synthetic`) each view is labelled by the teacher on the crop of that view and on its mirror.

    python -m research.face_transformer.degraded --cache out/ft_cache_rotated --out out/ft_cache_degraded
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from . import synthetic
from .data import CACHE_CROP, CONTEXT, DEGRADED_SOURCE, Cache

LOW_RES_SIDE = (24.0, 64.0)  # side of the face ROI at low resolution, pixels (cached: CACHE_CROP / CONTEXT = 128)
JPEG = 0.5  # probability that a low-resolution crop is also JPEG-compressed
JPEG_QUALITY = (30, 90)  # OpenCV JPEG quality, drawn uniformly (upper bound excluded)
SQUEEZE = (0.7, 1.0)  # scale of the squeezed axis
SQUEEZE_VERTICAL = 0.3  # probability that the height, not the width, is squeezed
SHEAR = (-0.15, 0.15)  # shear of a squeezed crop (x += shear * y, about the crop centre)
KINDS = ("low resolution", "squeezed")


def low_resolution(crop: np.ndarray, side: float, quality: int | None) -> np.ndarray:
    """The cache crop as if its face ROI were ``side`` pixels wide in the image: area-downsampled, optionally
    JPEG-compressed at ``quality``, and bilinearly upsampled back to the crop's size (as a crop of a small face
    is)."""
    n = max(8, round(crop.shape[0] * side / (CACHE_CROP / CONTEXT)))
    small = cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)
    if quality is not None:
        _, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        small = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return cv2.resize(small, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)


def squeeze_affine(scale: float, shear: float, vertical: bool) -> np.ndarray:
    """2x3 affine (OpenCV pixel coordinates) about the cache crop's centre that scales x (or y if ``vertical``)
    by ``scale`` and shears x by ``shear`` times y."""
    a = np.array([[1.0, shear], [0.0, scale]]) if vertical else np.array([[scale, shear], [0.0, 1.0]])
    c = np.full(2, (CACHE_CROP - 1) / 2)
    return np.concatenate([a, (c - a @ c)[:, None]], 1)


def squeezed(crop: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The cache crop warped by ``affine`` (:func:`squeeze_affine`), the area it uncovers the replicated border."""
    return cv2.warpAffine(crop, affine, crop.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def degrade(crop: np.ndarray, how: dict) -> np.ndarray:
    """The crop degraded as the item meta ``how`` says (``kind`` and its parameters)."""
    if how["kind"] == KINDS[0]:
        return low_resolution(crop, how["side"], how["quality"])
    return squeezed(crop, squeeze_affine(how["scale"], how["shear"], how["vertical"]))


def random_degradation(rng: np.random.Generator) -> dict:
    """Meta of one degradation drawn from the ranges above."""
    if rng.random() < 0.5:
        return {"kind": KINDS[0], "side": float(rng.uniform(*LOW_RES_SIDE)),
                "quality": int(rng.integers(*JPEG_QUALITY)) if rng.random() < JPEG else None}
    return {"kind": KINDS[1], "scale": float(rng.uniform(*SQUEEZE)), "shear": float(rng.uniform(*SHEAR)),
            "vertical": bool(rng.random() < SQUEEZE_VERTICAL)}


def _degraded_items(cache: Cache, split: str, pool: np.ndarray, count: int, rng: np.random.Generator):
    """(crop, views, meta) of ``count`` degraded items of faces of ``pool`` (no face twice while there are
    enough)."""
    for i in (int(k) for k in rng.choice(pool, count, replace=count > len(pool))):
        how = random_degradation(rng)
        yield (degrade(np.asarray(cache.crops[i]), how), synthetic.ordinary_views(cache.views.shape[1], rng),
               {"source": DEGRADED_SOURCE, "key": f"{DEGRADED_SOURCE}/{cache.meta[i]['key']}", "base": i, **how})


def build(cache_dir: Path, out: Path, train: int, val: int, threads: int = 1, seed: int = 0, log=print) -> Path:
    """Copy the cache at ``cache_dir`` to ``out`` with ``train`` + ``val`` degraded items appended (faces of
    each split drawn without repeats while the split has enough of them)."""
    return synthetic.build(cache_dir, out, train, val, _degraded_items, kind="degraded",
                           threads=threads, seed=seed, log=log)


def main(argv: list[str] | None = None) -> None:
    synthetic.main(build, argv, prog="python -m research.face_transformer.degraded",
                   description=__doc__.split("\n\n")[0],
                   cache="out/ft_cache_rotated", out="out/ft_cache_degraded", train=2000, what="degraded items")


if __name__ == "__main__":
    main()
