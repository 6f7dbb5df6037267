"""Render a face mesh with the canonical topology (468 vertices + our 10 iris points, centimetres, canonical
frame) as a flat-shaded mesh with a wireframe, with OpenCV only: painter's algorithm over the 898 triangles,
Lambert shading from a light above the camera, eye openings painted white with the irises drawn inside."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .blendshapes import LEFT_EYE_LOWER, LEFT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER
from .laplacian import canonical_editing_mesh
from .lipstick import INNER_LOOP, OUTER_LOOP

SKIN = np.array([205, 170, 150], np.float64)  # RGB
LIGHT = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])


@functools.lru_cache(maxsize=1)
def _mouth_triangles() -> np.ndarray:
    """Triangles spanning the mouth opening (all three corners on the inner lip loop)."""
    tri = canonical_editing_mesh()[1]
    inner = set(INNER_LOOP)
    return np.array([all(int(i) in inner for i in t) for t in tri])


AVATAR_SIZE = 480  # side of the rendered avatar image, pixels


def render_mesh(points: np.ndarray, size: int = AVATAR_SIZE, rotation: np.ndarray | None = None,
                wireframe: bool = True) -> np.ndarray:
    """RGB uint8 (size, size, 3) image of ``points`` (478, 3) cm, optionally turned by ``rotation`` (3, 3),
    seen from the front with an orthographic camera (the face fills ~80 % of the height)."""
    v = np.asarray(points, np.float64)
    if rotation is not None:
        centre = v[:468].mean(0)
        v = (v - centre) @ np.asarray(rotation).T + centre
    tri = canonical_editing_mesh()[1]
    img = np.full((size, size, 3), 32, np.uint8)
    scale = 0.8 * size / 19.0
    xy = np.c_[size / 2 + v[:, 0] * scale, size / 2 - (v[:, 1] + 0.5) * scale]
    shift = 4
    p = np.round(xy * (1 << shift)).astype(np.int32)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    normals = np.cross(b - a, c - a)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    depth = (a[:, 2] + b[:, 2] + c[:, 2]) / 3
    mouth = _mouth_triangles()
    for k in np.argsort(depth):
        if normals[k, 2] <= 0:
            continue
        shade = 0.25 + 0.75 * max(0.0, float(normals[k] @ LIGHT))
        colour = (60, 20, 30) if mouth[k] else tuple(int(x) for x in np.clip(SKIN * shade, 0, 255))
        cv2.fillConvexPoly(img, p[tri[k]], colour, lineType=cv2.LINE_AA, shift=shift)
        if wireframe:
            cv2.polylines(img, [p[tri[k]]], True, tuple(int(x * 0.6) for x in colour), 1, cv2.LINE_AA, shift)
    for upper, lower, centre in ((RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, 468), (LEFT_EYE_UPPER, LEFT_EYE_LOWER, 473)):
        loop = list(upper) + list(reversed(lower[1:-1]))
        eye = np.zeros(img.shape[:2], np.uint8)
        cv2.fillPoly(eye, [p[loop]], 255, cv2.LINE_AA, shift)
        layer = img.copy()
        cv2.fillPoly(layer, [p[loop]], (235, 235, 230), cv2.LINE_AA, shift)
        radius = int(round(np.linalg.norm(xy[centre + 1] - xy[centre + 3]) / 2 * (1 << shift)))
        cv2.circle(layer, tuple(p[centre]), radius, (70, 110, 160), -1, cv2.LINE_AA, shift)
        cv2.circle(layer, tuple(p[centre]), radius // 2, (10, 10, 10), -1, cv2.LINE_AA, shift)
        alpha = (eye.astype(np.float32) / 255.0)[..., None]
        img = np.round(img * (1 - alpha) + layer * alpha).astype(np.uint8)
        cv2.polylines(img, [p[loop]], True, (60, 40, 40), 1, cv2.LINE_AA, shift)
    for loop in (OUTER_LOOP, INNER_LOOP):
        cv2.polylines(img, [p[list(loop)]], True, (150, 60, 70), 2, cv2.LINE_AA, shift)
    return img
