"""Cache items made from cached faces: what the distractor composites (:mod:`.composite`), the rotated
views (:mod:`.rotated`), the degraded faces (:mod:`.degraded`) and the morphed faces (:mod:`.morphed`) share.

A synthetic item is a 160-pixel cache crop (a cached face's crop, possibly edited) with its own views, every
view labelled by the teacher on the crop of that view and on its mirror, exactly as
:func:`data.make_batch` renders the student's input (the teacher's 192-pixel input resampled from the cache
crop, the area outside it the replicated border). So a synthetic item's labels are the teacher's answers on
what the student sees, never a transformed copy. Synthetic items have no identity and no 68-point annotation;
their ``source`` is one of :data:`data.SYNTHETIC_SOURCES`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from attnmesh.geometry.roi import Roi, crop_image

from .data import (IDENTITY_VIEW, SYNTHETIC_SOURCES, TEACHER_SIZE, Cache, _Teacher, crop_points_to_cache,
                   mirrored_answers, random_view)

# the face ROI in its own cache crop (the crop is the ROI scaled by CONTEXT about the same centre)
FACE_ROI_IN_CACHE = Roi(*(float(v) for v in IDENTITY_VIEW))
# what a builder needs of its base cache unless it says otherwise: the face ROI and at least one more view
MIN_VIEWS = 2
MIN_VIEWS_HINT = "the face ROI and at least one more view per face (build it without --no-views)"


def usable_faces(cache: Cache) -> np.ndarray:
    """(N,) bool: real (not synthetic) faces the teacher accepts, with every view present."""
    return (cache.is_face & (cache.score >= 0.5) & ~np.isin(cache.source, SYNTHETIC_SOURCES)
            & ~np.isnan(cache.views[:, :, 0]).any(1))


def ordinary_views(count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 4) views of a cache crop: the face ROI, then ``count - 1`` random views (:func:`data.random_view`)."""
    views = [IDENTITY_VIEW]
    for _ in range(count - 1):
        v = random_view(FACE_ROI_IN_CACHE, rng)
        views.append(np.array([v.center_x, v.center_y, v.size, v.rotation], np.float32))
    return np.stack(views)


def label_views(teacher: _Teacher, crop: np.ndarray, views: np.ndarray, mirror: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The teacher's answer on each view (V, 4) of a cache crop, and on its mirror mapped back (see
    :func:`data._items_for_image`): (V, 478, 3) plain, (V, 478, 3) mirrored, (V,) presence; cache pixels."""
    rois = [Roi(*(float(x) for x in v)) for v in views]
    crops = np.stack([crop_image(crop, r, TEACHER_SIZE, border="replicate") for r in rois])
    pts, score = teacher.mesh.run(crops)
    fp = mirrored_answers(teacher, crops, mirror)
    plain = np.stack([crop_points_to_cache(p, r, FACE_ROI_IN_CACHE) for p, r in zip(pts, rois)])
    flipped = np.stack([crop_points_to_cache(p, r, FACE_ROI_IN_CACHE) for p, r in zip(fp, rois)])
    return plain, flipped, np.asarray(score, np.float32)


def append_items(cache_dir: Path, made: list[dict], out: Path, kind: str) -> Path:
    """The arrays of ``cache_dir`` with the synthetic items ``made`` appended (each a dict of ``crop``,
    ``views``, ``plain``, ``flipped``, ``score`` as from :func:`label_views`, and ``meta``), written as a new
    cache folder ``out``. The expression normalisation is kept from the base cache, so every item's labels
    mean the same; ``meta.json`` records the base and the count under ``kind``."""
    cache_dir, out = Path(cache_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = json.loads((cache_dir / "meta.json").read_text())
    nan68 = np.full((len(made), 68, 2), np.nan, np.float32)
    arrays = {
        "crops": np.stack([m["crop"] for m in made]),
        "teacher": np.stack([m["plain"][0] for m in made]),
        "gt68": nan68,
        "score": np.array([m["score"][0] for m in made], np.float32),
        "views": np.stack([m["views"] for m in made]).astype(np.float32),
        "view_teacher": np.stack([m["plain"] for m in made]),
        "view_teacher_flip": np.stack([m["flipped"] for m in made]),
        "view_score": np.stack([m["score"] for m in made]),
    }
    for name, extra in arrays.items():
        base = np.load(cache_dir / f"{name}.npy", mmap_mode="r")
        np.save(out / f"{name}.npy", np.concatenate([np.asarray(base), extra.astype(base.dtype)]))
    info["items"] = info["items"] + [m["meta"] for m in made]
    info[kind] = {"base": str(cache_dir), "count": len(made)}
    (out / "meta.json").write_text(json.dumps(info, indent=1))
    return out


def check_build(cache_dir: Path, out: Path, train: int, val: int, min_views: int) -> Cache:
    """The base cache of a synthetic build, after checking the arguments (``ValueError`` on bad ones)."""
    if train < 0 or val < 0:
        raise ValueError(f"item counts must be >= 0, got train={train}, val={val}")
    if Path(out).resolve() == Path(cache_dir).resolve():
        raise ValueError("the output folder must differ from the base cache")
    cache = Cache(cache_dir)
    if cache.views.shape[1] < min_views or cache.view_teacher_flip is None:
        raise ValueError(f"{cache_dir} needs >= {min_views} views per face (research.face_transformer.data's default)")
    return cache


# make(cache, split, pool, count, rng) -> (crop, views, meta) for each of ``count`` items of ``split`` drawn from
# the usable faces ``pool`` of that split
ItemMaker = Callable[[Cache, str, np.ndarray, int, np.random.Generator], Iterator[tuple[np.ndarray, np.ndarray, dict]]]


def build(cache_dir: Path, out: Path, train: int, val: int, make: ItemMaker, *, kind: str, min_views: int = MIN_VIEWS,
          threads: int = 1, seed: int = 0, log: Callable[[str], None] = print) -> Path:
    """Copy the cache at ``cache_dir`` to ``out`` with ``train`` + ``val`` synthetic items appended: ``make``
    draws each item's crop, views and meta from the usable faces (:func:`usable_faces`) of its split, and every
    view is labelled by the teacher (:func:`label_views`). Progress goes to ``log``."""
    from attnmesh.topology import mirror_478

    cache = check_build(cache_dir, out, train, val, min_views)
    rng = np.random.default_rng(seed)
    teacher = _Teacher(threads)
    mirror = mirror_478()
    ok = usable_faces(cache)
    made: list[dict] = []
    t0 = time.perf_counter()
    for split, count in (("train", train), ("val", val)):
        if not count:
            continue
        pool = np.nonzero(ok & (cache.split == split))[0]
        if not len(pool):
            raise ValueError(f"{cache_dir} has no usable {split} faces")
        for n, (crop, views, meta) in enumerate(make(cache, split, pool, count, rng)):
            plain, flipped, score = label_views(teacher, crop, views, mirror)
            # meta keys in the order every cache item has them (source, split, face, ...): meta.json stays
            # byte-identical to the builds the shipped weights were trained on
            made.append({"crop": crop, "views": views, "plain": plain, "flipped": flipped, "score": score,
                         "meta": {"source": meta["source"], "split": split, "face": 0, **meta}})
            if (n + 1) % 250 == 0 or n + 1 == count:
                log(f"{split}: {n + 1}/{count} {kind} items ({time.perf_counter() - t0:.0f} s)")
    return append_items(cache_dir, made, out, kind)


def main(build: Callable[..., Path], argv: list[str] | None, *, prog: str, description: str, cache: str, out: str,
         train: int, what: str, min_views: int = MIN_VIEWS, views_hint: str = MIN_VIEWS_HINT) -> None:
    """The command line of a synthetic-item builder ``build(cache, out, train, val, threads, seed, log)``: bad
    arguments are one-line errors, progress goes to stderr."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--cache", type=Path, default=Path(cache), help="base cache (built with views)")
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--train", type=int, default=train, help=f"training {what}")
    p.add_argument("--val", type=int, default=300, help=f"validation {what} (reported separately)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.train < 0 or a.val < 0:
        p.error("--train and --val must be >= 0")
    if not (a.cache / "meta.json").is_file():
        sys.exit(f"error: {a.cache} is not a cache folder (no meta.json)")
    views = a.cache / "views.npy"
    if not views.is_file() or np.load(views, mmap_mode="r").shape[1] < min_views:
        sys.exit(f"error: {a.cache} needs {views_hint}")
    if a.out.resolve() == a.cache.resolve():
        p.error("--out must differ from --cache")
    build(a.cache, a.out, a.train, a.val, a.threads, a.seed, log=lambda m: print(m, file=sys.stderr))
