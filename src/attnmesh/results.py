"""Result types of the pipelines. All coordinates are image pixels (x right, y down, pixel centres at
integers); ``z`` is relative depth in pixels on the same scale as x (smaller = closer to the camera)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .geometry.roi import Roi

# BlazeFace keypoint order. Sides are the subject's: keypoint 0 is the right eye, which is on the image-left
# side of an unmirrored photo.
DETECTION_KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion",
                       "left_ear_tragion")


@dataclass
class Detection:
    """One face found by the detector.

    ``score``: sigmoid confidence in [0, 1]; ``box``: (4,) float32 ``x0, y0, x1, y1``;
    ``keypoints``: (6, 2) float32 in the order of :data:`DETECTION_KEYPOINTS`.
    """

    score: float
    box: np.ndarray
    keypoints: np.ndarray


@dataclass
class Face:
    """One face mesh.

    ``landmarks``: (478, 3) float32 with refinement, (468, 3) without; ``score``: face presence in [0, 1]
    (sigmoid of the model's face flag); ``roi``: the crop the landmarks were predicted from;
    ``detection``: the detection that started this face, or None when it was tracked from the previous frame;
    ``track_id``: in video mode, the same integer for the same face from frame to frame (a face that is lost
    and found again gets a new one); None in static mode; ``readout68``: the model's 68-point read-out (set by
    ``FaceMesh``), see :attr:`landmarks68`.
    """

    landmarks: np.ndarray
    score: float
    roi: Roi
    detection: Detection | None = None
    track_id: int | None = None
    readout68: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def landmarks68(self) -> np.ndarray | None:
        """(68, 2) float32 iBUG 300-W points (image pixels) read out of :attr:`landmarks` by the model's shipped
        read-out (:mod:`attnmesh.weights.readout`; the fine-tuned ``attention_mesh_300w`` has its own, the other
        models the documented fixed map); None for a face made without one."""
        return None if self.readout68 is None else self.readout68(self.landmarks)

    @property
    def box(self) -> np.ndarray:
        """(4,) ``x0, y0, x1, y1``: the detection box, or the landmarks' bounding box when tracked."""
        if self.detection is not None:
            return self.detection.box
        lo, hi = self.landmarks[:, :2].min(0), self.landmarks[:, :2].max(0)
        return np.concatenate([lo, hi]).astype(np.float32)
