"""The two-stage cascade that the Attention Mesh paper compares with: MediaPipe's face_landmark model (468
points) followed by the separate iris model on eye crops taken from the image, merged into 478 landmarks
as MediaPipe's older iris pipeline (``iris_tracking`` graphs, ``IrisLandmarkLeftAndRightCpu``) did.

Per face ROI::

    image ─ crop 192x192 ─ FaceLandmarkModel ─► mesh (468, 3) ─ project ─► mesh, image pixels
    mesh[33], mesh[133] ─► right-eye ROI ─ crop 64x64 ─────────────┐   (subject's right eye, image-left)
    mesh[362], mesh[263] ─► left-eye ROI ─ crop 64x64, mirrored ───┤
                                       IrisLandmarkModel (all eyes of all faces in one batch)
                                       eye (71, 3), iris (5, 3) ─ un-mirror ─ project ─► image pixels
    merge: eye contours overwrite x, y, z of mesh points RIGHT_EYE / LEFT_EYE; irises -> slots 468..477

Unlike the Attention Mesh (which keeps the mesh z for the eyes and gives each iris the mean z of its eye's
inner contour), the cascade writes the iris model's z for the 142 eye points and the 10 iris points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .. import topology
from ..geometry.roi import Roi, crop_image, project_to_image, roi_from_points
from ..models.cascade import EYE_ROI_SCALE, LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS, merge_eyes
from ..models.face_landmark import FaceLandmarkModel
from ..models.iris import NUM_EYE_POINTS, IrisLandmarkModel
from ..weights import load_model_weights
from .tensors import crops_to_tensor

EYE_CROP_MODES = ("mediapipe", "bilinear")


def eye_roi(landmarks: np.ndarray, corners: tuple[int, int], image_size: tuple[int, int]) -> Roi:
    """Eye ROI from face landmarks (K, 2+) in image pixels, as MediaPipe's ``IrisLandmarkLandmarksToRoi``:
    the box of the two ``corners``, rotated so that ``corners[0] -> corners[1]`` is horizontal, square on
    its longer side, x2.3. ``image_size`` is (width, height)."""
    return roi_from_points(landmarks[list(corners)], 0, 1, EYE_ROI_SCALE, image_size)


def _round_half_away(x: float) -> int:
    """C++ ``std::round`` (halves away from zero), unlike Python's banker's ``round``."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def crop_eye(image: np.ndarray, roi: Roi, size: int, mirror: bool, mode: str = "mediapipe") -> np.ndarray:
    """``size x size`` uint8 crop of ``roi`` from a uint8 HxWx3 image, mirrored left-right if ``mirror``.

    ``mode="mediapipe"`` follows the old CPU calculators as their source reads (MediaPipe 0.10.21 ships
    no iris graph to compare with at run time): ``ImageCroppingCalculator`` rounds the
    ROI's centre and side to whole pixels and warps it at its own resolution with nearest-neighbour
    sampling (corners mapped to pixel centres 0 and side-1), then ``ImageTransformationCalculator`` resizes
    it to ``size`` (``FIT``: INTER_AREA when shrinking, INTER_LINEAR when enlarging; the ROI is square, so
    there is no letterbox) and mirrors it. Landmarks are nevertheless projected back with the unrounded
    ROI and edge-to-edge scaling, as MediaPipe does, which leaves a sub-pixel offset of its own.
    ``mode="bilinear"`` uses the landmark models' crop (:func:`attnmesh.geometry.roi.crop_image`), which is
    consistent with :func:`attnmesh.geometry.roi.project_to_image`.
    """
    if mode == "bilinear":
        crop = crop_image(image, roi, size, border="replicate")
    elif mode == "mediapipe":
        height, width = image.shape[:2]
        # NormalizedRect (float32) -> integer pixels, as GetCropSpecs computes them.
        cx = _round_half_away(float(np.float32(roi.center_x / width) * np.float32(width)))
        cy = _round_half_away(float(np.float32(roi.center_y / height) * np.float32(height)))
        side = max(1, _round_half_away(float(np.float32(roi.size / width) * np.float32(width))))
        box = cv2.boxPoints(((float(cx), float(cy)), (float(side), float(side)),
                             float(np.float32(roi.rotation) * np.float32(180.0 / math.pi))))
        dst = np.array([[0, side - 1], [0, 0], [side - 1, 0], [side - 1, side - 1]], np.float32)
        m = cv2.getPerspectiveTransform(box.astype(np.float32), dst)
        patch = cv2.warpPerspective(image, m, (side, side), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_REPLICATE)
        crop = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    else:
        raise ValueError(f"eye crop mode must be one of {EYE_CROP_MODES}, got {mode!r}")
    return np.ascontiguousarray(crop[:, ::-1]) if mirror else crop


class TorchCascadeRunner:
    """face_landmark + iris_landmark with their shipped weights: 478 landmarks for face ROIs of an image.

    ``eye_crop``: how eye crops are cut from the image (see :func:`crop_eye`); ``"mediapipe"`` reproduces
    the old iris pipeline, ``"bilinear"`` is the sub-pixel-consistent alternative.
    """

    input_size = FaceLandmarkModel.input_size
    eye_input_size = IrisLandmarkModel.input_size
    num_landmarks = topology.NUM_REFINED_LANDMARKS

    def __init__(self, device: str | torch.device = "cpu", eye_crop: str = "mediapipe") -> None:
        if eye_crop not in EYE_CROP_MODES:
            raise ValueError(f"eye_crop must be one of {EYE_CROP_MODES}, got {eye_crop!r}")
        self.device = torch.device(device)
        self.eye_crop = eye_crop
        self.face_net = load_model_weights(FaceLandmarkModel(), "face_landmark").eval().to(self.device)
        self.iris_net = load_model_weights(IrisLandmarkModel(), "iris_landmark").eval().to(self.device)

    def _to_tensor(self, crops: np.ndarray) -> torch.Tensor:
        return crops_to_tensor(crops, self.device)

    def predict(self, image: np.ndarray, rois: Sequence[Roi]) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, 478, 3) in image pixels (z in pixels on the scale of x, relative depth) and
        face-presence scores (N,) in [0, 1] for face ``rois`` of an RGB uint8 HxWx3 ``image``."""
        return self.predict_many([(image, roi) for roi in rois])

    @torch.inference_mode()
    def predict_many(self, items: Sequence[tuple[np.ndarray, Roi]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` for ``(image, roi)`` pairs from any number of images, each network run once."""
        n = len(items)
        if n == 0:
            return np.zeros((0, self.num_landmarks, 3), np.float32), np.zeros((0,), np.float32)
        crops = np.stack([crop_image(image, roi, self.input_size, border="replicate") for image, roi in items])
        out = self.face_net(self._to_tensor(crops))
        mesh192 = out.mesh.float().cpu().numpy()
        scores = torch.sigmoid(out.face_logit).float().cpu().numpy()
        mesh = np.stack([project_to_image(p, roi, self.input_size) for p, (_, roi) in zip(mesh192, items)])

        # Eyes in the order: face 0 right, face 0 left, face 1 right, ...; left eyes are mirrored.
        eye_images = [image for image, _ in items for _ in range(2)]
        eye_rois = [eye_roi(m, corners, (image.shape[1], image.shape[0])) for m, (image, _) in zip(mesh, items)
                    for corners in (RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS)]
        mirrored = [k % 2 == 1 for k in range(2 * n)]
        eye_crops = np.stack([crop_eye(image, roi, self.eye_input_size, flip, self.eye_crop)
                              for image, roi, flip in zip(eye_images, eye_rois, mirrored)])
        eyes = self.iris_net(self._to_tensor(eye_crops))
        points64 = torch.cat([eyes.eye, eyes.iris], 1).float().cpu().numpy()  # (2N, 76, 3)
        points64[1::2, :, 0] = self.eye_input_size - points64[1::2, :, 0]
        points = np.stack([project_to_image(p, roi, self.eye_input_size) for p, roi in zip(points64, eye_rois)])
        contour, iris = points[:, :NUM_EYE_POINTS], points[:, NUM_EYE_POINTS:]
        parts = (mesh, contour[0::2], contour[1::2], iris[0::2], iris[1::2])
        landmarks = merge_eyes(*(torch.from_numpy(np.ascontiguousarray(p)) for p in parts)).numpy()
        return landmarks.astype(np.float32), scores.astype(np.float32)
