"""ONNX Runtime backend: drop-in runners for ``FaceMesh``'s landmark model, the cascade and the detector.

* :class:`OrtLandmarkRunner`: a :class:`attnmesh.runtime.base.LandmarkRunner` for the mesh networks;
  ``precision="int8"`` runs the statically quantized Attention Mesh (see :mod:`attnmesh.eval.quantize`).
* :class:`OrtTransformerRunner`: the face transformer.
* :class:`OrtFaceDetector`: a :class:`attnmesh.runtime.detector.DetectorRunner`.
* :class:`OrtCascadeRunner`: face_landmark + iris, as :class:`attnmesh.runtime.cascade.TorchCascadeRunner`.

The graphs are built from the shipped weights on first use (:func:`attnmesh.export.onnx.ensure_onnx`).
``providers``: ``"cpu"`` (default), ``"cuda"``, or ``"tensorrt"`` (TensorRT EP with fp16 and an engine
cache, CUDA and CPU as fallbacks). The CUDA and TensorRT options are written but NOT measured here: the
machine this was developed on has no GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..export.onnx import ensure_onnx
from ..models.face_landmark import FaceLandmarkOutput
from ..models.iris import IrisLandmarkOutput
from .base import (MESH_ARCHITECTURES, CropLandmarkRunner, default_threads, device_type, mirror_mean, registered,
                   sigmoid)
from .cascade import TorchCascadeRunner
from .detector import DetectorRunner

PROVIDERS = ("cpu", "cuda", "tensorrt")


def session_options(threads: int | None = None, profile: str | None = None):
    """CPU-friendly options: ``threads`` intra-op threads (no inter-op pool: the graphs are chains),
    sequential execution, all graph optimisations (Conv+Add+activation fusions, NCHWc layouts)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return so


def provider_list(providers: str = "cpu", cache_dir: Path | None = None, fp16: bool = True,
                  max_batch: int = 1024) -> list[Any]:
    """ONNX Runtime provider list for ``"cpu"``, ``"cuda"`` or ``"tensorrt"`` (not measured here)."""
    if providers not in PROVIDERS:
        raise ValueError(f"providers must be one of {PROVIDERS}, got {providers!r}")
    if providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "cuda":
        return [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"]
    trt = {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_timing_cache_enable": True,
           "trt_builder_optimization_level": 3}
    if cache_dir is not None:
        trt["trt_engine_cache_path"] = str(cache_dir)
        trt["trt_timing_cache_path"] = str(cache_dir)
    return [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", "CPUExecutionProvider"]


def trt_profile_options(input_size: int, max_batch: int = 1024, opt_batch: int = 256) -> dict[str, str]:
    """TensorRT optimisation profile for the dynamic batch axis (input ``image``)."""
    shape = f"3x{input_size}x{input_size}"
    return {"trt_profile_min_shapes": f"image:1x{shape}", "trt_profile_opt_shapes": f"image:{opt_batch}x{shape}",
            "trt_profile_max_shapes": f"image:{max_batch}x{shape}"}


class OrtGraph:
    """One ONNX Runtime session on one of the exported graphs: ``graph(x) -> tuple of outputs``."""

    def __init__(self, name: str, model_dir: Path | str | None = None, threads: int | None = None,
                 providers: str = "cpu", profile: str | None = None) -> None:
        import onnxruntime as ort

        self.name = name
        self.path = ensure_onnx(name, model_dir)
        plist = provider_list(providers, cache_dir=self.path.parent / "trt")
        if providers == "tensorrt":
            from ..export.onnx import GRAPHS

            size = GRAPHS[name.split(".")[0]].input_size
            plist[0][1].update(trt_profile_options(size))
        self.session = ort.InferenceSession(str(self.path), sess_options=session_options(threads, profile),
                                            providers=plist)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x, np.float32)})


def _nchw01(crops: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [0, 1]; a float NCHW tensor or array is passed through."""
    if isinstance(crops, torch.Tensor):
        return crops.detach().float().cpu().numpy()
    if crops.dtype == np.uint8:
        return crops.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
    return crops.astype(np.float32, copy=False)


class OrtLandmarkRunner(CropLandmarkRunner):
    """Registered model ``model`` (Attention Mesh, face_landmark or the fine-tuned Attention Mesh) on ONNX
    Runtime. ``precision``: ``"fp32"``, or ``"int8"`` for measurements only (Attention Mesh; built with
    ``python -m attnmesh.eval.quantize``; it misses the 0.5% IOD bar, see :mod:`attnmesh.eval.quantize`)."""

    def __init__(self, model: str = "attention_mesh", device: str | torch.device = "cpu",
                 model_dir: Path | str | None = None, threads: int | None = None, providers: str | None = None,
                 precision: str = "fp32", profile: str | None = None) -> None:
        spec = registered(model, MESH_ARCHITECTURES, "OrtLandmarkRunner")
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
        if precision == "int8" and spec.name != "attention_mesh":
            raise ValueError("INT8 is built for the Attention Mesh only")
        self.spec = spec
        self.precision = precision
        self.input_size = spec.input_size
        self.num_landmarks = spec.num_landmarks
        self.device = torch.device(device)
        providers = providers or ("cuda" if self.device.type == "cuda" else "cpu")
        self.graph = OrtGraph(spec.name + (".int8" if precision == "int8" else ""), model_dir, threads, providers,
                              profile)

    def forward(self, crops: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        points, logit = self.graph(_nchw01(crops))
        return points, sigmoid(logit)


class OrtTransformerRunner(CropLandmarkRunner):
    """The face transformer on ONNX Runtime: ``precision`` ``"fp32"`` or ``"int8"`` (dynamic quantization of the
    MatMul/Gemm weights; see :mod:`attnmesh.export.transformer`). ``mirror_average`` as
    :class:`~attnmesh.runtime.pytorch.TorchLandmarkRunner`'s."""

    def __init__(self, model: str = "face_transformer_xs", precision: str = "fp32",
                 model_dir: Path | str | None = None, threads: int | None = None, device: str | torch.device = "cpu",
                 mirror_average: bool = False) -> None:
        import onnxruntime as ort

        from ..export.transformer import ensure_transformer_onnx

        spec = registered(model, ("face_transformer",), "OrtTransformerRunner")
        self.spec = spec
        self.mirror_average = mirror_average
        self.num_landmarks = spec.num_landmarks
        self.device = torch.device("cpu")
        self.path = ensure_transformer_onnx(spec.config["size"], precision, model_dir)
        self.session = ort.InferenceSession(str(self.path), sess_options=session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_size = int(self.session.get_inputs()[0].shape[-1])

    def forward(self, crops: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = _nchw01(crops)
        if self.mirror_average:
            x = np.concatenate([x, x[..., ::-1]])
        landmarks, face_logit = self.session.run(["landmarks", "face_logit"], {"image": np.ascontiguousarray(x)})
        presence = sigmoid(face_logit)
        return mirror_mean(landmarks, presence, self.input_size) if self.mirror_average else (landmarks, presence)


class OrtFaceDetector(DetectorRunner):
    """``FaceDetector`` on ONNX Runtime (same letterbox crop, decoding, weighted NMS)."""

    def __init__(self, min_detection_confidence: float = 0.5, device: str | torch.device = "cpu",
                 model_dir: Path | str | None = None, threads: int | None = None,
                 providers: str | None = None) -> None:
        from ..options import check_device, check_unit

        self.min_detection_confidence = check_unit("min_detection_confidence", min_detection_confidence)
        self.device = check_device(device)
        providers = providers or ("cuda" if device_type(device) == "cuda" else "cpu")
        self.graph = OrtGraph("face_detection_short_range", model_dir, threads, providers)

    def boxes_and_scores(self, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = tensors.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
        boxes, scores = self.graph(x)
        return boxes, scores


class _TorchAdapter:
    """Makes an :class:`OrtGraph` look like a torch module returning a NamedTuple of tensors."""

    def __init__(self, graph: OrtGraph, output: type[NamedTuple]) -> None:
        self.graph, self.output = graph, output

    def __call__(self, x: torch.Tensor):
        return self.output(*(torch.from_numpy(o) for o in self.graph(x.detach().float().cpu().numpy())))


class OrtCascadeRunner(TorchCascadeRunner):
    """The face_landmark + iris cascade (``TorchCascadeRunner.predict_many``) with both networks on ORT."""

    def __init__(self, device: str | torch.device = "cpu", eye_crop: str = "mediapipe",
                 model_dir: Path | str | None = None, threads: int | None = None,
                 providers: str | None = None) -> None:
        from .cascade import EYE_CROP_MODES

        if eye_crop not in EYE_CROP_MODES:
            raise ValueError(f"eye_crop must be one of {EYE_CROP_MODES}, got {eye_crop!r}")
        self.device = torch.device("cpu")  # tensors handed to the adapters stay on the CPU
        self.eye_crop = eye_crop
        providers = providers or ("cuda" if torch.device(device).type == "cuda" else "cpu")
        self.face_net = _TorchAdapter(OrtGraph("face_landmark", model_dir, threads, providers),
                                      FaceLandmarkOutput)
        self.iris_net = _TorchAdapter(OrtGraph("iris_landmark", model_dir, threads, providers),
                                      IrisLandmarkOutput)


