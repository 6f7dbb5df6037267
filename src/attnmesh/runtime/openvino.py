"""OpenVINO backend (the default on CPU): drop-in runners for ``FaceMesh``'s landmark models and detector.

* :class:`OvLandmarkRunner`: a :class:`attnmesh.runtime.base.LandmarkRunner` for the Attention Mesh
  (478 points), face_landmark (468) and the fine-tuned ``attention_mesh_300w``.
* :class:`OvFaceDetector`: a :class:`attnmesh.runtime.detector.DetectorRunner`.
* :class:`OvCascadeRunner`: face_landmark + iris, as :class:`attnmesh.runtime.cascade.TorchCascadeRunner`.
* :class:`OvTransformerRunner`: the distilled face transformer.

How a network gets here: the PyTorch module with its shipped weights is exported to ONNX (PyTorch's exporter,
opset 17, the same wrappers as :mod:`attnmesh.export.onnx`), read by OpenVINO, given its input normalisation
(uint8 NHWC -> float32 NCHW, ``/255`` or ``/127.5 - 1``) as graph preprocessing, and saved as OpenVINO IR
(``.xml`` + ``.bin``) in ``$ATTNMESH_CACHE/openvino/<key>`` (default ``~/.cache/attnmesh/openvino/<key>``);
``<key>`` changes with the package, the weights, OpenVINO's version and :data:`GRAPH_REVISION`. Nothing is
downloaded. Compiled models are cached there too (OpenVINO's ``CACHE_DIR``), so later processes start fast.

Why static shapes: the graphs are compiled for fixed batch sizes (:data:`BATCH_BUCKETS`; :func:`batch_plan`
splits a batch into them). With a dynamic batch axis the CPU plugin ran the Attention Mesh at batch 1 about 4x
slower (shape inference on every call), and at batch 8 about 20% slower, on the development machine.

Precision: float32 (``INFERENCE_PRECISION_HINT=f32``). OpenVINO's CPU plugin would otherwise pick bf16 on
CPUs with AMX or AVX-512 BF16: on 100 held-out 300-W faces that moved the Attention Mesh 0.36% IOD on average,
over 0.5% on 3 of them, and ran slower at batch 1 on the development machine (docs/speed.md), so it is not
offered.

Importing this module needs neither PyTorch nor ONNX: only building a graph that is not in the cache does.

Telemetry: importing the ``openvino`` package also imports its model-conversion tools
(``openvino.tools.ovc``), whose import sends a usage event to Intel unless the user opted out. attnmesh only
needs the runtime, so :func:`import_openvino` imports OpenVINO without those tools (if OpenVINO was not
imported already) and nothing is sent.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.sizes import DETECTOR_INPUT_SIZE, IRIS_INPUT_SIZE, MESH_INPUT_SIZE
from ..options import check_unit
from ..registry import get_model_spec
from .base import (MESH_ARCHITECTURES, CropLandmarkRunner, default_threads, device_type, mirror_mean, registered,
                   sigmoid)
from .detector import DetectorRunner

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Bumped whenever the IR built for the same weights changes (part of the cache key). 2: the Attention Mesh's
#: region heads grouped, 3: and its region trunks, 4: its crop transforms at once (:mod:`attnmesh.models.grouped`).
GRAPH_REVISION = 4
#: Static batch sizes the graphs are compiled for (:func:`batch_plan`). Few on purpose: each one a process uses
#: costs a compile, about 0.3-0.45 s for the Attention Mesh even from the cache, and ``attnmesh images`` starts a
#: process per CPU; batch 8 already runs the Attention Mesh ~35% cheaper per face than batch 1.
BATCH_BUCKETS = (1, 8, 32)
#: A remainder of up to this many items runs one by one at batch 1 rather than padded to the next bucket (at
#: batch 1 a face costs about 1.6x its share of a batch of 8: five singles cost about a padded 8).
MAX_SINGLES = 4
_TOOLS = "openvino.tools.ovc"
_IMPORT_LOCK = threading.Lock()
_log = logging.getLogger(__name__)


def import_openvino() -> ModuleType:
    """The ``openvino`` module, imported without its model-conversion tools (``openvino.tools.ovc``, whose
    import sends a telemetry event). Raises ``RuntimeError`` with an install hint if OpenVINO is missing.

    Thread-safe, and it initialises the bindings' NumPy interface once before any inference: pybind11 sets
    that up lazily on the first array copy, and two threads doing their first copy at the same time
    deadlocked (each waiting on the other's one-time initialisation, one of them holding the GIL), which hung
    ``attnmesh images`` now and then."""
    with _IMPORT_LOCK:
        openvino = sys.modules.get("openvino")
        if openvino is None:
            openvino = _import_openvino()
        openvino.Tensor(np.zeros(1, np.float32)).data[:] = 0  # the one-time NumPy set-up, in this thread
        return openvino


def _import_openvino() -> ModuleType:
    blocked = _TOOLS not in sys.modules
    if blocked:
        sys.modules[_TOOLS] = None  # type: ignore[assignment]  # makes `from openvino.tools.ovc import` fail
    try:
        import openvino
    except ImportError as e:
        raise RuntimeError("the OpenVINO backend needs the openvino package: pip install openvino") from e
    finally:
        if blocked and sys.modules.get(_TOOLS, 0) is None:
            del sys.modules[_TOOLS]
    return openvino


@dataclass(frozen=True)
class IrSpec:
    """One network as an OpenVINO graph.

    Attributes:
        name: file stem in the cache (and the key's weights part).
        build: returns the PyTorch module to export (weights loaded, eval mode), taking float32 NCHW.
        input_size: input side in pixels (square).
        outputs: output names, in the module's order.
        weights: shipped weights names the graph depends on (their sha256 goes into the cache key).
        input_scale: uint8 input -> network input as ``x / input_scale + input_offset``; ``None`` keeps the
            float32 NCHW input of the module (used by the cascade, whose crops arrive as tensors).
        input_offset: see ``input_scale``.
    """

    name: str
    build: Callable[[], nn.Module]
    input_size: int
    outputs: tuple[str, ...]
    weights: tuple[str, ...]
    input_scale: float | None = 255.0
    input_offset: float = 0.0


#: The face transformer graph's outputs (:data:`attnmesh.export.transformer.OUTPUTS`).
TRANSFORMER_OUTPUTS = ("landmarks", "embedding", "expression", "spoof_logit", "face_logit")
#: name -> (input side, outputs, input_scale, input_offset) of the MediaPipe-family graphs (those of
#: :data:`attnmesh.export.onnx.GRAPHS`; a test checks they agree).
_GRAPHS = {
    "face_detection_short_range": (DETECTOR_INPUT_SIZE, ("boxes", "scores"), 127.5, -1.0),
    "attention_mesh": (MESH_INPUT_SIZE, ("landmarks", "face_logit"), 255.0, 0.0),
    "face_landmark": (MESH_INPUT_SIZE, ("mesh", "face_logit"), 255.0, 0.0),
    "iris_landmark": (IRIS_INPUT_SIZE, ("eye", "iris"), 255.0, 0.0),
}


def _export_module(name: str) -> nn.Module:
    from ..export.onnx import build_module

    return build_module(name)


def _transformer_module(name: str) -> nn.Module:
    from ..export.transformer import transformer_graph
    from ..registry import create_model

    return transformer_graph(create_model(name))


def graph_spec(name: str) -> IrSpec:
    """The :class:`IrSpec` of a network: ``"face_detection_short_range"``, ``"attention_mesh"``,
    ``"attention_mesh_300w"``, ``"face_landmark"``, ``"face_landmark.float"`` and ``"iris_landmark.float"``
    (float32 NCHW input, for the cascade), or ``"face_transformer_<size>"``. Needs no PyTorch (only building
    the graph does)."""
    from ..weights import read_manifest

    base, _, variant = name.partition(".")
    layout = "attention_mesh" if base == "attention_mesh_300w" else base
    if layout in _GRAPHS and variant in ("", "float"):
        size, outputs, scale, offset = _GRAPHS[layout]
        return IrSpec(name, lambda: _export_module(base), size, outputs, (base,),
                      None if variant == "float" else scale, offset)
    models = read_manifest()["models"]
    if name.startswith("face_transformer_") and name in models:
        return IrSpec(name, lambda: _transformer_module(name), get_model_spec(name).input_size,
                      TRANSFORMER_OUTPUTS, (name,))
    raise ValueError(f"no OpenVINO graph named {name!r}")


def cache_dir() -> Path:
    """``$ATTNMESH_CACHE/openvino`` if set, else ``~/.cache/attnmesh/openvino`` (XDG_CACHE_HOME honoured)."""
    root = os.environ.get("ATTNMESH_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnmesh"
    return base / "openvino"


def ir_key(spec: IrSpec) -> str:
    """Changes with the package version, the weights, OpenVINO's version, the normalisation and
    :data:`GRAPH_REVISION`."""
    from ..version import __version__
    from ..weights import read_manifest

    ov = import_openvino()
    models = read_manifest()["models"]
    h = hashlib.sha256()
    for w in spec.weights:
        h.update(models[w]["sha256"].encode())
    h.update(f"{spec.input_scale}/{spec.input_offset}/{spec.input_size}".encode())
    return f"{__version__}-ov{ov.get_version().split('-')[0]}-r{GRAPH_REVISION}-{h.hexdigest()[:12]}"


def ensure_ir(spec: IrSpec, directory: Path | None = None) -> Path:
    """Path of the IR ``.xml`` of ``spec`` in ``directory`` (default ``cache_dir()/<key>``), built first if
    missing: ONNX export of ``spec.build()``, preprocessing added, saved atomically."""
    ov = import_openvino()
    directory = Path(directory) if directory is not None else cache_dir() / ir_key(spec)
    xml = directory / f"{spec.name}.xml"
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive(directory / f".{spec.name}.lock"):  # other processes wait, then find it built
        if xml.is_file() and xml.with_suffix(".bin").is_file():
            return xml
        _build_ir(ov, spec, directory, xml)
    return xml


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory lock on ``lock_path`` held for the block (no lock where ``fcntl`` is missing: Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_ir(ov: ModuleType, spec: IrSpec, directory: Path, xml: Path) -> None:
    import torch  # only to build the graph

    from ..export.onnx import OPSET

    _log.info("building the OpenVINO graph of %s from the shipped weights (first use only; cached in %s)",
              spec.name, directory)
    tmp = directory / f".{spec.name}.{os.getpid()}.{threading.get_ident()}"
    onnx_path = tmp.with_suffix(".onnx")
    try:
        module = spec.build().eval()
        dummy = torch.rand(1, 3, spec.input_size, spec.input_size)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (dummy,), str(onnx_path), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=list(spec.outputs),
                              dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in spec.outputs}},
                              do_constant_folding=True)
        model = ov.Core().read_model(str(onnx_path))
        if spec.input_scale is not None:
            model = _with_uint8_input(ov, model, spec.input_scale, spec.input_offset)
        _save_ir(ov, model, xml)
    finally:
        onnx_path.unlink(missing_ok=True)


def _save_ir(ov: ModuleType, model: Any, xml: Path) -> None:
    """Write ``model`` as IR ``xml`` + ``.bin`` through temporary files renamed into place (``.bin`` first: a
    reader that finds the ``.xml`` finds its weights)."""
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.{threading.get_ident()}")
    try:
        ov.save_model(model, str(tmp.with_suffix(".xml")), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp.with_suffix(".xml"), xml)
    finally:
        for suffix in (".xml", ".bin"):
            tmp.with_suffix(suffix).unlink(missing_ok=True)


def _with_uint8_input(ov: ModuleType, model: Any, scale: float, offset: float) -> Any:
    """``model`` taking uint8 NHWC images: ``x / scale + offset`` and the layout change run inside the graph."""
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(scale)
    if offset:
        steps.mean(-offset)  # (x / scale) - mean
    return ppp.build()


class OvGraph:
    """One network compiled for OpenVINO's CPU plugin: ``graph(x) -> list of outputs`` for a batch ``x``
    (uint8 NHWC, or float32 NCHW for a float-input spec). Compiled lazily per batch bucket; thread-safe
    (one infer request per bucket and thread)."""

    def __init__(self, spec: IrSpec, threads: int | None = None, directory: Path | None = None) -> None:
        ov = import_openvino()
        self.spec = spec
        self.threads = threads or default_threads()
        self.xml = ensure_ir(spec, directory)
        self._ov = ov
        self._core = ov.Core()
        self._core.set_property({"CACHE_DIR": str(self.xml.parent / "compiled")})
        self._compiled: dict[int, Any] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def _request(self, batch: int) -> Any:
        requests = self._local.__dict__.setdefault("requests", {})
        if batch not in requests:
            with self._lock:
                if batch not in self._compiled:
                    # No CPU pinning: the plugin pins a one-thread graph to the first core, so that every
                    # one-thread runner (the threads of 'attnmesh images', Ray's workers, any processes side
                    # by side) ran on core 0: two processes did 98 images/s together, 208 unpinned.
                    self._compiled[batch] = self._core.compile_model(str(self._static_ir(batch)), "CPU", {
                        "INFERENCE_NUM_THREADS": self.threads, "INFERENCE_PRECISION_HINT": "f32",
                        "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False})
            requests[batch] = self._compiled[batch].create_infer_request()
        return requests[batch]

    def _static_ir(self, batch: int) -> Path:
        """The IR of the graph at a fixed batch size (``<name>.b<batch>.xml`` beside the graph's IR), written
        once. Compiled by path, a cached graph loads in about 0.22 s instead of 0.44 s for the Attention Mesh:
        OpenVINO then finds the compiled blob from the file's hash without hashing a model object."""
        xml = self.xml.with_name(f"{self.xml.stem}.b{batch}.xml")
        if xml.is_file() and xml.with_suffix(".bin").is_file():
            return xml
        with _exclusive(self.xml.parent / f".{self.xml.stem}.lock"):
            if xml.is_file() and xml.with_suffix(".bin").is_file():
                return xml
            model = self._core.read_model(str(self.xml))
            side = self.spec.input_size
            model.reshape({0: [batch, side, side, 3] if self.spec.input_scale is not None else [batch, 3, side, side]})
            _save_ir(self._ov, model, xml)
        return xml

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        parts = []
        start = 0
        for bucket, n in batch_plan(len(x)):
            piece = x[start:start + n]
            start += n
            if bucket != n:
                piece = np.concatenate([piece, np.zeros((bucket - n, *piece.shape[1:]), piece.dtype)])
            request = self._request(bucket)
            # shared: no copy of the input into the request, nor of every output into a dict (copied below)
            request.infer({0: np.ascontiguousarray(piece)}, share_inputs=True, share_outputs=True)
            parts.append([request.get_output_tensor(i).data[:n].copy() for i in range(len(self.spec.outputs))])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(p) for p in zip(*parts)]


def batch_plan(n: int) -> list[tuple[int, int]]:
    """How a batch of ``n`` items runs: ``(bucket, items)`` per network call, in order. Full buckets from the
    largest down, then a remainder of up to :data:`MAX_SINGLES` items one by one, a larger one padded to the
    smallest bucket that holds it. Each item's answer is what it gets alone (padding rows are dropped)."""
    plan: list[tuple[int, int]] = []
    for bucket in reversed(BATCH_BUCKETS[1:]):
        while n >= bucket:
            plan.append((bucket, bucket))
            n -= bucket
    if 0 < n <= MAX_SINGLES:
        plan += [(1, 1)] * n
    elif n:
        plan.append((next(b for b in BATCH_BUCKETS if b >= n), n))
    return plan


def _uint8_crops(crops: np.ndarray | torch.Tensor) -> np.ndarray:
    """uint8 NHWC crops as they come; a float NCHW tensor in [0, 1] is rounded back to uint8 NHWC."""
    if not isinstance(crops, np.ndarray):  # a torch tensor
        import torch

        crops = crops.detach().float().cpu().mul(255.0).round().clamp(0, 255).to(torch.uint8)
        return crops.permute(0, 2, 3, 1).numpy()
    if crops.dtype != np.uint8:
        raise ValueError(f"the OpenVINO runners take uint8 NHWC crops, got {crops.dtype}")
    return crops


class OvLandmarkRunner(CropLandmarkRunner):
    """Registered mesh network ``model`` (the Attention Mesh, face_landmark or the fine-tuned Attention Mesh) on
    OpenVINO, float32."""

    def __init__(self, model: str = "attention_mesh", device: str | torch.device = "cpu", threads: int | None = None,
                 model_dir: Path | str | None = None) -> None:
        _check_cpu(device)
        spec = registered(model, MESH_ARCHITECTURES, "OvLandmarkRunner")
        self.spec = spec
        self.device = "cpu"
        self.num_landmarks = spec.num_landmarks
        self.graph = OvGraph(graph_spec(spec.name), threads, Path(model_dir) if model_dir is not None else None)
        self.input_size = self.graph.spec.input_size

    def forward(self, crops: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        points, logit = self.graph(_uint8_crops(crops))
        return points, sigmoid(logit)


class OvFaceDetector(DetectorRunner):
    """``FaceDetector`` on OpenVINO (same letterbox crop, decoding, weighted NMS)."""

    def __init__(self, min_detection_confidence: float = 0.5, device: str | torch.device = "cpu",
                 threads: int | None = None, model_dir: Path | str | None = None) -> None:
        _check_cpu(device)
        self.device = "cpu"
        self.min_detection_confidence = check_unit("min_detection_confidence", min_detection_confidence)
        self.graph = OvGraph(graph_spec("face_detection_short_range"), threads,
                             Path(model_dir) if model_dir is not None else None)

    def boxes_and_scores(self, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = self.graph(tensors)
        return boxes, scores


class OvTransformerRunner(CropLandmarkRunner):
    """The face transformer on OpenVINO (float32); ``mirror_average`` as
    :class:`~attnmesh.runtime.pytorch.TorchLandmarkRunner`'s."""

    def __init__(self, model: str = "face_transformer_xs", device: str | torch.device = "cpu",
                 threads: int | None = None, model_dir: Path | str | None = None, mirror_average: bool = False) -> None:
        _check_cpu(device)
        spec = registered(model, ("face_transformer",), "OvTransformerRunner")
        self.spec = spec
        self.device = "cpu"
        self.mirror_average = mirror_average
        self.num_landmarks = spec.num_landmarks
        self.graph = OvGraph(graph_spec(spec.name), threads, Path(model_dir) if model_dir is not None else None)
        self.input_size = self.graph.spec.input_size
        self._outputs = [self.graph.spec.outputs.index(o) for o in ("landmarks", "face_logit")]

    def forward(self, crops: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = _uint8_crops(crops)
        if self.mirror_average:
            x = np.concatenate([x, x[:, :, ::-1]])
        out = self.graph(x)
        landmarks, presence = out[self._outputs[0]], sigmoid(out[self._outputs[1]])
        return mirror_mean(landmarks, presence, self.input_size) if self.mirror_average else (landmarks, presence)


def _check_cpu(device: str | torch.device) -> None:
    if device_type(device) != "cpu":
        raise ValueError(f"the OpenVINO backend runs on the CPU; device={str(device)!r} needs backend='torch'")



@functools.cache
def _cascade_class() -> type:
    """:class:`OvCascadeRunner`, defined on first use: the cascade's pipeline runs on PyTorch tensors."""
    import torch

    from ..models.face_landmark import FaceLandmarkOutput
    from ..models.iris import IrisLandmarkOutput
    from .cascade import EYE_CROP_MODES, TorchCascadeRunner

    class _TorchAdapter:
        """Makes an :class:`OvGraph` (float input) look like a torch module returning a NamedTuple of tensors."""

        def __init__(self, graph: OvGraph, output: type) -> None:
            self.graph, self.output = graph, output

        def __call__(self, x: torch.Tensor) -> Any:
            return self.output(*(torch.from_numpy(o) for o in self.graph(x.detach().float().cpu().numpy())))

    class OvCascadeRunner(TorchCascadeRunner):
        """The face_landmark + iris cascade (``TorchCascadeRunner.predict_many``) with both networks on OpenVINO."""

        def __init__(self, device: str | torch.device = "cpu", eye_crop: str = "mediapipe",
                     threads: int | None = None, model_dir: Path | str | None = None) -> None:
            _check_cpu(device)
            if eye_crop not in EYE_CROP_MODES:
                raise ValueError(f"eye_crop must be one of {EYE_CROP_MODES}, got {eye_crop!r}")
            self.device = torch.device("cpu")
            self.eye_crop = eye_crop
            directory = Path(model_dir) if model_dir is not None else None
            self.face_net = _TorchAdapter(OvGraph(graph_spec("face_landmark.float"), threads, directory),
                                          FaceLandmarkOutput)
            self.iris_net = _TorchAdapter(OvGraph(graph_spec("iris_landmark.float"), threads, directory),
                                          IrisLandmarkOutput)

    OvCascadeRunner.__module__ = __name__
    return OvCascadeRunner


def __getattr__(name: str) -> Any:
    """``OvCascadeRunner`` is built on first access, so importing this module needs no PyTorch."""
    if name == "OvCascadeRunner":
        return _cascade_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
