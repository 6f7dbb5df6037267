"""ONNX export, the ONNX Runtime backend, INT8, and the GPU path's crop (run on CPU tensors).

Timing is never asserted here: speed lives in benchmarks/speed_table.py and benchmarks/cpu_speed.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from attnmesh.runtime import make_landmark_runner, resolve_backend  # noqa: E402
from attnmesh.runtime.gpu import crop_rois, project_points, rois_tensor  # noqa: E402
from attnmesh.runtime.onnxruntime import (OrtCascadeRunner, OrtFaceDetector, OrtGraph,  # noqa: E402
                                           OrtLandmarkRunner)
from attnmesh.export.onnx import GRAPHS, build_module, decompose_prelu, export_all  # noqa: E402
from attnmesh.eval.quantize import (face_crops, iod_deviation, quantize_attention_mesh,  # noqa: E402
                                      split_images, to_input)
from attnmesh.geometry.roi import Roi, crop_image, project_to_image  # noqa: E402
from attnmesh.runtime.pytorch import TorchLandmarkRunner  # noqa: E402
from backend_checks import (PX_TOL, assert_cascade_matches_torch, assert_detector_matches_torch,  # noqa: E402
                            photos_and_rois as photos_and_rois_of_photos)
from reference import W300  # noqa: E402



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("onnx")
    export_all(out)
    return out


@pytest.fixture(scope="module")
def photos_and_rois():
    return photos_and_rois_of_photos()



def test_decompose_prelu_gives_the_same_numbers_bit_for_bit() -> None:
    """PRelu(x, a) -> Relu(x) + a * Min(x, 0), with slopes of both signs and above 1 as in the released models,
    against ONNX Runtime's own PRelu kernel and PyTorch's."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    slope = rng.uniform(-4.0, 6.0, (8, 1, 1)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("PRelu", ["x", "slope"], ["y"], name="act")], "prelu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 5, 5])],
                              [numpy_helper.from_array(slope, "slope")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(0, 3, (2, 8, 5, 5)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    before = run(model)
    assert decompose_prelu(model.graph) == 1
    onnx.checker.check_model(model)
    assert "PRelu" not in {n.op_type for n in model.graph.node}
    np.testing.assert_array_equal(run(model), before)
    np.testing.assert_array_equal(run(model), torch.nn.functional.prelu(torch.from_numpy(x),
                                                                         torch.from_numpy(slope.ravel())).numpy())

@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_onnx_graph_matches_pytorch(model_dir, name: str) -> None:
    spec = GRAPHS[name]
    x = torch.rand(3, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0))
    if name == "face_detection_short_range":
        x = x * 2 - 1
    with torch.inference_mode():
        expected = [t.numpy() for t in build_module(name)(x)]
    got = OrtGraph(name, model_dir, threads=2)(x.numpy())
    import onnx

    assert "PRelu" not in {n.op_type for n in onnx.load(str(model_dir / f"{name}.onnx")).graph.node}
    assert [g.shape for g in got] == [e.shape for e in expected]  # the batch axis is dynamic (export used 2)
    if name == "face_detection_short_range":  # boxes are normalized to the 128x128 input
        np.testing.assert_allclose(got[0] * 128, expected[0] * 128, rtol=0, atol=PX_TOL)
        np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=1e-5)
    elif name == "iris_landmark":
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=0, atol=PX_TOL)
    else:  # points, then the face logit
        np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=PX_TOL)
        np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("model", ["attention_mesh", "face_landmark", "attention_mesh_300w"])
def test_ort_landmark_runner_matches_torch_on_photos(model_dir, photos_and_rois, model: str) -> None:
    """Same landmarks within 1e-3 px of the 192x192 crop, i.e. 1e-3 * roi.size / 192 image pixels."""
    torch_model, ort_model = TorchLandmarkRunner(model), OrtLandmarkRunner(model, model_dir=model_dir)
    assert (ort_model.input_size, ort_model.num_landmarks) == (torch_model.input_size, torch_model.num_landmarks)
    for image, rois in zip(*photos_and_rois):
        crops = torch_model.crop(image, rois)
        np.testing.assert_array_equal(ort_model.crop(image, rois), crops)
        p_t, s_t = torch_model.run(crops)
        p_o, s_o = ort_model.run(crops)
        np.testing.assert_allclose(p_o, p_t, rtol=0, atol=PX_TOL)
        np.testing.assert_allclose(s_o, s_t, rtol=0, atol=1e-5)
        img_t, _ = torch_model.predict(image, rois)
        img_o, _ = ort_model.predict(image, rois)
        for a, b, roi in zip(img_o, img_t, rois):
            assert np.abs(a - b).max() <= PX_TOL * roi.size / 192 + 1e-4
    empty = ort_model.run(np.zeros((0, 192, 192, 3), np.uint8))
    assert empty[0].shape == (0, ort_model.num_landmarks, 3)


def test_ort_detector_matches_torch(model_dir, photos_and_rois) -> None:
    assert_detector_matches_torch(OrtFaceDetector(model_dir=model_dir), photos_and_rois[0])


def test_ort_cascade_matches_torch(model_dir, photos_and_rois) -> None:
    assert_cascade_matches_torch(OrtCascadeRunner(model_dir=model_dir), *photos_and_rois)


def test_backend_factory() -> None:
    assert resolve_backend("auto", "cpu") == "openvino"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("torch") == "torch"
    with pytest.raises(ValueError):
        resolve_backend("tflite")
    with pytest.raises(ValueError, match="0.5% bar"):
        make_landmark_runner(precision="int8")
    assert isinstance(make_landmark_runner(backend="torch"), TorchLandmarkRunner)


@pytest.mark.skipif(not W300.is_dir(), reason="needs ../shared/data/300w-train")
def test_int8_deviation_on_held_out_images(model_dir) -> None:
    """The documented recipe on a small scale (32 calibration crops, 6 held-out faces): the INT8 graph stays
    within the measured bound (mean 1.0-1.3% IOD on 100 held-out faces with 128 calibration crops, which
    misses the 0.5% bar; see attnmesh.eval.quantize), and the split never mixes the two parts."""
    calib_paths, held_paths = split_images(W300)
    assert not set(calib_paths) & set(held_paths) and 0.15 < len(held_paths) / len(calib_paths + held_paths) < 0.25
    calib, _ = face_crops(calib_paths, 32)
    held, _ = face_crops(held_paths, 6)
    q = quantize_attention_mesh(model_dir / "attention_mesh.onnx", model_dir / "attention_mesh.int8.onnx", calib)
    fp32 = OrtGraph("attention_mesh", model_dir)(to_input(held))[0]
    int8 = OrtLandmarkRunner(model_dir=model_dir, precision="int8").run(held)[0]
    assert q.is_file() and int8.shape == fp32.shape
    dev = 100 * iod_deviation(int8, fp32)
    assert dev.mean() < 2.5 and dev.max() < 5.0, dev


def test_gpu_crop_matches_opencv_crop_on_cpu(photos_and_rois) -> None:
    images, rois = photos_and_rois
    image = images[0]
    extra = [Roi(30, 40, 300, -1.0), Roi(image.shape[1] - 10, image.shape[0] / 2, 150, 2.0)]  # off the edge
    all_rois = rois[0] + extra
    ref = np.stack([crop_image(image, r, 192, border="replicate") for r in all_rois]).astype(np.float32)
    t = torch.from_numpy(image).permute(2, 0, 1)[None]
    got = crop_rois(t, rois_tensor(all_rois), 192, torch.zeros(len(all_rois), dtype=torch.long))
    diff = np.abs(got.permute(0, 2, 3, 1).numpy() - ref)
    # OpenCV's warp quantises coordinates to 1/32 px and weights to 1/1024: about one grey level apart.
    assert diff.mean() < 0.5 and diff.max() <= 6, (diff.mean(), diff.max())
    points = np.random.default_rng(0).uniform(0, 192, (len(all_rois), 478, 3)).astype(np.float32)
    proj = project_points(torch.from_numpy(points), rois_tensor(all_rois)).numpy()
    expected = np.stack([project_to_image(p, r, 192) for p, r in zip(points, all_rois)])
    np.testing.assert_allclose(proj, expected, atol=2e-3)


def test_crop_prefetch_leaves_crop_and_image_unchanged(photos_and_rois) -> None:
    """crop_image reads the ROI's bounding box before warping (a cache prefetch): the crop equals the warp
    without it, and the image is untouched, for ROIs inside, across the edge of and outside the image."""
    images, rois = photos_and_rois
    image = images[0]
    h, w = image.shape[:2]
    before = image.copy()
    cases = rois[0] + [Roi(30, 40, 300, -1.0), Roi(w - 10, h / 2, 150, 2.0), Roi(-500, -500, 100, 0.3),
                       Roi(w + 400, h / 3, 50, 0.0), Roi(w / 2, h / 2, 4 * max(w, h), 0.7),
                       Roi(float("nan"), h / 2, 100, 0.0), Roi(w / 2, h / 2, float("inf"), 0.2)]
    for roi in cases:
        np.testing.assert_array_equal(crop_image(image, roi, 192), crop_image(image, roi, 192, prefetch=False))
    np.testing.assert_array_equal(image, before)


def test_grouped_region_heads_give_the_attention_mesh_outputs(photos_and_rois) -> None:
    """The exported Attention Mesh runs its five region heads as one grouped network (attnmesh.models.grouped):
    on real face crops and on noise, every output equals the plain AttentionMesh's (weights as shipped)."""
    from attnmesh.models.grouped import GroupedAttentionMesh
    from attnmesh.registry import create_model

    images, rois = photos_and_rois
    crops = np.stack([crop_image(im, r, 192) for im, rs in zip(images, rois) for r in rs])
    x = torch.cat([torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255, torch.rand(2, 3, 192, 192)])
    plain = create_model("attention_mesh").eval()
    grouped = GroupedAttentionMesh(create_model("attention_mesh").eval()).eval()
    with torch.no_grad():
        a, b = plain(x), grouped(x)
    for name in a._fields:
        np.testing.assert_allclose(getattr(b, name).numpy(), getattr(a, name).numpy(), rtol=0, atol=1e-4,
                                   err_msg=name)
    assert a.landmarks.shape == (len(x), 478, 3)
