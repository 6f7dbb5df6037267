"""The face detector against independent references: the anchors MediaPipe generated (exported in
../shared/reference), the TFLite interpreter on the released file, and ``mp.solutions.face_detection``
(short range, MediaPipe 0.10.21) on every photo of ../shared/data/photos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import attnmesh
from attnmesh.convert.__main__ import CONVERTERS, _default_models_dir
from attnmesh.models.detector import BlazeFace, decode_boxes, ssd_anchors
from attnmesh.runtime.detector import weighted_nms
from attnmesh.weights import load_model_weights
from reference import SHARED, photo_paths, read_rgb, reference_detections

BOX_IOU = 0.98  # acceptance: same faces as the reference runtime
KEYPOINT_TOLERANCE = 0.01  # of the reference box width
SCORE_TOLERANCE = 0.01


def test_anchors_match_mediapipe_export() -> None:
    exported = json.loads((SHARED / "reference/blazeface_short_range_anchors.json").read_text())["anchors"]
    np.testing.assert_array_equal(ssd_anchors(), np.array(exported, np.float32))


def test_network_matches_tflite_interpreter() -> None:
    from ai_edge_litert import interpreter as interpreter_mod

    models_dir, _ = _default_models_dir()
    it = interpreter_mod.Interpreter(str(models_dir / CONVERTERS["face_detection_short_range"][0]))
    it.allocate_tensors()
    x = cv2.resize(read_rgb(photo_paths()[0]), (128, 128)).astype(np.float32)[None] / 127.5 - 1
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    outs = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
    model = load_model_weights(BlazeFace(), "face_detection_short_range").eval()
    with torch.no_grad():
        o = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(o.logits.numpy(), outs["classificators"][..., 0], atol=1e-3)
    np.testing.assert_allclose(o.offsets.numpy(), outs["regressors"], atol=1e-3)


def test_decoding_by_hand() -> None:
    anchors = torch.tensor([[0.25, 0.75, 1.0, 1.0]])
    offsets = torch.zeros(1, 1, 16)
    offsets[0, 0, :4] = torch.tensor([12.8, -6.4, 32.0, 64.0])  # centre shift and size, 128-space pixels
    offsets[0, 0, 4:6] = torch.tensor([1.28, 2.56])
    out = decode_boxes(offsets, anchors)[0, 0].numpy()
    cx, cy, w, h = 0.25 + 0.1, 0.75 - 0.05, 0.25, 0.5
    np.testing.assert_allclose(out[:4], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-6)
    np.testing.assert_allclose(out[4:6], [0.26, 0.77], atol=1e-6)


def test_weighted_nms_by_hand() -> None:
    boxes = np.zeros((3, 16), np.float32)
    boxes[0, :4] = [0, 0, 10, 10]
    boxes[1, :4] = [1, 1, 11, 11]  # IoU with box 0: 81/119 > 0.3, absorbed
    boxes[2, :4] = [20, 20, 30, 30]  # separate
    boxes[:, 4:] = np.arange(12)[None] + 100 * np.arange(3)[:, None]
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    out = weighted_nms(boxes, scores)
    assert [s for s, _ in out] == pytest.approx([0.9, 0.7])
    np.testing.assert_allclose(out[0][1], (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5, rtol=1e-6)
    np.testing.assert_allclose(out[1][1], boxes[2])


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [read_rgb(p) for p in photo_paths()]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - iw * ih
    return float(iw * ih / union)


def test_same_faces_as_reference_runtime(photos) -> None:
    reference = reference_detections(photos)
    detector = attnmesh.FaceDetector(min_detection_confidence=0.5)
    ours_all = detector.process_batch(photos)
    compared = 0
    for path, ours, ref in zip(photo_paths(), ours_all, reference):
        assert len(ours) == len(ref), path.name
        used = set()
        for d in ours:
            j = max((k for k in range(len(ref)) if k not in used), key=lambda k: _iou(d.box, ref[k][1]))
            used.add(j)
            score, box, keypoints = ref[j]
            assert _iou(d.box, box) >= BOX_IOU, (path.name, d.box, box)
            assert np.linalg.norm(d.keypoints - keypoints, axis=1).max() <= KEYPOINT_TOLERANCE * (box[2] - box[0])
            assert abs(d.score - score) <= SCORE_TOLERANCE, path.name
            compared += 1
    assert compared >= 20


def test_batch_equals_one_by_one(photos) -> None:
    detector = attnmesh.FaceDetector()
    for image, batched in zip(photos[:5], detector.process_batch(photos[:5])):
        single = detector.process(image)
        assert len(single) == len(batched)
        for a, b in zip(single, batched):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)


def test_no_face_in_a_blank_image() -> None:
    assert attnmesh.FaceDetector().process(np.full((240, 320, 3), 128, np.uint8)) == []
