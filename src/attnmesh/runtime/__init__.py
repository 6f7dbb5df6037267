"""The runtime layer: one runner per backend for every registered model (:mod:`attnmesh.registry`), and the
face detector on each backend.

* ``"openvino"``: :mod:`attnmesh.runtime.openvino` (a core dependency), float32; the fastest on the CPUs
  measured (docs, Speed).
* ``"onnxruntime"``: :mod:`attnmesh.runtime.onnxruntime` (``pip install "attnmesh[onnx]"``), float32.
  (INT8 failed its accuracy bar and is not offered here; see :mod:`attnmesh.eval.quantize`.)
* ``"torch"``: :mod:`attnmesh.runtime.pytorch`, the reference implementation, and the only one for other
  devices (CUDA, MPS).
* ``"auto"``: on the CPU, OpenVINO when it is installed, else ONNX Runtime when it is, else PyTorch; on other
  devices PyTorch.

Every landmark runner is a :class:`~attnmesh.runtime.base.LandmarkRunner` (``input_size``, ``num_landmarks``,
``predict_many``); :func:`make_landmark_runner` builds the one for a model name and a backend. The batched GPU
predictor is :mod:`attnmesh.runtime.gpu` (used directly, not through FaceMesh).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..options import BACKENDS  # noqa: F401  (re-exported)
from .base import LandmarkRunner, available_cpus, default_threads, env_threads, device_type, resolve_backend, sigmoid  # noqa: F401

if TYPE_CHECKING:
    import torch







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
                         "float32 (> the 0.5% bar) and is not faster on CPU; see attnmesh.eval.quantize")
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
