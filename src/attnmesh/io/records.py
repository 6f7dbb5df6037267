"""Output records of a batch of photos: what ``attnmesh images`` and :class:`attnmesh.ray.FaceMeshPredictor`
write, built once for both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .images import ImageError
from .outputs import error_record, face_record, image_record, pose_records


def image_records(fm: Any, loaded: Sequence[tuple[Any, Any]], debug: bool = False
                  ) -> list[tuple[Any, dict, Any, Any]]:
    """The output records of one batch of images, in order: ``loaded`` holds (path, RGB uint8 image or the
    :class:`attnmesh.io.ImageError` that loading it raised) per input; the result (path, record, image, faces)
    per input, where a failure's record is :func:`attnmesh.io.outputs.error_record` (image and faces None) and a
    success's is :func:`attnmesh.io.outputs.image_record` with its faces (:class:`attnmesh.Face`). One detector
    and mesh pass for the batch (``fm.process_batch``). Shared by ``attnmesh images`` and :mod:`attnmesh.ray`;
    ``debug`` re-raises a failing batch instead of retrying its images one by one."""
    good = [im for _, im in loaded if not isinstance(im, ImageError)]
    results = dict(zip((id(im) for im in good), _process(fm, good, debug)))
    poses = _poses(good, results)
    out: list[tuple[Any, dict, Any, Any]] = []
    for path, im in loaded:
        if isinstance(im, ImageError):
            out.append((path, error_record(path, im.problem), None, None))
            continue
        faces = results[id(im)]
        if isinstance(faces, BaseException):
            out.append((path, error_record(path, f"internal error: {type(faces).__name__}: {faces}"), None, None))
            continue
        size = (int(im.shape[1]), int(im.shape[0]))
        try:
            record = image_record(path, *size, [face_record(f, size, pose=poses[id(f)]) for f in faces])
        except ValueError as e:
            if debug:
                raise
            out.append((path, error_record(path, f"internal error: {e}"), None, None))
            continue
        out.append((path, record, im, faces))
    return out


def _poses(images: list[Any], results: dict[int, Any]) -> dict[int, Any]:
    """The head pose record of every face found in ``images`` (keyed by ``id(face)``), in one vectorised fit."""
    faces, sizes = [], []
    for im in images:
        found = results[id(im)]
        if not isinstance(found, BaseException):
            faces += found
            sizes += [(im.shape[1], im.shape[0])] * len(found)
    if not faces:
        return {}
    # one landmark model per FaceMesh: every face has the same number of points (fewer than the mesh's: no pose)
    return dict(zip((id(f) for f in faces), pose_records(np.stack([f.landmarks for f in faces]), sizes)))


def _process(fm: Any, images: list[Any], debug: bool) -> list[Any]:
    """Faces per image; one batch pass, or image by image if the batch fails (then a failing image gets
    its exception in place of its faces, and the others still get results)."""
    if not images:
        return []
    try:
        return fm.process_batch(images)
    except Exception:
        if debug:
            raise
    results: list[Any] = []
    for im in images:
        try:
            results.append(fm.process_batch([im])[0])
        except Exception as e:  # noqa: PERF203 - one bad image must not stop the run
            results.append(e)
    return results
