"""Approximate eye tracking from the Attention Mesh's irises.

Per eye (subject's sides): the iris centre (landmark 468 / 473, image pixels), the iris diameter in pixels
(the mean of the two distances across the iris ring, 469-471 and 470-472) and in millimetres, assuming the
human iris is 11.7 mm across (it varies by about ±0.5 mm between people), with the distance of the eye from
the camera that this implies for a pinhole of focal length ``focal_px``; and a gaze direction.

The gaze is **approximate**: the iris centre is brought into the canonical face frame (head pose removed,
:func:`attnmesh.apps.blendshapes.metric_landmarks`); the eyeball centre is assumed to lie 1.2 cm (a typical
eyeball radius) behind the rest position of the iris, taken as 1 mm in front of the centroid of the person's own
16-point eye contour. The gaze in the head frame is the direction from that centre through the iris centre; the
head pose then turns it into camera space. Nobody's eyeball is exactly there, the eyelids move the contour
centroid (looking down lowers the upper lid), and the iris landmarks are a few tenths of a millimetre noisy:
expect errors of several degrees and a per-person offset (subtract a calibration frame where that matters).
On the astronaut photo (looking roughly into the camera) the two eyes come out within about 5° of straight
ahead in the head frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

IRIS_DIAMETER_MM = 11.7


@dataclass(frozen=True)
class EyeGaze:
    """``center_px`` (2,); ``diameter_px``; ``diameter_mm`` (the assumed 11.7); ``distance_cm`` from the camera
    (NaN without ``focal_px``); ``direction_head`` (3,) unit vector in the canonical face frame (x subject's
    left, y up, z out of the face); ``direction_camera`` (3,) the same in camera space (x right, y up, z
    towards the viewer: a gaze into the camera is about (0, 0, 1)); ``yaw``/``pitch`` degrees of the gaze in
    the head frame (> 0: towards the subject's left / up)."""

    center_px: np.ndarray
    diameter_px: float
    diameter_mm: float
    distance_cm: float
    direction_head: np.ndarray
    direction_camera: np.ndarray
    yaw: float
    pitch: float


def iris_diameter_px(landmarks: np.ndarray, center: int) -> float:
    lm = np.asarray(landmarks, np.float64)[:, :2]
    return float((np.linalg.norm(lm[center + 1] - lm[center + 3]) + np.linalg.norm(lm[center + 2] - lm[center + 4])) / 2)


def estimate_gaze(landmarks: np.ndarray, image_size: tuple[int, int]) -> dict[str, EyeGaze]:
    """``{"right": EyeGaze, "left": EyeGaze}`` for one face's (478, 3) image-pixel landmarks in an image of
    ``image_size`` (width, height), using MediaPipe's 63° vertical field of view for the distance."""
    from ..geometry.face_geometry import PerspectiveCamera, estimate_face_geometry
    from .blendshapes import (EYEBALL_RADIUS_CM, LEFT_EYE_LOWER, LEFT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER,
                              metric_landmarks)

    lm = np.asarray(landmarks, np.float64)
    if lm.shape[0] < 478:
        raise ValueError("gaze needs the 478 refined landmarks (refine_landmarks=True)")
    geometry = estimate_face_geometry(lm, image_size)
    metric = metric_landmarks(lm, image_size)
    focal = PerspectiveCamera().focal_length_px(image_size)
    out = {}
    for side, centre, contour in (("right", 468, RIGHT_EYE_UPPER + RIGHT_EYE_LOWER),
                                  ("left", 473, LEFT_EYE_UPPER + LEFT_EYE_LOWER)):
        eyeball = metric[list(set(contour))].mean(0) + np.array([0.0, 0.0, 0.1 - EYEBALL_RADIUS_CM])
        d = metric[centre] - eyeball
        d /= np.linalg.norm(d)
        cam = geometry.rotation @ d
        diameter = iris_diameter_px(lm, centre)
        out[side] = EyeGaze(center_px=lm[centre, :2].copy(), diameter_px=diameter, diameter_mm=IRIS_DIAMETER_MM,
                            distance_cm=focal * IRIS_DIAMETER_MM / 10.0 / diameter if diameter > 0 else math.nan,
                            direction_head=d, direction_camera=cam,
                            yaw=math.degrees(math.atan2(d[0], d[2])), pitch=math.degrees(math.atan2(d[1], d[2])))
    return out
