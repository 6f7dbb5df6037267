"""Regions of interest: rotated square crops, their image warps, and projection back to the image.

Frames:

* **image pixels**: x right, y down, continuous, OpenCV convention (the centre of pixel (i, j) is at (i, j)).
* **crop pixels**: the ``size x size`` model input cut from a :class:`Roi`; crop point (u, v) maps to
  ``center + R(rotation) · side · (u/size - 1/2, v/size - 1/2)`` in image pixels, with
  ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` (a positive rotation turns the crop clockwise on screen).

These follow MediaPipe's ``ImageToTensorCalculator`` (OpenCV path), ``RectTransformationCalculator``,
``DetectionsToRectsCalculator`` and ``LandmarkProjectionCalculator``, converted from normalized units to
pixels (the ROIs are square in pixels, so the two are equivalent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

FLT_MIN = np.float32(1.1754944e-38)


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels: centre (``center_x``, ``center_y``), side ``size``, ``rotation`` in
    radians (see the module docstring for the direction)."""

    center_x: float
    center_y: float
    size: float
    rotation: float = 0.0

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.center_x, self.center_y, self.size, self.rotation)

    def box(self) -> tuple[float, float, float, float]:
        """Axis-aligned (x0, y0, x1, y1) of the unrotated square (what MediaPipe's IoU association uses)."""
        h = self.size / 2
        return (self.center_x - h, self.center_y - h, self.center_x + h, self.center_y + h)


def normalize_radians(angle: float) -> float:
    """Wrap to [-pi, pi)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation_from_points(x0: float, y0: float, x1: float, y1: float, target: float = 0.0) -> float:
    """Rotation (radians) that makes the image-pixel direction (x0, y0) -> (x1, y1) point at ``target``."""
    return normalize_radians(target - math.atan2(-(y1 - y0), x1 - x0))


def square_roi(x0: float, y0: float, x1: float, y1: float, rotation: float, scale: float) -> Roi:
    """The ``square_long`` ROI of a box (image pixels): centred on the box, side ``scale * max(w, h)``."""
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, scale * max(x1 - x0, y1 - y0), rotation)


def roi_from_points(points: np.ndarray, left: int, right: int, scale: float, image_size: tuple[int, int]) -> Roi:
    """ROI around ``points`` (K, 2+) in image pixels, rotated so that point ``left`` -> ``right`` is horizontal.

    The box is taken in normalized coordinates with MediaPipe's quirk that the running max starts at
    FLT_MIN (so an all-negative box clamps at 0); ``image_size`` is (width, height).
    """
    w, h = image_size
    xs = np.float32(points[:, 0]) / np.float32(w)
    ys = np.float32(points[:, 1]) / np.float32(h)
    x0, x1 = float(min(xs.min(), np.float32(np.inf))) * w, float(max(xs.max(), FLT_MIN)) * w
    y0, y1 = float(ys.min()) * h, float(max(ys.max(), FLT_MIN)) * h
    rot = rotation_from_points(points[left, 0], points[left, 1], points[right, 0], points[right, 1])
    return square_roi(x0, y0, x1, y1, rot, scale)


def roi_corners(roi: Roi) -> np.ndarray:
    """The 4 corners, as ``cv2.boxPoints`` orders them: bottom-left, top-left, top-right, bottom-right
    (float32, (4, 2), image pixels)."""
    rect = ((roi.center_x, roi.center_y), (roi.size, roi.size), roi.rotation * 180.0 / math.pi)
    return cv2.boxPoints(rect).astype(np.float32)


def crop_matrix(roi: Roi, size: int) -> np.ndarray:
    """3x3 perspective matrix mapping image pixels into the ``size x size`` crop, built the way MediaPipe
    does it (``boxPoints`` -> ``getPerspectiveTransform``)."""
    return _matrix_from_corners(roi_corners(roi), size)


def _matrix_from_corners(corners: np.ndarray, size: int) -> np.ndarray:
    dst = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    return cv2.getPerspectiveTransform(corners, dst)


def crop_image(image: np.ndarray, roi: Roi, size: int, border: str = "replicate", prefetch: bool = True
               ) -> np.ndarray:
    """Warp ``roi`` of a uint8 HxWx3 image into a ``size x size`` uint8 crop (bilinear, OpenCV fixed point).

    ``border``: ``"replicate"`` (the landmark models) or ``"zero"`` (the detector's letterbox). ``prefetch``:
    first read the ROI's bounding box row by row (:func:`_prefetch`; the crop is the same either way).
    """
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    corners = roi_corners(roi)
    if prefetch:
        _prefetch(image, corners)
    return cv2.warpPerspective(image, _matrix_from_corners(corners, size), (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=mode, borderValue=0)


def _prefetch(image: np.ndarray, corners: np.ndarray) -> None:
    """Read the pixels inside the bounding box of a ROI's ``corners`` (4, 2), with a 2 px margin, in memory
    order, so that the warp finds them in the cache.

    A rotated warp gathers its source pixels across rows, an order the CPU's prefetchers do not follow; on a frame
    that is no longer in the cache (a video decoded ahead, a frame queue) each of those reads waited for memory.
    A sequential pass streams them in: a 192 px face crop of a 512 px video frame took 0.31 ms instead of 0.43
    (2-vCPU AMD EPYC; 0.01 ms more on a frame still in the cache)."""
    if not np.isfinite(corners).all():
        return  # nothing to read ahead: the warp decides what such a ROI gives, as without the prefetch
    (x0, y0), (x1, y1) = corners.min(0) - 2, corners.max(0) + 3
    x0, x1 = max(0, int(x0)), min(image.shape[1], int(x1))
    y0, y1 = max(0, int(y0)), min(image.shape[0], int(y1))
    if x1 > x0 and y1 > y0:
        cv2.sumElems(image[y0:y1, x0:x1])


def crop_to_image_affine(roi: Roi, size: int) -> np.ndarray:
    """2x3 affine mapping crop pixels (u, v) to image pixels (the inverse of :func:`crop_matrix`)."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    k = roi.size / size
    a = np.array([[c * k, -s * k], [s * k, c * k]])
    t = np.array([roi.center_x, roi.center_y]) - a @ np.array([size / 2, size / 2])
    return np.concatenate([a, t[:, None]], 1)


def project_to_image(points: np.ndarray, roi: Roi, size: int) -> np.ndarray:
    """Crop-pixel landmarks (K, 2 or 3) -> image pixels; z (relative depth) is scaled like x and y."""
    m = crop_to_image_affine(roi, size)
    out = np.empty_like(points, dtype=np.float32)
    out[:, :2] = points[:, :2] @ m[:, :2].T + m[:, 2]
    if points.shape[1] > 2:
        out[:, 2] = points[:, 2] * (roi.size / size)
    return out


def letterbox_roi(width: int, height: int) -> Roi:
    """The whole image padded to a square (what the detector sees): side ``max(width, height)``."""
    return Roi(width / 2, height / 2, float(max(width, height)), 0.0)


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two axis-aligned boxes (x0, y0, x1, y1)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
