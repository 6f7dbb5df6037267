"""Video tracking: the next frame's ROI from this frame's landmarks, and merging tracked ROIs with detections.

Follows MediaPipe's ``FaceLandmarkLandmarksToRoi`` and ``AssociationNormRectCalculator``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from .. import topology
from ..geometry.roi import Roi, box_iou, roi_from_points, rotation_from_points, square_roi

ROI_SCALE = 1.5  # face ROI side = 1.5 x the longer side of the landmarks' (or detection's) box
ASSOCIATION_IOU = 0.5  # a tracked ROI replaces detection ROIs that overlap it by more than this

T = TypeVar("T")


def roi_from_landmarks(landmarks: np.ndarray, image_size: tuple[int, int]) -> Roi:
    """Face ROI for the next frame from (K, 2+) landmarks in image pixels (all K points, 468 or 478):
    their bounding box, rotated so that the outer eye corners 33 -> 263 are horizontal, square, x1.5.
    ``image_size`` is (width, height)."""
    return roi_from_points(landmarks, topology.RIGHT_EYE_OUTER_CORNER, topology.LEFT_EYE_OUTER_CORNER,
                           ROI_SCALE, image_size)


def associate(detected: Sequence[tuple[Roi, T]], tracked: Sequence[tuple[Roi, T]],
              threshold: float = ASSOCIATION_IOU) -> list[tuple[Roi, T]]:
    """Merge detection ROIs with tracked ROIs (each paired with a payload), as MediaPipe does: start from
    the detections in order; for each tracked ROI, drop every element whose IoU with it (unrotated boxes)
    is above ``threshold``, then append it."""
    out = list(detected)
    for roi, payload in tracked:
        box = roi.box()
        out = [(r, p) for r, p in out if box_iou(r.box(), box) <= threshold]
        out.append((roi, payload))
    return out


def roi_from_detection(box: np.ndarray, keypoints: np.ndarray) -> Roi:
    """Face ROI from a detection (image pixels): the box's centre, rotated so that the eye keypoints
    0 -> 1 are horizontal, square on the box's longer side, x1.5."""
    rotation = rotation_from_points(keypoints[0, 0], keypoints[0, 1], keypoints[1, 0], keypoints[1, 1])
    return square_roi(float(box[0]), float(box[1]), float(box[2]), float(box[3]), rotation, ROI_SCALE)
