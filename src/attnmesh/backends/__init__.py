"""Inference backends for :class:`attnmesh.FaceMesh`: drop-in runners with the interfaces of
``LandmarkModel`` (``input_size``, ``num_landmarks``, ``crop``, ``run``, ``predict``) and ``FaceDetector``.

* ``"openvino"``: :mod:`attnmesh.backends.openvino` (a core dependency), float32; the fastest on the CPUs
  measured (README, Speed).
* ``"onnxruntime"``: :mod:`attnmesh.backends.onnxruntime` (``pip install "attnmesh[onnx]"``), float32.
  (INT8 failed its accuracy bar and is not offered here; see :mod:`attnmesh.export.quantize`.)
* ``"torch"``: the PyTorch modules (:mod:`attnmesh.pipeline.face_mesh`), the reference implementation, and
  the only one for other devices (CUDA, MPS).
* ``"auto"``: on the CPU, OpenVINO when it is installed, else ONNX Runtime when it is, else PyTorch; on other
  devices PyTorch.

The batched GPU predictor is :mod:`attnmesh.backends.gpu` (used directly, not through FaceMesh).
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")


def default_threads() -> int:
    """Intra-op threads: ``$ATTNMESH_THREADS`` if set, else the CPUs this process may run on."""
    return int(os.environ.get("ATTNMESH_THREADS", 0)) or len(os.sched_getaffinity(0)) or 1


def device_type(device: str | torch.device) -> str:
    """``"cpu"``, ``"cuda"``, ``"mps"``... of a device name or ``torch.device`` (no PyTorch import)."""
    return str(device).split(":")[0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float64, returned as float32 (presence scores from logits)."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def resolve_backend(backend: str = "auto", device: str | torch.device = "cpu") -> str:
    """The backend that runs: ``backend``, or for ``"auto"`` the one chosen here. ValueError for an unknown
    name, RuntimeError for ``"onnxruntime"`` when ONNX Runtime is not installed."""
    from ..pipeline.options import check_backend

    check_backend(backend)
    if backend == "auto":
        if device_type(device) != "cpu":
            return "torch"
        for candidate in ("openvino", "onnxruntime"):
            if importlib.util.find_spec(candidate) is not None:
                return candidate
        return "torch"
    return backend


def make_landmark_model(refine: bool = True, device: str | torch.device = "cpu", backend: str = "auto",
                        precision: str = "fp32", weights: str = "attention_mesh", **options):
    """A landmark runner for ``FaceMesh``: the Attention Mesh with shipped weights ``weights`` when ``refine``,
    else face_landmark (``options`` go to the ONNX Runtime / OpenVINO runner: model_dir, threads, ...)."""
    if precision != "fp32":
        raise ValueError("only precision='fp32' is offered: the INT8 Attention Mesh deviates 1.0-1.3% IOD from "
                         "float32 (> the 0.5% bar) and is not faster on CPU; see attnmesh.export.quantize")
    backend = resolve_backend(backend, device)
    if backend == "openvino":
        from .openvino import OvLandmarkModel

        return OvLandmarkModel(refine=refine, device=device, weights=weights, **options)
    if backend == "onnxruntime":
        if weights != "attention_mesh":
            raise ValueError(f"weights {weights!r} run on the torch and openvino backends only")
        from .onnxruntime import OrtLandmarkModel

        return OrtLandmarkModel(refine=refine, device=device, precision=precision, **options)
    from ..pipeline.face_mesh import LandmarkModel

    return LandmarkModel(refine=refine, device=device, weights=weights)


def make_face_detector(min_detection_confidence: float = 0.5, device: str | torch.device = "cpu",
                       backend: str = "auto", **options):
    """A detector runner for ``FaceMesh``."""
    backend = resolve_backend(backend, device)
    if backend == "openvino":
        from .openvino import OvFaceDetector

        return OvFaceDetector(min_detection_confidence=min_detection_confidence, device=device, **options)
    if backend == "onnxruntime":
        from .onnxruntime import OrtFaceDetector

        return OrtFaceDetector(min_detection_confidence=min_detection_confidence, device=device, **options)
    from ..pipeline.face_detector import FaceDetector

    return FaceDetector(min_detection_confidence=min_detection_confidence, device=device)


def make_cascade_model(device: str | torch.device = "cpu", backend: str = "auto", **options):
    """The face_landmark + iris cascade runner for ``FaceMesh(model="cascade")``."""
    backend = resolve_backend(backend, device)
    if backend == "openvino":
        from .openvino import OvCascadeLandmarkModel

        return OvCascadeLandmarkModel(device=device, **options)
    if backend == "onnxruntime":
        from .onnxruntime import OrtCascadeLandmarkModel

        return OrtCascadeLandmarkModel(device=device, **options)
    from ..pipeline.cascade import CascadeLandmarkModel

    return CascadeLandmarkModel(device=device, **options)
