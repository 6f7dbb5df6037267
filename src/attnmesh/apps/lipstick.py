"""AR lipstick try-on: a lip mask from the refined lip contours and a recolouring in CIELAB that keeps the
lips' own shading and texture.

Mask (:func:`lip_mask`): the polygon of the outer lip loop minus the polygon of the inner loop, so the teeth,
tongue and the dark of an open mouth are never painted. The loops are derived from the ``lips`` edge list of
:func:`attnmesh.render.face_connections` (:func:`attnmesh.apps.blendshapes.contour_loops`; the fixed index
loops ``LIPS_OUTER_*``/``LIPS_INNER_*`` there are the same, checked by the tests). Edges are feathered with a
Gaussian whose sigma scales with the face (2.5 % of the mouth width by default), and the mask is then set to
exactly 0 inside the inner loop (the feather never reaches into the mouth).

Colour (:func:`apply_lipstick`), per lip pixel in CIELAB (L in 0..100):

* chroma: ``a, b`` are replaced by the target's, plus 25 % of the pixel's own deviation from the lips' mean
  chroma (keeps a trace of the natural colour variation);
* lightness: ``L' = L + k (L_target - mean L)``, k = 0.7: the lips' mean moves most of the way to the
  target's lightness while every pixel keeps its offset from the mean (creases, shading, texture);
* gloss (0..1): pixels brighter than the lips' mean by more than one standard deviation are lifted towards
  white in proportion to how much brighter they are;
* the result is blended with the original by ``opacity * mask``; pixels where the mask is 0 are copied
  unchanged (bit-exact).

For video, stability comes from the landmarks: use tracking (``FaceMesh(static_image_mode=False)``) and,
optionally, :class:`attnmesh.pipeline.smoothing.MultiFaceSmoother` (what ``attnmesh makeup`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..topology import LIPS_INNER_LOWER, LIPS_INNER_UPPER, LIPS_OUTER_LOWER, LIPS_OUTER_UPPER

#: Outer and inner lip polygons (closed loops of mesh indices): right corner, along the upper lip to the
#: left corner, back along the lower lip.
OUTER_LOOP: tuple[int, ...] = LIPS_OUTER_UPPER + tuple(reversed(LIPS_OUTER_LOWER[1:-1]))
INNER_LOOP: tuple[int, ...] = LIPS_INNER_UPPER + tuple(reversed(LIPS_INNER_LOWER[1:-1]))

FEATHER_FRACTION = 0.025  # feather sigma as a fraction of the mouth width
CHROMA_KEEP = 0.25
LIGHTNESS_SHIFT = 0.7

COLORS = {  # a few lipstick shades, sRGB
    "red": (190, 20, 40), "classic-red": (190, 20, 40), "crimson": (165, 15, 45), "wine": (114, 20, 44),
    "berry": (140, 30, 80), "plum": (110, 40, 80), "pink": (225, 90, 140), "rose": (200, 90, 110),
    "coral": (240, 95, 80), "orange": (235, 90, 30), "nude": (190, 120, 105), "brown": (130, 70, 55),
    "purple": (110, 40, 130), "black": (30, 25, 30),
}


def parse_color(text: str) -> tuple[int, int, int]:
    """``#RRGGBB`` (or ``RRGGBB``, ``#RGB``) or one of :data:`COLORS` -> an sRGB triple; ValueError otherwise."""
    t = text.strip().lower()
    if t in COLORS:
        return COLORS[t]
    h = t[1:] if t.startswith("#") else t
    if len(h) == 3:
        h = "".join(ch * 2 for ch in h)
    if len(h) == 6:
        try:
            return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
        except ValueError:
            pass
    raise ValueError(f"bad colour {text!r}: give #RRGGBB or one of {', '.join(sorted(COLORS))}")


def _landmark_list(faces_or_landmarks: object) -> list[np.ndarray]:
    if isinstance(faces_or_landmarks, np.ndarray):
        arr = faces_or_landmarks
        return [arr] if arr.ndim == 2 else list(arr)
    if hasattr(faces_or_landmarks, "landmarks"):
        return [np.asarray(faces_or_landmarks.landmarks)]
    out = []
    for f in faces_or_landmarks:  # type: ignore[union-attr]
        out.append(np.asarray(f.landmarks if hasattr(f, "landmarks") else f))
    return out


def lip_polygons(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(outer (22, 2), inner (20, 2)) lip polygons in image pixels."""
    lm = np.asarray(landmarks, np.float64)
    return lm[list(OUTER_LOOP), :2], lm[list(INNER_LOOP), :2]


def _fill(mask: np.ndarray, polygon: np.ndarray, value: float, offset: np.ndarray) -> None:
    shift = 4
    pts = np.round((polygon - offset) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [pts], float(value), lineType=cv2.LINE_AA, shift=shift)


def lip_mask(landmarks: np.ndarray, image_shape: Sequence[int], feather_px: float | None = None) -> np.ndarray:
    """Float32 (H, W) mask in [0, 1] of the lips of one face (``landmarks``: (>= 468, 2 or 3) image pixels),
    or of several faces given an (F, K, 3) array or a list. ``feather_px``: Gaussian sigma of the edge in
    pixels (default 2.5 % of the mouth width; 0: hard anti-aliased edges). Inside the inner lip loop it is 0."""
    h, w = int(image_shape[0]), int(image_shape[1])
    mask = np.zeros((h, w), np.float32)
    for lm in _landmark_list(landmarks):
        outer, inner = lip_polygons(lm)
        width = float(np.linalg.norm(lm[61, :2] - lm[291, :2]))
        sigma = FEATHER_FRACTION * width if feather_px is None else float(feather_px)
        pad = int(np.ceil(3 * sigma)) + 2
        x0, y0 = np.floor(outer.min(0)).astype(int) - pad
        x1, y1 = np.ceil(outer.max(0)).astype(int) + pad + 1
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        off = np.array([x0, y0], np.float64)
        local = np.zeros((y1 - y0, x1 - x0), np.float32)
        _fill(local, outer, 1.0, off)
        hole = np.zeros_like(local)
        _fill(hole, inner, 1.0, off)
        local = np.clip(local - hole, 0.0, 1.0)
        if sigma > 0:
            local = cv2.GaussianBlur(local, (0, 0), sigma)
        local[hole >= 0.5] = 0.0  # nothing inside the mouth opening, whatever the feather
        crop = local[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        np.maximum(mask[cy0:cy1, cx0:cx1], crop, out=mask[cy0:cy1, cx0:cx1])
    return np.clip(mask, 0.0, 1.0)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def apply_lipstick(image: np.ndarray, faces_or_landmarks: object, color_rgb: Sequence[int] | str,
                   opacity: float = 0.6, gloss: float = 0.0, mask: np.ndarray | None = None) -> np.ndarray:
    """A copy of RGB uint8 ``image`` with lipstick of ``color_rgb`` (sRGB triple or a name/#RRGGBB) on the
    lips of ``faces_or_landmarks`` (a Face, a list of Faces, a (K, 3) or (F, K, 3) landmark array).
    ``opacity`` and ``gloss`` in [0, 1]. ``mask``: a precomputed :func:`lip_mask` (else computed). Pixels where
    the mask is 0 are returned unchanged."""
    if isinstance(color_rgb, str):
        color_rgb = parse_color(color_rgb)
    if not (0.0 <= opacity <= 1.0 and 0.0 <= gloss <= 1.0):
        raise ValueError("opacity and gloss must be in [0, 1]")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    out = image.copy()
    if mask is None:
        mask = lip_mask(faces_or_landmarks, image.shape)
    ys, xs = np.nonzero(mask > 0)
    if len(ys) == 0 or opacity == 0.0:
        return out
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = mask[y0:y1, x0:x1]
    lab = _lab(image[y0:y1, x0:x1])
    target = _lab(np.array([[color_rgb]], np.uint8))[0, 0]
    weights = m / m.sum()
    mean = (lab * weights[..., None]).sum((0, 1))
    std_l = float(np.sqrt(((lab[..., 0] - mean[0]) ** 2 * weights).sum()))
    new = np.empty_like(lab)
    new[..., 0] = lab[..., 0] + LIGHTNESS_SHIFT * (target[0] - mean[0])
    new[..., 1:] = target[1:] + CHROMA_KEEP * (lab[..., 1:] - mean[1:])
    if gloss > 0:
        bright = np.clip((lab[..., 0] - mean[0] - std_l) / max(std_l, 1e-3), 0.0, 1.5) / 1.5
        lift = gloss * bright
        new[..., 0] += lift * (100.0 - new[..., 0]) * 0.8
        new[..., 1:] *= 1.0 - 0.7 * lift[..., None]
    new[..., 0] = np.clip(new[..., 0], 0.0, 100.0)
    rgb = np.clip(cv2.cvtColor(new, cv2.COLOR_LAB2RGB) * 255.0, 0.0, 255.0)
    alpha = (opacity * m)[..., None]
    blended = image[y0:y1, x0:x1].astype(np.float32) * (1.0 - alpha) + rgb * alpha
    region = out[y0:y1, x0:x1]
    inside = m > 0
    region[inside] = np.clip(np.round(blended[inside]), 0, 255).astype(np.uint8)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def polygon_mask(outer: np.ndarray, inner: np.ndarray | None, image_shape: Sequence[int],
                 supersample: int = 1) -> np.ndarray:
    """Boolean (H·s, W·s) mask of polygon ``outer`` minus polygon ``inner`` (pixel centres inside), on a grid
    ``supersample`` times finer than the image (s > 1 approximates the polygons' areas, free of pixel
    quantisation)."""
    s = int(supersample)
    h, w = int(image_shape[0]) * s, int(image_shape[1]) * s
    m = np.zeros((h, w), np.uint8)
    shift = 4

    def pts(poly: np.ndarray) -> np.ndarray:
        return np.round(((np.asarray(poly) + 0.5) * s - 0.5) * (1 << shift)).astype(np.int32)

    cv2.fillPoly(m, [pts(outer)], 1, shift=shift)
    if inner is not None:
        cv2.fillPoly(m, [pts(inner)], 0, shift=shift)
    return m.astype(bool)


def w300_lip_polygons(points68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(outer, inner) lip polygons of a 300-W 68-point annotation: points 48-59 and 60-67."""
    p = np.asarray(points68, np.float64)
    return p[48:60], p[60:68]
