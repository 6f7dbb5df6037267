"""The face_landmark + iris cascade: the iris network computes what the TFLite interpreter computes, its
weights are reproduced by the importer, and the assembled 478 landmarks agree with the Attention Mesh."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnmesh import topology
from attnmesh.convert.__main__ import CONVERTERS, _default_models_dir, convert_all
from attnmesh.geometry.roi import Roi, crop_image, project_to_image, rotation_from_points, square_roi
from attnmesh.models.attention_mesh import AttentionMesh
from attnmesh.models.cascade import CascadeMesh
from attnmesh.models.iris import IrisLandmarkModel
from attnmesh.runtime.cascade import TorchCascadeRunner, crop_eye, eye_roi
from attnmesh.weights import load_model_weights, read_manifest
from reference import interocular, read_pts, read_rgb, w300_paths

# 300-W's 68-point scheme (0-based): outer and inner corners of the subject's right (36, 39) and left eye
# (42 inner, 45 outer), left to right across the image.
W300_RIGHT_EYE, W300_LEFT_EYE = (36, 39), (42, 45)


def roi_from_annotation(points: np.ndarray) -> Roi:
    """A face ROI like the detector's, from 300-W ground truth: the 68-point box, rotated so that the outer
    eye corners are horizontal, square on the longer side, x1.5 (and x1.2 because the 68-point box is
    tighter than BlazeFace's)."""
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    rotation = rotation_from_points(*points[36], *points[45])
    return square_roi(x0, y0, x1, y1, rotation, 1.5 * 1.2)


@pytest.fixture(scope="module")
def cascade() -> TorchCascadeRunner:
    torch.set_num_threads(1)
    return TorchCascadeRunner()


def test_iris_network_matches_tflite_interpreter() -> None:
    from ai_edge_litert import interpreter as interpreter_mod

    models_dir, _ = _default_models_dir()
    it = interpreter_mod.Interpreter(str(models_dir / CONVERTERS["iris_landmark"][0]))
    it.allocate_tensors()
    path = w300_paths(5)[2]
    image, pts = read_rgb(path), read_pts(path.with_suffix(".pts"))
    size = (image.shape[1], image.shape[0])
    # both eyes, the left one mirrored, as the cascade feeds them (one batch)
    crops = np.stack([crop_eye(image, eye_roi(pts, W300_RIGHT_EYE, size), 64, mirror=False),
                      crop_eye(image, eye_roi(pts, W300_LEFT_EYE, size), 64, mirror=True)])
    x = crops.astype(np.float32) / 255
    model = load_model_weights(IrisLandmarkModel(), "iris_landmark").eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    for k in range(len(x)):
        it.set_tensor(it.get_input_details()[0]["index"], x[k:k + 1])
        it.invoke()
        ref = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
        eye, iris = ref["output_eyes_contours_and_brows"].reshape(71, 3), ref["output_iris"].reshape(5, 3)
        assert 16 < iris[0, 0] < 48 and 16 < iris[0, 1] < 48, "the crop must show an eye"
        np.testing.assert_allclose(out.eye[k].numpy(), eye, atol=1e-3)
        np.testing.assert_allclose(out.iris[k].numpy(), iris, atol=1e-3)


def test_iris_conversion_reproduces_shipped_weights(tmp_path: Path) -> None:
    models_dir, source = _default_models_dir()
    manifest = convert_all(models_dir, source, tmp_path, ["iris_landmark"])
    entry, shipped = manifest["models"]["iris_landmark"], read_manifest()["models"]["iris_landmark"]
    assert entry["sha256"] == shipped["sha256"]
    assert entry["dtype"] == "float32" and entry["tensors"] == shipped["tensors"]
    assert len(entry["tensors"]) == len(IrisLandmarkModel().state_dict())


def test_cascade_without_faces(cascade: TorchCascadeRunner) -> None:
    landmarks, scores = cascade.predict(np.zeros((64, 64, 3), np.uint8), [])
    assert landmarks.shape == (0, 478, 3) and scores.shape == (0,)


def test_cascade_irises_agree_with_attention_mesh(cascade: TorchCascadeRunner) -> None:
    """Same face ROIs for both; iris centres (468: subject's right, 473: left) within 5% of the
    inter-ocular distance, except where the eyes are hidden (one image has sunglasses)."""
    attention = load_model_weights(AttentionMesh(), "attention_mesh").eval()
    errors, face_scores = [], []
    for path in w300_paths(40):
        image = read_rgb(path)
        roi = roi_from_annotation(read_pts(path.with_suffix(".pts")))
        landmarks, scores = cascade.predict(image, [roi, roi])  # a batch of two checks batching
        np.testing.assert_allclose(landmarks[0], landmarks[1], atol=1e-3)
        face_scores.append(float(scores[0]))
        crop = torch.from_numpy(crop_image(image, roi, 192)[None]).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            ref = project_to_image(attention(crop).landmarks[0].numpy(), roi, 192)
        for centre in (topology.RIGHT_IRIS[0], topology.LEFT_IRIS[0]):
            errors.append(np.linalg.norm(landmarks[0, centre, :2] - ref[centre, :2]) / interocular(ref))
    errors = np.array(errors)
    assert min(face_scores) > 0.5, "every ROI holds a face"
    assert errors.mean() < 0.025, errors.mean()
    assert np.median(errors) < 0.02, np.median(errors)
    assert (errors < 0.05).mean() >= 0.95, np.sort(errors)[-5:]


def test_cascade_eyes_are_on_their_sides(cascade: TorchCascadeRunner) -> None:
    """Against 300-W ground truth: each iris lands in its own eye (subject's sides), and its centre is the
    middle of its 4 contour points."""
    path = w300_paths(5)[2]
    image, pts = read_rgb(path), read_pts(path.with_suffix(".pts"))
    landmarks, _ = cascade.predict(image, [roi_from_annotation(pts)])
    lm = landmarks[0]
    iod = interocular(lm)
    right, left = lm[list(topology.RIGHT_IRIS)], lm[list(topology.LEFT_IRIS)]
    assert np.linalg.norm(right[0, :2] - pts[list(W300_RIGHT_EYE)].mean(0)) < 0.15 * iod
    assert np.linalg.norm(left[0, :2] - pts[list(W300_LEFT_EYE)].mean(0)) < 0.15 * iod
    # the iris centre is the mean of its 4 contour points, to within a small fraction of the eye
    for iris in (right, left):
        assert np.linalg.norm(iris[1:, :2].mean(0) - iris[0, :2]) < 0.03 * iod


def test_cascade_mesh_matches_runner_on_a_face_crop() -> None:
    """The torch module (eyes sampled with grid_sample from the face crop) against the runner (eyes warped
    with OpenCV) given the face crop as the whole image: the same geometry up to uint8 rounding of the
    runner's eye crops. Gradients reach the input through both stages."""
    model = CascadeMesh()
    load_model_weights(model.face, "face_landmark")
    load_model_weights(model.iris, "iris_landmark")
    model.eval()
    bilinear = TorchCascadeRunner(eye_crop="bilinear")
    for path in w300_paths(40)[:3]:
        image = read_rgb(path)
        crop = crop_image(image, roi_from_annotation(read_pts(path.with_suffix(".pts"))), 192)
        expected, _ = bilinear.predict(crop, [Roi(96.0, 96.0, 192.0, 0.0)])
        x = torch.from_numpy(crop[None]).permute(0, 3, 1, 2).float().div(255).requires_grad_()
        out = model(x)
        np.testing.assert_allclose(out.landmarks[0].detach().numpy(), expected[0], atol=0.3)
    out.landmarks[:, 468:].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
