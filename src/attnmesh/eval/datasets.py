"""Annotated face data for evaluation (and the fine-tuning in :mod:`attnmesh.train`): face records and the
deterministic split.

Sources (:func:`load_records`):

* a **300-W style folder** (searched recursively): ``NAME.jpg`` (or .png) beside ``NAME.pts`` with 68 points
  (0-based pixel coordinates, iBUG scheme);
* a **landmark file** written by ``attnmesh images --out FILE.jsonl|.npz``: 478 points per face (image paths are
  resolved as written, else relative to the file's folder);
* an **unlabelled image folder**: faces are found by the detector and pseudo-labelled by the teacher.

**Deterministic split** (:func:`split_of`): a record belongs to the validation split when the first 8 hex digits
of ``sha256(key)`` read as a fraction of 2**32 are below ``val_fraction`` (default 0.15), where ``key`` is the
image's last two path components (``"lfpw/image_0001.jpg"``). It depends on nothing but the file name, so the
split is the same on every machine, in every run, and for any subset of the folder. On 300w-train it puts
269 of the 2,012 faces (13.4%) in the validation split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import topology
from ..io import IMAGE_EXTENSIONS

VAL_FRACTION = 0.15


# -- records and splits -----------------------------------------------------------------------------------


@dataclass
class FaceRecord:
    """One face: an image file and what is known about the face (image pixels)."""

    key: str
    image_path: Path
    points68: np.ndarray | None = None  # (68, 2) annotation
    points478: np.ndarray | None = None  # (478, 3) landmark-file labels
    extra: dict = field(default_factory=dict)


def split_key(path: Path) -> str:
    return "/".join(Path(path).parts[-2:])


def split_of(key: str, val_fraction: float = VAL_FRACTION) -> str:
    """``"val"`` or ``"train"``, from a fixed hash of ``key`` (see the module docstring)."""
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "val" if h < val_fraction else "train"


def _keep(key: str, split: str, val_fraction: float) -> bool:
    if split == "all":
        return True
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    return split_of(key, val_fraction) == split


def read_pts(path: Path) -> np.ndarray:
    """(K, 2) points of a ``.pts`` file."""
    text = Path(path).read_text()
    try:
        body = text.split("{", 1)[1].split("}", 1)[0]
        pts = np.array(body.split(), np.float64).reshape(-1, 2)
    except (IndexError, ValueError):
        raise ValueError(f"{path}: not a .pts file") from None
    return pts


def w300_records(root: Path, split: str = "all", val_fraction: float = VAL_FRACTION) -> list[FaceRecord]:
    """300-W style folder: every image with a 68-point ``.pts`` beside it (sorted by path)."""
    out = []
    for pts in sorted(Path(root).rglob("*.pts")):
        image = next((pts.with_suffix(e) for e in IMAGE_EXTENSIONS if pts.with_suffix(e).is_file()), None)
        if image is None:
            continue
        key = split_key(image)
        if _keep(key, split, val_fraction):
            p = read_pts(pts)
            if p.shape != (68, 2):
                raise ValueError(f"{pts}: expected 68 points, found {len(p)}")
            out.append(FaceRecord(key, image, points68=p))
    return out


def image_folder_records(root: Path, split: str = "all", val_fraction: float = VAL_FRACTION) -> list[FaceRecord]:
    """Unlabelled images (to be pseudo-labelled by the teacher)."""
    paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return [FaceRecord(split_key(p), p) for p in paths if _keep(split_key(p), split, val_fraction)]


def landmark_file_records(path: Path, split: str = "all", val_fraction: float = VAL_FRACTION) -> list[FaceRecord]:
    """Faces of an ``attnmesh images`` output (``.jsonl`` or ``.npz``), 478 points each."""
    path = Path(path)
    faces: list[tuple[str, list[np.ndarray]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if not rec.get("error"):
                    lms = [np.asarray(f["landmarks"], np.float64) for f in rec.get("faces") or []]
                    faces.append((rec["path"], lms))
    elif path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for i, p in enumerate(z["path"]):
                n = int(z["num_faces"][i])
                faces.append((str(p), [z["landmarks"][i, j].astype(np.float64) for j in range(n)]))
    else:
        raise ValueError(f"{path}: landmark files must be .jsonl or .npz")
    out = []
    for image, lms in faces:
        image_path = Path(image)
        if not image_path.is_file() and (path.parent / image).is_file():
            image_path = path.parent / image
        key = split_key(image_path)
        if not _keep(key, split, val_fraction):
            continue
        for j, lm in enumerate(lms):
            if lm.shape != (topology.NUM_REFINED_LANDMARKS, 3):
                raise ValueError(f"{path}: {image}: expected 478 landmarks, found {lm.shape[0]}")
            out.append(FaceRecord(f"{key}#{j}", image_path, points478=lm))
    return out


def load_records(source: str | Path, split: str = "all", val_fraction: float = VAL_FRACTION) -> list[FaceRecord]:
    """Records of a 300-W folder, a landmark file or an unlabelled folder (chosen by what ``source`` is)."""
    source = Path(source)
    if source.is_file():
        return landmark_file_records(source, split, val_fraction)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if next(source.rglob("*.pts"), None) is not None:
        return w300_records(source, split, val_fraction)
    return image_folder_records(source, split, val_fraction)


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot read the image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
