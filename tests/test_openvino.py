"""The OpenVINO backend (the default on CPU) against the PyTorch modules it is built from.

Tolerances are those of the ONNX Runtime backend (tests/test_export.py): 1e-3 px in the network's own input
space. Timing is never asserted here: speed lives in benchmarks/cpu_speed.py.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from attnmesh.runtime import make_landmark_runner, resolve_backend
from attnmesh.runtime.openvino import (BATCH_BUCKETS, MAX_SINGLES, OvCascadeRunner, OvFaceDetector, OvGraph,
                                        OvLandmarkRunner, OvTransformerRunner, graph_spec)
from attnmesh.geometry.roi import crop_image
from attnmesh.runtime.detector import FaceDetector
from attnmesh.runtime.pytorch import TorchLandmarkRunner
from backend_checks import (PX_TOL, assert_cascade_matches_torch, assert_detector_matches_torch,
                            photos_and_rois as photos_and_rois_of_photos)



@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory):
    """A fresh cache folder: every graph is built from the shipped weights in this run."""
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture(scope="module")
def photos_and_rois():
    return photos_and_rois_of_photos()


@pytest.mark.parametrize("model", ["attention_mesh", "attention_mesh_300w", "face_landmark"])
def test_landmark_runner_matches_torch_on_photos(ir_dir, photos_and_rois, model: str) -> None:
    """The Attention Mesh (shipped and fine-tuned weights) and face_landmark: the same crops give the
    same landmarks within 1e-3 px of the 192x192 crop, and the same presence scores."""
    torch_model = TorchLandmarkRunner(model)
    ov_model = OvLandmarkRunner(model, model_dir=ir_dir)
    assert (ov_model.input_size, ov_model.num_landmarks) == (torch_model.input_size, torch_model.num_landmarks)
    for image, rois in zip(*photos_and_rois):
        crops = torch_model.crop(image, rois)
        p_t, s_t = torch_model.run(crops)
        p_o, s_o = ov_model.run(crops)
        np.testing.assert_allclose(p_o, p_t, rtol=0, atol=PX_TOL)
        np.testing.assert_allclose(s_o, s_t, rtol=0, atol=1e-5)
    empty = ov_model.run(np.zeros((0, 192, 192, 3), np.uint8))
    assert empty[0].shape == (0, ov_model.num_landmarks, 3)


def test_batch_plan_covers_every_item_with_few_buckets() -> None:
    """Every batch size splits into compiled buckets that hold exactly its items: full buckets, then singles or
    one padded bucket."""
    from attnmesh.runtime.openvino import batch_plan

    for n in range(0, 80):
        plan = batch_plan(n)
        assert sum(items for _, items in plan) == n
        assert all(bucket in BATCH_BUCKETS and 0 < items <= bucket for bucket, items in plan)
        assert sum(bucket - items for bucket, items in plan) < BATCH_BUCKETS[1]  # at most one padded call
    assert batch_plan(8) == [(8, 8)] and batch_plan(9) == [(8, 8), (1, 1)]
    assert batch_plan(8 + MAX_SINGLES + 1) == [(8, 8), (8, MAX_SINGLES + 1)]


def test_batches_are_padded_to_buckets_and_split_past_the_largest(ir_dir, photos_and_rois) -> None:
    """A batch of 3 runs as singles, one of 6 padded to 8, one of largest bucket + 13 in several calls: each
    face's answer equals its answer at batch 1 (the padding never leaks into real rows)."""
    images, rois = photos_and_rois
    model = OvLandmarkRunner(model_dir=ir_dir)
    crops = np.concatenate([model.crop(im, r) for im, r in zip(images, rois)])[:3]
    single = [model.run(c[None]) for c in crops]
    for n in (3, MAX_SINGLES + 2, BATCH_BUCKETS[-1] + 13):
        big = np.concatenate([crops] * (n // len(crops) + 1))[:n]
        points, scores = model.run(big)
        assert points.shape == (n, 478, 3) and scores.shape == (n,)
        for k in sorted({0, 1, 2, n - 1}):
            np.testing.assert_allclose(points[k], single[k % 3][0][0], rtol=0, atol=1e-4)
            np.testing.assert_allclose(scores[k], single[k % 3][1][0], rtol=0, atol=1e-6)


def test_detector_matches_torch(ir_dir, photos_and_rois) -> None:
    assert_detector_matches_torch(OvFaceDetector(model_dir=ir_dir), photos_and_rois[0])


def test_cascade_matches_torch(ir_dir, photos_and_rois) -> None:
    assert_cascade_matches_torch(OvCascadeRunner(model_dir=ir_dir), *photos_and_rois)


def test_face_transformer_matches_torch(ir_dir, photos_and_rois) -> None:
    images, rois = photos_and_rois
    ours, ref = OvTransformerRunner(model_dir=ir_dir), TorchLandmarkRunner("face_transformer_xs")
    assert ours.input_size == ref.input_size
    crops = np.concatenate([np.stack([crop_image(im, roi, ref.input_size) for roi in r]) for im, r in
                            zip(images, rois) if r])
    (p_o, s_o), (p_t, s_t) = ours.run(crops), ref.run(crops)
    np.testing.assert_allclose(p_o, p_t, rtol=0, atol=PX_TOL * 2)  # 128-space; attention softmax sums
    np.testing.assert_allclose(s_o, s_t, rtol=0, atol=1e-4)


def test_graph_takes_uint8_nhwc_and_normalises_inside(ir_dir) -> None:
    """The detector graph's built-in normalisation (x / 127.5 - 1) equals the torch detector's, on a random
    uint8 image, without any conversion outside the graph."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    boxes, scores = OvGraph(graph_spec("face_detection_short_range"), directory=ir_dir)(x)
    ref_boxes, ref_scores = FaceDetector().boxes_and_scores(x)
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(boxes * 128, ref_boxes * 128, rtol=0, atol=PX_TOL)


def test_auto_is_openvino_on_cpu_and_other_devices_are_refused() -> None:
    assert resolve_backend("auto", "cpu") == "openvino"
    assert resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        make_landmark_runner(device="cuda", backend="openvino")
    with pytest.raises(ValueError, match="uint8"):
        OvLandmarkRunner().run(np.zeros((1, 192, 192, 3), np.float32))
    floats = torch.rand(1, 3, 192, 192)  # a float NCHW tensor in [0, 1] is taken back to uint8 NHWC
    assert OvLandmarkRunner().run(floats)[0].shape == (1, 478, 3)


def test_importing_attnmesh_with_openvino_sends_no_telemetry(tmp_path) -> None:
    """OpenVINO's model-conversion tools send a usage event when imported; our backend must not import them."""
    code = ("import sys, numpy as np, attnmesh\n"
            "fm = attnmesh.FaceMesh(static_image_mode=True)\n"
            "fm.process(np.zeros((64, 64, 3), np.uint8))\n"
            "assert type(fm.landmark_runner).__name__ == 'OvLandmarkRunner', type(fm.landmark_runner)\n"
            "bad = sorted(m for m in sys.modules if 'telemetry' in m or m.startswith('openvino.tools'))\n"
            "assert not bad, bad\n")
    env = {"ATTNMESH_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def test_threads_starting_inference_together_do_not_hang(ir_dir) -> None:
    """Two threads, each with its own graph, importing OpenVINO and making their first inference at the same
    moment (as ``attnmesh images`` workers do). pybind11's lazy NumPy set-up deadlocked in about one run in
    three before ``import_openvino`` did it once up front; five processes must all finish."""
    # the IR and its compiled blob exist before the race (processes rewriting the blob cache together can
    # fault on a half-written file: that is not what this test is about)
    OvGraph(graph_spec("face_detection_short_range"), threads=1, directory=ir_dir)(np.zeros((1, 128, 128, 3), np.uint8))
    code = ("import sys, threading, numpy as np\n"
            "from attnmesh.runtime.openvino import OvGraph, graph_spec\n"
            "gate = threading.Barrier(2)\n"
            "def work():\n"
            "    graph = OvGraph(graph_spec('face_detection_short_range'), threads=1, directory=sys.argv[1])\n"
            "    gate.wait()\n"
            "    for _ in range(20):\n"
            "        graph(np.zeros((1, 128, 128, 3), np.uint8))\n"
            "threads = [threading.Thread(target=work) for _ in range(2)]\n"
            "[t.start() for t in threads]\n"
            "[t.join() for t in threads]\n")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(ir_dir)], stderr=subprocess.PIPE, text=True)
            for _ in range(5)]
    hung, deadline = 0, time.monotonic() + 120
    for run in runs:
        try:
            _, err = run.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()
            hung += 1
            continue
        assert run.returncode == 0, err[-2000:]
    assert hung == 0, f"{hung} of {len(runs)} processes hung"
