"""Draw face meshes on images (NumPy RGB uint8 in, a new array out).

:func:`draw_face_mesh` draws each face's mesh tesselation (the canonical face's triangles, as MediaPipe's
``FACEMESH_TESSELATION``), the contours (lips, eyes, eyebrows, face oval) and the irises (a circle through the
iris ring), with line widths scaled to the face's size; ``pose_axes=True`` adds the head-pose axes (x red
towards the subject's left, y green up, z blue out of the face) from :mod:`attnmesh.geometry.face_geometry`.
It works on any HxWx3 uint8 array (grayscale HxW and RGBA are converted), e.g. frames from OpenCV after
``cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources

import cv2
import numpy as np

from .results import Face

# RGB colours
TESSELATION_COLOR = (192, 192, 192)
CONTOUR_COLORS = {"lips": (255, 64, 96), "right_eye": (64, 255, 64), "left_eye": (64, 160, 255),
                  "right_eyebrow": (64, 255, 64), "left_eyebrow": (64, 160, 255), "face_oval": (255, 255, 255)}
IRIS_COLORS = {"right_iris": (64, 255, 64), "left_iris": (64, 160, 255)}
AXIS_COLORS = ((255, 48, 48), (48, 255, 48), (48, 96, 255))  # x, y, z
NOSE_TIP = 1  # mesh landmark at the tip of the nose


def face_connections() -> dict[str, np.ndarray]:
    """Edge lists (E, 2) of the mesh: ``tesselation``, the contours and the irises (subject's sides)."""
    data = json.loads(resources.files("attnmesh").joinpath("data/face_connections.json").read_text())
    return {k: np.array(v, np.int64) for k, v in data.items() if not k.startswith("_")}


@functools.lru_cache(maxsize=1)
def _connections() -> dict[str, np.ndarray]:
    return face_connections()


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return np.ascontiguousarray(image.copy())
    from .io import as_rgb_uint8

    return as_rgb_uint8(image).copy()


def draw_face_mesh(image: np.ndarray, faces: Sequence[Face], tesselation: bool = True, contours: bool = True,
                   irises: bool = True, pose_axes: bool = False) -> np.ndarray:
    """A copy of RGB ``image`` with each face's tesselation, contours and irises drawn; line widths scale
    with the face's size (inter-ocular distance). ``pose_axes`` adds the head-pose axes at the nose tip (5 cm
    long, in perspective; nothing for a face whose pose cannot be estimated). ``image``: HxWx3 uint8 RGB
    (HxW, RGBA, 16-bit and float in [0, 1] are converted as by :func:`attnmesh.io.as_rgb_uint8`)."""
    out = _as_rgb(image)
    edges = _connections()
    shift = 4  # sub-pixel precision for cv2 drawing
    for face in faces:
        pts = face.landmarks[:, :2]
        iod = float(np.linalg.norm(pts[33] - pts[263]))
        width = max(1, int(round(iod / 80)))

        def lines(e: np.ndarray, color: tuple[int, int, int], w: int) -> None:
            e = e[(e < len(pts)).all(1)]
            segs = np.round(pts[e] * (1 << shift)).astype(np.int32)
            cv2.polylines(out, list(segs), False, color, w, cv2.LINE_AA, shift)

        if tesselation:
            lines(edges["tesselation"], TESSELATION_COLOR, max(1, width // 2))
        if contours:
            for name, color in CONTOUR_COLORS.items():
                lines(edges[name], color, width)
        if irises and len(pts) > 468:
            for name, color in IRIS_COLORS.items():
                ring = pts[np.unique(edges[name])]
                center = ring.mean(0)
                radius = float(np.linalg.norm(ring - center, axis=1).mean())
                cv2.circle(out, tuple(np.round(center * (1 << shift)).astype(int)), int(round(radius * (1 << shift))),
                           color, width, cv2.LINE_AA, shift)
        if pose_axes:
            _draw_axes(out, face.landmarks, max(1, width))
    return out


def pose_axes_points(landmarks: np.ndarray, image_size: tuple[int, int], length_cm: float = 5.0) -> np.ndarray | None:
    """(4, 2) image pixels of the head-pose axes of one face: the origin (the canonical nose tip carried by
    the pose) and the ends of its x, y, z axes ``length_cm`` long; None when the pose cannot be estimated."""
    from .geometry.face_geometry import PerspectiveCamera, estimate_face_geometry, load_canonical_face

    try:
        geometry = estimate_face_geometry(landmarks, image_size)
    except ValueError:
        return None
    origin = load_canonical_face().vertices[NOSE_TIP]
    canonical = np.vstack([origin, origin + length_cm * np.eye(3)])
    camera = canonical @ geometry.rotation.T + geometry.translation
    if (camera[:, 2] >= -1e-6).any():  # behind the camera
        return None
    points = PerspectiveCamera().project(camera, image_size)
    return points if np.isfinite(points).all() else None


def _draw_axes(out: np.ndarray, landmarks: np.ndarray, width: int) -> None:
    points = pose_axes_points(landmarks, (out.shape[1], out.shape[0]))
    if points is None:
        return
    shift = 4
    p = np.round(points * (1 << shift)).astype(np.int64)
    if np.abs(p).max() > 2**30:
        return
    for end, color in zip(p[1:], AXIS_COLORS):
        cv2.arrowedLine(out, tuple(int(v) for v in p[0]), tuple(int(v) for v in end), color, width + 1,
                        cv2.LINE_AA, shift, 0.15)
