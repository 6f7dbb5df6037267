"""Checks shared by the backend tests (ONNX Runtime in test_export.py, OpenVINO in test_openvino.py): a runner on
another backend against the PyTorch one on the same real photos."""

from __future__ import annotations

import numpy as np

from attnmesh import topology
from attnmesh.runtime.cascade import TorchCascadeRunner
from attnmesh.runtime.detector import FaceDetector
from attnmesh.pipeline.tracking import roi_from_detection
from reference import photo_paths, read_rgb

PX_TOL = 1e-3  # network input pixels (128-, 192- or 64-space)


def photos_and_rois() -> tuple[list[np.ndarray], list[list]]:
    """Three real photos (one with several faces) and the torch detector's ROIs on them."""
    paths = photo_paths()
    images = [read_rgb(p) for p in (paths[0], paths[len(paths) // 2], paths[-1])]
    det = FaceDetector()
    rois = [[roi_from_detection(d.box, d.keypoints) for d in det.process(im)[:4]] for im in images]
    assert sum(map(len, rois)) >= 3
    return images, rois


def assert_detector_matches_torch(detector, images: list[np.ndarray]) -> None:
    """Same detections as the torch detector: scores within 1e-5, boxes and keypoints within PX_TOL of the
    128x128 input, i.e. ``PX_TOL * side / 128`` image pixels (+1e-3 for float32 rounding)."""
    ours, ref = detector.process_batch(images), FaceDetector().process_batch(images)
    for image, a, b in zip(images, ours, ref):
        assert len(a) == len(b)
        side = max(image.shape[:2])  # the letterbox square: 128-space -> image pixels scales by side / 128
        for da, db in zip(a, b):
            assert abs(da.score - db.score) < 1e-5
            assert np.abs(da.box - db.box).max() <= PX_TOL * side / 128 + 1e-3
            assert np.abs(da.keypoints - db.keypoints).max() <= PX_TOL * side / 128 + 1e-3


def assert_cascade_matches_torch(cascade, images: list[np.ndarray], rois: list[list]) -> None:
    """The face_landmark + iris cascade against the torch one: the mesh within PX_TOL of the 192x192 crop; eye
    and iris points within a median 2% of a crop pixel (MediaPipe's eye crop rounds its ROI to whole pixels,
    so an eye crop can move by a pixel between backends); the same presence scores."""
    ref = TorchCascadeRunner()
    eyes = np.zeros(478, bool)
    eyes[list(topology.RIGHT_EYE) + list(topology.LEFT_EYE)] = True
    eyes[468:] = True
    for image, r in zip(images, rois):
        if not r:
            continue
        a, sa = cascade.predict(image, r)
        b, sb = ref.predict(image, r)
        scale = np.array([x.size / 192 for x in r])[:, None]
        err = np.abs(a - b)[..., :2].max(-1)  # (N, 478) image pixels
        assert (err[:, ~eyes] <= PX_TOL * scale + 1e-4).all(), err[:, ~eyes].max()
        assert np.median(err[:, eyes]) <= 0.02 * scale.max(), np.median(err[:, eyes])
        np.testing.assert_allclose(sa, sb, atol=1e-5)
