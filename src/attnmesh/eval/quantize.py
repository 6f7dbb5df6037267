"""INT8 static quantization of the Attention Mesh graph (ONNX Runtime, QDQ, per-channel weights).

    python -m attnmesh.eval.quantize [--out DIR] [--calibration-dir ../shared/data/300w-train] [--calibration N]

Recipe (fixed so that results can be reproduced):

* **Split** (:func:`split_images`): every ``*.jpg`` under the folder, keyed by its path relative to the
  folder; an image is *held out* when ``sha1(relative path) mod 5 == 0`` (about 20%), and calibration uses
  only the rest. Both lists are sorted by that hash, so "the first N" is a fixed pseudo-random sample.
* **Crops**: ``FaceMesh(static_image_mode=True, max_num_faces=1)`` on the image; the first face's ROI
  (from the detector) is cropped to 192x192 exactly as the pipeline crops it.
* **Calibration**: the first ``DEFAULT_CALIBRATION`` (128) calibration crops, MinMax ranges.
* **What is quantized**: the convolutions, residual Adds and max-pools of the three CNN trunks (backbone
  and mesh head, lips and eye region networks), weights int8 per output channel, activations uint8.
  Kept in float32: the last convolution of every head (its outputs are pixel coordinates, where one
  8-bit step over the range is about one pixel), the face-flag head, the region geometry
  (atan2/sin/cos/einsum) and the ``GridSample`` region crops, and the landmark refinement.
* **Acceptance**: INT8 is offered only if the mean landmark distance to the float32 graph, in % of the
  inter-ocular distance (landmarks 33-263), is <= 0.5% on held-out images (see ``benchmarks/speed_table.py``).

**Result (ONNX Runtime 1.32, 100 held-out faces): it fails.** MinMax: 1.3% IOD mean (max 2.9%; 1.26% on
the graph before PRelu was decomposed); Percentile: 1.03% (max 2.7%, earlier graph); and the INT8 graph is
*slower* than float32 at batch 1 (9.5 vs 5.4 ms on 2 threads): the activation functions (PRelu, now
Relu/Min/Mul/Add) stay float, so each of the 73 blocks pays a Dequantize/Quantize pair on tensors too small
for the int8 convolutions to win it back. INT8 is therefore not offered by
:func:`attnmesh.runtime.make_landmark_runner`; the graph can still be built and measured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..models.sizes import MESH_INPUT_SIZE

DEFAULT_CALIBRATION = 128
HOLDOUT_MOD = 5  # held out: sha1(relative path) % HOLDOUT_MOD == 0
# Head convolutions whose outputs are coordinates or the presence logit: kept in float.
FLOAT_NODE_PREFIXES = ("/net/mesh_out/", "/net/face_flag_out/", "/net/lips/contour/out/",
                       "/net/right_eye/contour/out/", "/net/right_eye/iris/out/",
                       "/net/left_eye/contour/out/", "/net/left_eye/iris/out/")
QUANTIZED_NODE_PREFIXES = ("/net/backbone/", "/net/head/", "/net/lips/", "/net/right_eye/", "/net/left_eye/")
OP_TYPES = ("Conv", "Add", "MaxPool")


def _key(rel: str) -> int:
    return int(hashlib.sha1(rel.encode()).hexdigest(), 16)


def split_images(folder: Path | str) -> tuple[list[Path], list[Path]]:
    """(calibration, held-out) image paths of ``folder`` (recursive ``*.jpg``), each sorted by hash."""
    folder = Path(folder)
    keyed = sorted((_key(p.relative_to(folder).as_posix()), p) for p in folder.rglob("*.jpg"))
    calib = [p for k, p in keyed if k % HOLDOUT_MOD != 0]
    held = [p for k, p in keyed if k % HOLDOUT_MOD == 0]
    return calib, held


def face_crops(paths: Sequence[Path], count: int, log: Callable[[str], None] | None = None
               ) -> tuple[np.ndarray, list[Path]]:
    """Up to ``count`` (N, 192, 192, 3) uint8 face crops (one per image, images without a face skipped)
    and the images they came from, with ``FaceMesh(static_image_mode=True)``'s detector ROIs."""
    import cv2

    from ..geometry.roi import crop_image
    from ..pipeline.face_mesh import FaceMesh

    crops, used = [], []
    with FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        try:  # the same ROIs, computed several times faster (parity of the two backends: tests/test_export.py)
            from ..runtime.onnxruntime import OrtFaceDetector, OrtLandmarkRunner

            fm.detector = OrtFaceDetector(fm.detector.min_detection_confidence)
            fm.landmark_runner = OrtLandmarkRunner("attention_mesh")
        except ImportError:
            pass
        for path in paths:
            if len(crops) >= count:
                break
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                continue
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces = fm.process(rgb)
            if not faces:
                continue
            crops.append(crop_image(rgb, faces[0].roi, MESH_INPUT_SIZE, border="replicate"))
            used.append(path)
            if log and len(crops) % 32 == 0:
                log(f"  {len(crops)} crops")
    return (np.stack(crops) if crops else np.zeros((0, MESH_INPUT_SIZE, MESH_INPUT_SIZE, 3), np.uint8)), used


def to_input(crops: np.ndarray) -> np.ndarray:
    return crops.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)


def nodes_to_quantize(model_path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(model_path))
    return [n.name for n in model.graph.node if n.op_type in OP_TYPES
            and n.name.startswith(QUANTIZED_NODE_PREFIXES) and not n.name.startswith(FLOAT_NODE_PREFIXES)]


def quantize_attention_mesh(fp32_path: Path, out_path: Path, crops: np.ndarray, batch: int = 16,
                            calibrate_method: str = "MinMax", per_channel: bool = True) -> Path:
    """Write the INT8 (QDQ) Attention Mesh to ``out_path`` calibrated on uint8 NHWC ``crops``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": to_input(crops[i:i + batch])} for i in range(0, len(crops), batch)])

        def get_next(self):
            return next(self.batches, None)

    out_path = Path(out_path)
    try:
        with atomic_path(out_path) as tmp:
            quantize_static(str(fp32_path), str(tmp), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_quantize=nodes_to_quantize(Path(fp32_path)),
                            op_types_to_quantize=list(OP_TYPES),
                            calibrate_method=getattr(CalibrationMethod, calibrate_method),
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    finally:
        for extra in out_path.parent.glob("augmented_model*.onnx"):
            extra.unlink(missing_ok=True)
    return out_path


def iod_deviation(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per face: mean 2D distance of (N, K, 2+) ``points`` to ``reference`` in units of the reference's
    inter-ocular distance (landmarks 33-263). Works in any frame (crop or image pixels)."""
    iod = np.linalg.norm(reference[:, 33, :2] - reference[:, 263, :2], axis=-1)
    return np.linalg.norm(points[..., :2] - reference[..., :2], axis=-1).mean(-1) / iod


def main(argv: list[str] | None = None) -> int:
    """``python -m attnmesh.eval.quantize``: export the float32 graph if needed, calibrate on photos of the
    calibration half of ``--calibration-dir`` and write ``attention_mesh.int8.onnx`` beside it."""
    import argparse

    from ..export.onnx import default_cache_dir, export_all

    p = argparse.ArgumentParser(prog="python -m attnmesh.eval.quantize", description=main.__doc__)
    p.add_argument("--out", type=Path, default=None, help="graph folder (default: the ONNX cache folder)")
    p.add_argument("--calibration-dir", type=Path, default=Path("../shared/data/300w-train"))
    p.add_argument("--calibration", type=int, default=DEFAULT_CALIBRATION, help="number of calibration crops")
    a = p.parse_args(argv)
    if not a.calibration_dir.is_dir():
        p.error(f"calibration folder not found: {a.calibration_dir}")
    out = a.out or default_cache_dir()
    fp32 = export_all(out, ["attention_mesh"])["attention_mesh"]
    calib, _ = split_images(a.calibration_dir)
    crops, _ = face_crops(calib, a.calibration, log=print)
    q = quantize_attention_mesh(fp32, Path(out) / "attention_mesh.int8.onnx", crops)
    print(f"quantized {q} ({q.stat().st_size / 1e6:.1f} MB, calibrated on {len(crops)} crops)")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
