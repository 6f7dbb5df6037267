"""The runtime layer: one runner per backend for every registered model (:mod:`attnmesh.registry`), and the
face detector on each backend.

* ``"openvino"``: :mod:`attnmesh.runtime.openvino` (a core dependency), float32; the fastest on the CPUs
  measured (docs, Speed).
* ``"onnxruntime"``: :mod:`attnmesh.runtime.onnxruntime` (``pip install "attnmesh[onnx]"``), float32.
  (INT8 failed its accuracy bar and is not offered here; see :mod:`attnmesh.export.quantize`.)
* ``"torch"``: :mod:`attnmesh.runtime.pytorch`, the reference implementation, and the only one for other
  devices (CUDA, MPS).
* ``"auto"``: on the CPU, OpenVINO when it is installed, else ONNX Runtime when it is, else PyTorch; on other
  devices PyTorch.

Every landmark runner is a :class:`~attnmesh.runtime.base.LandmarkRunner` (``input_size``, ``num_landmarks``,
``predict_many``); :func:`make_landmark_runner` builds the one for a model name and a backend. The batched GPU
predictor is :mod:`attnmesh.runtime.gpu` (used directly, not through FaceMesh).
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..options import BACKENDS  # noqa: F401  (re-exported)
from .base import LandmarkRunner

if TYPE_CHECKING:
    import torch



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
    from ..options import check_backend

    check_backend(backend)
    if backend == "auto":
        if device_type(device) != "cpu":
            return "torch"
        for candidate in ("openvino", "onnxruntime"):
            if importlib.util.find_spec(candidate) is not None:
                return candidate
        return "torch"
    return backend


def make_landmark_runner(model: str = "attention_mesh", backend: str = "auto",
                         device: str | torch.device = "cpu", precision: str = "fp32",
                         **options: Any) -> LandmarkRunner:
    """The runner of registered model ``model`` (a name of :func:`attnmesh.list_models` or an alias) on
    ``backend`` (resolved by :func:`resolve_backend`). ``options`` go to the runner: ``threads`` and
    ``model_dir`` (OpenVINO, ONNX Runtime), ``eye_crop`` (cascade), ``mirror_average`` (face transformer).
    ValueError for a model the backend does not run or a precision that is not offered."""
    from ..registry import get_model_spec

    spec = get_model_spec(model)
    if precision != "fp32":
        raise ValueError("only precision='fp32' is offered: the INT8 Attention Mesh deviates 1.0-1.3% IOD from "
                         "float32 (> the 0.5% bar) and is not faster on CPU; see attnmesh.export.quantize")
    backend = resolve_backend(backend, device)
    if backend not in spec.backends:
        raise ValueError(f"model {spec.name!r} runs on {', '.join(spec.backends)}, not {backend!r}")
    if spec.architecture == "cascade":
        if backend == "openvino":
            from .openvino import OvCascadeRunner

            return OvCascadeRunner(device=device, **options)
        if backend == "onnxruntime":
            from .onnxruntime import OrtCascadeRunner

            return OrtCascadeRunner(device=device, **options)
        from .cascade import TorchCascadeRunner

        return TorchCascadeRunner(device=device, **options)
    transformer = spec.architecture == "face_transformer"
    if backend == "openvino":
        from .openvino import OvLandmarkRunner, OvTransformerRunner

        return (OvTransformerRunner if transformer else OvLandmarkRunner)(spec.name, device=device, **options)
    if backend == "onnxruntime":
        from .onnxruntime import OrtLandmarkRunner, OrtTransformerRunner

        return (OrtTransformerRunner if transformer else OrtLandmarkRunner)(spec.name, device=device, **options)
    from .pytorch import TorchLandmarkRunner

    options.pop("threads", None)  # PyTorch follows torch.set_num_threads
    options.pop("model_dir", None)
    return TorchLandmarkRunner(spec.name, device=device, **options)


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
    from .detector import FaceDetector

    return FaceDetector(min_detection_confidence=min_detection_confidence, device=device)
