"""``FaceDetector``: faces in whole images with the short-range BlazeFace model, as MediaPipe's
``FaceDetectionShortRangeCpu`` graph (and ``mp.solutions.face_detection`` with ``model_selection=0``) does.

image ─ letterbox to a square, 128x128 uint8 warp, [-1, 1] ─ BlazeFace ─ decode 896 anchors ─ score threshold
─ weighted non-maximum suppression (in the letterboxed tensor frame) ─ letterbox removal ─ image pixels.

Best for faces within about 2 m of the camera (faces at least ~1/10 of the image's longer side).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..geometry.roi import crop_image, letterbox_roi
from ..models.sizes import DETECTOR_INPUT_SIZE, DETECTOR_NUM_KEYPOINTS
from ..results import Detection

if TYPE_CHECKING:
    import torch

NMS_IOU = 0.3  # a detection absorbs every remaining one that overlaps it by more than this (IoU)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> list[tuple[float, np.ndarray]]:
    """MediaPipe's ``WEIGHTED`` non-maximum suppression.

    Args:
        boxes: (K, 16) ``x0, y0, x1, y1`` and 6 keypoints (any one frame).
        scores: (K,) in [0, 1].
    Returns:
        ``(score, values)`` per output detection, best first: the best remaining detection's score, and the
        score-weighted mean of box corners and keypoints over all remaining detections (itself included)
        whose IoU with it is above ``iou_threshold``. A cluster whose scores are all zero (possible with
        ``min_detection_confidence=0``: far-off anchors score 0 in float32) gets the plain mean, the limit of
        the weighted mean for equal weights, instead of 0/0.
    """
    remaining = np.argsort(-scores, kind="stable")
    out = []
    while len(remaining):
        best = remaining[0]
        absorbed = _iou(boxes[best, :4], boxes[remaining, :4]) > iou_threshold
        absorbed[0] = True  # a detection always absorbs itself, even a zero-area one
        members = remaining[absorbed]
        w = scores[members].astype(np.float64)
        if not w.sum() > 0:
            w = np.ones_like(w)
        merged = (boxes[members].astype(np.float64) * w[:, None]).sum(0) / w.sum()
        out.append((float(scores[best]), merged.astype(np.float32)))
        remaining = remaining[~absorbed]
    return out


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with boxes (K, 4), all ``x0, y0, x1, y1``; 0 where the boxes do not intersect."""
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class DetectorRunner:
    """The detector pipeline around a network: letterbox crop, decoding, weighted NMS, letterbox removal.
    A backend supplies :meth:`boxes_and_scores` (PyTorch: :class:`FaceDetector`; others in
    :mod:`attnmesh.runtime`). No PyTorch is needed here.

    Arguments are checked here: TypeError / ValueError for a bad threshold, ValueError / RuntimeError for a
    device that is not one or that this machine does not have (:mod:`attnmesh.options`).

    :meth:`process` returns :class:`~attnmesh.results.Detection` objects in image pixels, best
    first; keypoints are (right eye, left eye, nose tip, mouth centre, right ear, left ear), subject's sides.
    """

    input_size = DETECTOR_INPUT_SIZE
    min_detection_confidence: float

    def process(self, image: np.ndarray) -> list[Detection]:
        """Faces in one RGB uint8 image (HxWx3), best first."""
        return self.process_batch([image])[0]

    def process_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in each of many RGB uint8 images, with one network pass for all of them."""
        if not images:
            return []
        size = self.input_size
        rois = [letterbox_roi(im.shape[1], im.shape[0]) for im in images]
        # the letterbox reads every image row in order already: nothing to prefetch
        tensors = np.stack([crop_image(im, roi, size, border="zero", prefetch=False) for im, roi in zip(images, rois)])
        boxes, scores = self.boxes_and_scores(tensors)
        results = []
        for im, roi, b, s in zip(images, rois, boxes, scores):
            keep = (s >= self.min_detection_confidence) & (b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])
            keep &= np.isfinite(b).all(1)
            results.append([_to_image(score, v, roi.size, im.shape[1], im.shape[0])
                            for score, v in weighted_nms(b[keep], s[keep])])
        return results

    def boxes_and_scores(self, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decoded anchors (N, 896, 16) (:func:`~attnmesh.models.detector.decode_boxes`, tensor-normalized) and
        scores (N, 896) for letterboxed uint8 NHWC inputs of side :attr:`input_size`."""
        raise NotImplementedError


class FaceDetector(DetectorRunner):
    """Short-range face detector on PyTorch.

    Args:
        min_detection_confidence: score threshold in [0, 1] (MediaPipe's ``min_score_thresh``).
        device: torch device for the network.
    """

    def __init__(self, min_detection_confidence: float = 0.5, device: str | torch.device = "cpu") -> None:
        from ..models.detector import BlazeFace
        from ..options import check_device, check_unit
        from ..weights import load_model_weights

        self.min_detection_confidence = check_unit("min_detection_confidence", min_detection_confidence)
        self.device = check_device(device)
        self.net = load_model_weights(BlazeFace(), "face_detection_short_range").eval().to(self.device)

    def boxes_and_scores(self, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from ..models.detector import decode_boxes, scores_from_logits

        with torch.inference_mode():
            x = torch.from_numpy(tensors).to(self.device).permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0
            out = self.net(x)
            boxes = decode_boxes(out.offsets.float(), self.net.anchors.float()).cpu().numpy()
            return boxes, scores_from_logits(out.logits.float()).cpu().numpy()


def _to_image(score: float, values: np.ndarray, side: float, width: int, height: int) -> Detection:
    """Letterbox removal: tensor-normalized (the square of side ``side`` centred on the image) -> pixels."""
    pts = values.reshape(-1, 2).astype(np.float64)
    pts = (pts - 0.5) * side + np.array([width / 2, height / 2])
    box = np.concatenate([pts[0], pts[1]]).astype(np.float32)
    return Detection(score=score, box=box, keypoints=pts[2:2 + DETECTOR_NUM_KEYPOINTS].astype(np.float32))
