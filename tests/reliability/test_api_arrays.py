"""The Python API fed by a careless or hostile caller: odd constructor arguments (refused at construction,
with the argument named) and a detector threshold of 0 (finite boxes, no warning). Each test is named after
what the caller did."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

import attnmesh
from attnmesh.runtime.detector import weighted_nms

from ._support import SMALL_PHOTO


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return attnmesh.load_image(SMALL_PHOTO)


def test_detector_at_confidence_0_returns_finite_boxes_and_no_warning(photo):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's 0/0 RuntimeWarning would fail the test
        everything = attnmesh.FaceDetector(min_detection_confidence=0).process(photo)
    usual = attnmesh.FaceDetector().process(photo)
    assert len(everything) > len(usual) == 1  # every anchor cluster, the zero-score ones included
    for d in everything:
        assert np.isfinite(d.box).all() and np.isfinite(d.keypoints).all() and 0 <= d.score <= 1
    # the face itself: the best detection, where the usual threshold puts it (near-zero-score anchors that
    # overlap it move the weighted mean by about a pixel, on a face 65 px wide)
    assert everything[0].score == pytest.approx(usual[0].score)
    assert np.abs(everything[0].box - usual[0].box).max() < 3.0


def test_weighted_nms_of_a_zero_score_cluster_is_the_plain_mean():
    """Independent computation: numpy's mean of the overlapping boxes (the limit of equal weights)."""
    rng = np.random.default_rng(0)
    base = np.array([0.4, 0.4, 0.6, 0.6] + [0.5] * 12)
    boxes = (base + rng.normal(0, 0.005, (5, 16))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ((score, merged),) = weighted_nms(boxes, np.zeros(5, np.float32))
    assert score == 0.0
    np.testing.assert_allclose(merged, boxes.astype(np.float64).mean(0), atol=1e-6)
    # with scores, still the score-weighted mean (MediaPipe's WEIGHTED suppression)
    scores = np.array([0.9, 0.5, 0.2, 0.1, 0.0], np.float32)
    ((score, merged),) = weighted_nms(boxes, scores)
    np.testing.assert_allclose(merged, (boxes * scores[:, None]).sum(0) / scores.sum(), atol=1e-6)


@pytest.mark.parametrize("kwargs,error,words", [
    ({"max_num_faces": 2.5}, TypeError, "max_num_faces must be a whole number"),
    ({"max_num_faces": 2.0}, TypeError, "max_num_faces"),
    ({"max_num_faces": "2"}, TypeError, "max_num_faces"),
    ({"max_num_faces": True}, TypeError, "max_num_faces"),
    ({"max_num_faces": 0}, ValueError, "max_num_faces must be at least 1"),
    ({"static_image_mode": "False"}, TypeError, "static_image_mode must be True or False"),
    ({"refine_landmarks": None}, TypeError, "refine_landmarks"),
    ({"min_detection_confidence": float("nan")}, ValueError, "min_detection_confidence must be in [0, 1]"),
    ({"min_detection_confidence": "0.5"}, TypeError, "min_detection_confidence"),
    ({"min_tracking_confidence": 1.5}, ValueError, "min_tracking_confidence"),
    ({"model": "mediapipe"}, ValueError, "model must be one of"),
    ({"backend": "tensorflow"}, ValueError, "backend must be one of"),
    ({"device": "gpu"}, ValueError, "device 'gpu' is not a torch device"),
    ({"device": 0}, TypeError, "device must be"),
])
def test_face_mesh_with_a_bad_argument_is_refused_at_construction(kwargs, error, words):
    with pytest.raises(error) as info:
        attnmesh.FaceMesh(**kwargs)
    message = str(info.value)
    assert message.startswith(words) and "\n" not in message, message


@pytest.mark.parametrize("kwargs,error", [
    ({"min_detection_confidence": -0.1}, ValueError),
    ({"min_detection_confidence": None}, TypeError),
    ({"device": "gpu"}, ValueError),
])
def test_face_detector_with_a_bad_argument_is_refused_at_construction(kwargs, error):
    with pytest.raises(error):
        attnmesh.FaceDetector(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("cls", ["FaceMesh", "FaceDetector"])
def test_device_cuda_on_a_machine_without_cuda_is_a_runtime_error(cls):
    with pytest.raises(RuntimeError, match=r"^device 'cuda' needs CUDA, but .*; use device='cpu'$"):
        getattr(attnmesh, cls)(device="cuda")


def test_backend_onnxruntime_without_onnxruntime_installed_is_a_runtime_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what a missing install looks like to Python
    with pytest.raises(RuntimeError, match=r"^backend='onnxruntime' needs ONNX Runtime.*pip install"):
        attnmesh.FaceMesh(backend="onnxruntime")


def test_numpy_integers_and_bools_are_accepted_as_arguments(photo):
    """What a caller computing the arguments with numpy passes: the same faces as with Python values."""
    with attnmesh.FaceMesh(static_image_mode=np.bool_(True), max_num_faces=np.int64(1),
                           min_detection_confidence=np.float32(0.5)) as fm:
        ours = fm.process(photo)
    with attnmesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        plain = fm.process(photo)
    assert len(ours) == len(plain) == 1
    np.testing.assert_array_equal(ours[0].landmarks, plain[0].landmarks)
