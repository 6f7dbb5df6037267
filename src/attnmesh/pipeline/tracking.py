"""Video tracking: the next frame's ROI from this frame's landmarks, and merging tracked ROIs with detections.

Follows MediaPipe's ``FaceLandmarkLandmarksToRoi`` and ``AssociationNormRectCalculator``. Not in MediaPipe:
:class:`RoiDeadZone`, an optional hold on the tracked ROI while its change is within the landmarks' noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import math

import numpy as np

from .. import topology
from ..geometry.roi import Roi, box_iou, normalize_radians, roi_from_points, rotation_from_points, square_roi

ROI_SCALE = 1.5  # face ROI side = 1.5 x the longer side of the landmarks' (or detection's) box
ASSOCIATION_IOU = 0.5  # a tracked ROI replaces detection ROIs that overlap it by more than this
# RoiDeadZone defaults: changes of the tracked ROI up to these are treated as landmark noise.
ROI_CENTER_TOLERANCE = 0.01  # centre shift, fraction of the ROI's side
ROI_SIZE_TOLERANCE = 0.02  # relative change of the side
ROI_ROTATION_TOLERANCE = math.radians(1.5)  # radians

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


def _dead_zone(change: float, tolerance: float) -> float:
    """The part of ``change`` beyond ``±tolerance`` (0 inside it)."""
    return math.copysign(max(0.0, abs(change) - tolerance), change)


class RoiDeadZone:
    """Holds a tracked face's crop still while the ROI computed from its landmarks stays within a tolerance of
    the crop in use, and otherwise moves it only by the excess (a dead zone on the ROI's centre, side and
    rotation, each apart).

    In video mode the crop of frame t comes from frame t-1's landmarks, so landmark noise moves the crop, and
    a crop moved by a fraction of a pixel gives the network new pixels and new noise. While the head is still,
    the dead zone keeps the crop fixed (the network then sees the same pixels wherever the picture is the
    same); when the head moves, the crop follows at most ``center_tolerance`` of its side behind (1% of a
    300 px crop is 3 px), which the 1.5x margin of the ROI absorbs. Not MediaPipe's behaviour:
    :class:`~attnmesh.FaceMesh` uses it only with ``stabilize_roi=True``.

    ``center_tolerance``: centre shift as a fraction of the held ROI's side; ``size_tolerance``: relative
    change of the side; ``rotation_tolerance``: radians.
    """

    def __init__(self, center_tolerance: float = ROI_CENTER_TOLERANCE, size_tolerance: float = ROI_SIZE_TOLERANCE,
                 rotation_tolerance: float = ROI_ROTATION_TOLERANCE) -> None:
        if min(center_tolerance, size_tolerance, rotation_tolerance) < 0:
            raise ValueError("the ROI tolerances must be >= 0")
        self.center_tolerance = center_tolerance
        self.size_tolerance = size_tolerance
        self.rotation_tolerance = rotation_tolerance

    def __call__(self, held: Roi, new: Roi) -> Roi:
        """The ROI to crop the next frame with, given the ROI ``held`` (the one this frame was cropped with)
        and the ROI ``new`` computed from this frame's landmarks (image pixels, radians)."""
        dx, dy = new.center_x - held.center_x, new.center_y - held.center_y
        shift = math.hypot(dx, dy)
        keep = _dead_zone(shift, self.center_tolerance * held.size)
        cx = held.center_x + (dx * keep / shift if shift > 0 else 0.0)
        cy = held.center_y + (dy * keep / shift if shift > 0 else 0.0)
        size = held.size * math.exp(_dead_zone(math.log(new.size / held.size), self.size_tolerance))
        rotation = held.rotation + _dead_zone(normalize_radians(new.rotation - held.rotation),
                                              self.rotation_tolerance)
        return Roi(cx, cy, size, normalize_radians(rotation))
