"""Inference backends for :class:`attnmesh.FaceMesh`: drop-in runners with the interfaces of
``LandmarkModel`` (``input_size``, ``num_landmarks``, ``crop``, ``run``, ``predict``) and ``FaceDetector``.

* ``"torch"``: the PyTorch modules (:mod:`attnmesh.pipeline.face_mesh`), the reference implementation.
* ``"onnxruntime"``: :mod:`attnmesh.backends.onnxruntime` (``pip install "attnmesh[onnx]"``), float32.
  (INT8 failed its accuracy bar and is not offered here; see :mod:`attnmesh.export.quantize`.)
* ``"auto"``: ``"onnxruntime"`` on CPU when it is installed (it is several times faster there, see the
  README's Speed section), else ``"torch"``.

The batched GPU predictor is :mod:`attnmesh.backends.gpu` (used directly, not through FaceMesh).
"""

from __future__ import annotations

import importlib.util

import torch

BACKENDS = ("auto", "torch", "onnxruntime")


def resolve_backend(backend: str = "auto", device: str | torch.device = "cpu") -> str:
    """The backend that runs: ``backend``, or for ``"auto"`` the one chosen here. ValueError for an unknown
    name, RuntimeError for ``"onnxruntime"`` when ONNX Runtime is not installed."""
    from ..pipeline.options import check_backend

    check_backend(backend)
    if backend == "auto":
        on_cpu = torch.device(device).type == "cpu"
        return "onnxruntime" if on_cpu and importlib.util.find_spec("onnxruntime") is not None else "torch"
    return backend


def make_landmark_model(refine: bool = True, device: str | torch.device = "cpu", backend: str = "auto",
                        precision: str = "fp32", **options):
    """A landmark runner for ``FaceMesh`` (``options`` go to the ONNX Runtime runner: model_dir, threads,
    providers)."""
    if precision != "fp32":
        raise ValueError("only precision='fp32' is offered: the INT8 Attention Mesh deviates 1.0-1.3% IOD from "
                         "float32 (> the 0.5% bar) and is not faster on CPU; see attnmesh.export.quantize")
    backend = resolve_backend(backend, device)
    if backend == "onnxruntime":
        from .onnxruntime import OrtLandmarkModel

        return OrtLandmarkModel(refine=refine, device=device, precision=precision, **options)
    from ..pipeline.face_mesh import LandmarkModel

    return LandmarkModel(refine=refine, device=device)


def make_face_detector(min_detection_confidence: float = 0.5, device: str | torch.device = "cpu",
                       backend: str = "auto", **options):
    """A detector runner for ``FaceMesh``."""
    backend = resolve_backend(backend, device)
    if backend == "onnxruntime":
        from .onnxruntime import OrtFaceDetector

        return OrtFaceDetector(min_detection_confidence=min_detection_confidence, device=device, **options)
    from ..pipeline.face_detector import FaceDetector

    return FaceDetector(min_detection_confidence=min_detection_confidence, device=device)


def make_cascade_model(device: str | torch.device = "cpu", backend: str = "auto", **options):
    """The face_landmark + iris cascade runner for ``FaceMesh(model="cascade")``."""
    backend = resolve_backend(backend, device)
    if backend == "onnxruntime":
        from .onnxruntime import OrtCascadeLandmarkModel

        return OrtCascadeLandmarkModel(device=device, **options)
    from ..pipeline.cascade import CascadeLandmarkModel

    return CascadeLandmarkModel(device=device, **options)
