"""Draw face meshes on images (NumPy RGB uint8 in, a new array out)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

import cv2
import numpy as np

from .pipeline.results import Face

# RGB colours
TESSELATION_COLOR = (192, 192, 192)
CONTOUR_COLORS = {"lips": (255, 64, 96), "right_eye": (64, 255, 64), "left_eye": (64, 160, 255),
                  "right_eyebrow": (64, 255, 64), "left_eyebrow": (64, 160, 255), "face_oval": (255, 255, 255)}
IRIS_COLORS = {"right_iris": (64, 255, 64), "left_iris": (64, 160, 255)}


def face_connections() -> dict[str, np.ndarray]:
    """Edge lists (E, 2) of the mesh: ``tesselation``, the contours and the irises (subject's sides)."""
    data = json.loads(resources.files("attnmesh").joinpath("data/face_connections.json").read_text())
    return {k: np.array(v, np.int64) for k, v in data.items() if not k.startswith("_")}


def draw_face_mesh(image: np.ndarray, faces: Sequence[Face], tesselation: bool = True, contours: bool = True,
                   irises: bool = True) -> np.ndarray:
    """A copy of RGB ``image`` with each face's tesselation, contours and irises drawn; line widths scale
    with the face's size (inter-ocular distance)."""
    out = np.ascontiguousarray(image.copy())
    edges = face_connections()
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
    return out
