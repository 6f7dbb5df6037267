"""ONNX export of the four networks, with a dynamic batch axis.

    python -m attnmesh.export [--out DIR] [--int8]

Each graph takes float32 NCHW, exactly what the PyTorch module takes, and returns the module's raw outputs
(the runners in :mod:`attnmesh.runtime.onnxruntime` do the crops, sigmoid, NMS and projection in NumPy):

======================== ============================== ================================================
file                     input                          outputs
======================== ============================== ================================================
face_detection_short_…   image (N, 3, 128, 128) [-1, 1] boxes (N, 896, 16) decoded, normalized; scores (N, 896)
attention_mesh.onnx      image (N, 3, 192, 192) [0, 1]  landmarks (N, 478, 3) 192-space; face_logit (N,)
face_landmark.onnx       image (N, 3, 192, 192) [0, 1]  mesh (N, 468, 3) 192-space; face_logit (N,)
iris_landmark.onnx       image (N, 3, 64, 64)  [0, 1]   eye (N, 71, 3), iris (N, 5, 3) 64-space
======================== ============================== ================================================

The Attention Mesh graph contains its region crops (``GridSample``, hence opset >= 16) and all the
region geometry, so one ``session.run`` gives the 478 refined landmarks.

Where the files go: they are *built* from the shipped ``.safetensors`` (nothing is downloaded), into
``$ATTNMESH_CACHE/onnx/<key>`` or ``~/.cache/attnmesh/onnx/<key>``, where ``<key>`` changes with the
package version, the weights and the opset, so a stale cache is never used. They are not shipped in the
package: ~13 MB of float32 graphs would triple the wheel, for files that take ~15 s to build on first use.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs no extra package (the dynamo
exporter needs ``onnxscript``) and handles ``grid_sample``, ``einsum``, ``atan2`` and ``index_copy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..version import __version__
from ..io.atomic import atomic_path, write_text_atomic
from ..models.sizes import DETECTOR_INPUT_SIZE, IRIS_INPUT_SIZE, MESH_INPUT_SIZE
from ..weights import load_model_weights, read_manifest

OPSET = 17  # GridSample needs >= 16; 17 is supported by every ONNX Runtime >= 1.13 and TensorRT >= 8.6
#: Bumped whenever the exported graphs change for the same weights (part of the cache key).
#: 2: PRelu decomposed (:func:`decompose_prelu`). 3: the Attention Mesh's region heads grouped, 4: and its
#: region trunks, 5: its three crop transforms computed at once (:mod:`attnmesh.models.grouped`).
GRAPH_REVISION = 5
MANIFEST = "manifest.json"


class _DetectorGraph(nn.Module):
    """BlazeFace + box decoding + clipped sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        from ..models.detector import BlazeFace

        self.net = load_model_weights(BlazeFace(), "face_detection_short_range").eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ..models.detector import decode_boxes, scores_from_logits

        out = self.net(image)
        return decode_boxes(out.offsets, self.net.anchors), scores_from_logits(out.logits)


class _AttentionMeshGraph(nn.Module):
    def __init__(self, weights: str = "attention_mesh") -> None:
        super().__init__()
        from ..models.attention_mesh import AttentionMesh

        from ..models.grouped import GroupedAttentionMesh

        self.net = GroupedAttentionMesh(load_model_weights(AttentionMesh(), weights).eval()).eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(image)
        return out.landmarks, out.face_logit


class _FaceLandmarkGraph(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from ..models.face_landmark import FaceLandmarkModel

        self.net = load_model_weights(FaceLandmarkModel(), "face_landmark").eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(image)
        return out.mesh, out.face_logit


class _IrisGraph(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from ..models.iris import IrisLandmarkModel

        self.net = load_model_weights(IrisLandmarkModel(), "iris_landmark").eval()

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(image)
        return out.eye, out.iris


@dataclass(frozen=True)
class GraphSpec:
    """One exportable network: its wrapper module, input side and output names."""

    build: Callable[[], nn.Module]
    input_size: int
    outputs: tuple[str, str]
    weights: str  # name in attnmesh/weights/manifest.json


GRAPHS: dict[str, GraphSpec] = {
    "face_detection_short_range": GraphSpec(_DetectorGraph, DETECTOR_INPUT_SIZE, ("boxes", "scores"),
                                            "face_detection_short_range"),
    "attention_mesh": GraphSpec(_AttentionMeshGraph, MESH_INPUT_SIZE, ("landmarks", "face_logit"), "attention_mesh"),
    "attention_mesh_300w": GraphSpec(lambda: _AttentionMeshGraph("attention_mesh_300w"), MESH_INPUT_SIZE,
                                     ("landmarks", "face_logit"), "attention_mesh_300w"),
    "face_landmark": GraphSpec(_FaceLandmarkGraph, MESH_INPUT_SIZE, ("mesh", "face_logit"), "face_landmark"),
    "iris_landmark": GraphSpec(_IrisGraph, IRIS_INPUT_SIZE, ("eye", "iris"), "iris_landmark"),
}
INPUT_NAME = "image"


def attention_mesh_graph(weights: str = "attention_mesh") -> nn.Module:
    """The exported wrapper of an Attention Mesh with shipped weights ``weights`` (e.g. the fine-tuned
    ``"attention_mesh_300w"``): image -> (landmarks, face_logit), eval mode."""
    return _AttentionMeshGraph(weights).eval()


def build_module(name: str) -> nn.Module:
    """The PyTorch wrapper that is exported for graph ``name`` (weights loaded, eval mode)."""
    return GRAPHS[name].build().eval()


def cache_key(opset: int = OPSET) -> str:
    """Changes with the package version, the shipped weights, the opset and :data:`GRAPH_REVISION`."""
    manifest = read_manifest()
    h = hashlib.sha256()
    for name in sorted(GRAPHS):
        h.update(manifest["models"][GRAPHS[name].weights]["sha256"].encode())
    return f"{__version__}-{h.hexdigest()[:12]}-opset{opset}-r{GRAPH_REVISION}"


def default_cache_dir(opset: int = OPSET) -> Path:
    """``$ATTNMESH_CACHE/onnx/<key>`` if set, else ``~/.cache/attnmesh/onnx/<key>`` (XDG_CACHE_HOME honoured)."""
    root = os.environ.get("ATTNMESH_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnmesh"
    return base / "onnx" / cache_key(opset)


def export_graph(name: str, path: Path, opset: int = OPSET) -> Path:
    """Export graph ``name`` to ``path`` (written atomically) with a dynamic batch axis."""
    spec = GRAPHS[name]
    module = build_module(name)
    dummy = torch.rand(2, 3, spec.input_size, spec.input_size)
    if name == "face_detection_short_range":
        dummy = dummy * 2 - 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {INPUT_NAME: {0: "batch"}, **{o: {0: "batch"} for o in spec.outputs}}
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(spec.outputs), dynamic_axes=axes,
                              do_constant_folding=True)
        simplify(tmp)
    return path


def simplify(path: Path) -> int:
    """Rewrite the exported graph in place: ONNX Runtime's *basic* (provider-independent) optimisations
    (constant folding of the exporter's shape arithmetic, redundant-node removal), then every zero ``Pad``
    of TensorFlow-``SAME`` padding is folded into the ``pads`` of the ``Conv`` that reads it (ONNX Runtime's
    own PadFusion leaves them in place), and every ``PRelu`` is decomposed (:func:`decompose_prelu`).
    Returns the number of Pads folded. Profiling the Attention Mesh at batch 1 on 2 threads: 65 of its 74 Pads
    go, and with them about 10% of the run time."""
    import onnx
    import onnxruntime as ort

    basic = path.with_suffix(".basic.tmp")
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(basic)
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        model = onnx.load(str(basic))
    finally:
        basic.unlink(missing_ok=True)
    folded = fold_pads_into_convs(model.graph)
    decompose_prelu(model.graph)
    onnx.save(model, str(path))
    return folded


def decompose_prelu(graph) -> int:
    """Replace every ``PRelu(x, slope)`` by ``Relu(x) + slope * Min(x, 0)``, the same numbers bit for bit
    (one of the two terms is exactly 0). Returns the number replaced.

    Why: ONNX Runtime's CPU provider has no fused or blocked-layout (NCHWc) PRelu kernel, and the released
    models' slopes (per channel, -4.2 to 6.2) rule out its ``max(x, a x)`` LeakyRelu rewrite; every PRelu
    cost a layout reorder on each side. These four elementwise ops stay in the blocked layout: the Attention
    Mesh at batch 1, 1 thread, ran 13.4 -> 6.0 ms on the development machine (73 PRelus)."""
    from onnx import helper, numpy_helper

    zero = "attnmesh_prelu_zero"
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        x, slope = node.input
        y = node.output[0]
        base = node.name or y
        nodes += [helper.make_node("Relu", [x], [f"{base}/pos"], name=f"{base}/relu"),
                  helper.make_node("Min", [x, zero], [f"{base}/neg"], name=f"{base}/min"),
                  helper.make_node("Mul", [f"{base}/neg", slope], [f"{base}/scaled"], name=f"{base}/mul"),
                  helper.make_node("Add", [f"{base}/pos", f"{base}/scaled"], [y], name=f"{base}/add")]
        count += 1
    if count:
        graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def fold_pads_into_convs(graph) -> int:
    """Fold constant zero spatial ``Pad`` nodes (NCHW) whose only readers are ``Conv`` nodes into the Convs'
    ``pads`` attribute. Returns the number of Pads removed."""
    from collections import defaultdict

    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    graph_outputs = {o.name for o in graph.output}
    removed = []
    for node in list(graph.node):
        if node.op_type != "Pad" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if any(a.name == "mode" and a.s != b"constant" for a in node.attribute):
            continue
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in inits or numpy_helper.to_array(inits[node.input[2]]).any():
                continue
        if len(node.input) > 3 and node.input[3]:  # axes input (opset 18+)
            continue
        pads = numpy_helper.to_array(inits[node.input[1]]).astype(int)
        if len(pads) != 8 or pads[[0, 1, 4, 5]].any() or (pads < 0).any():
            continue
        convs = readers[node.output[0]]
        if not convs or node.output[0] in graph_outputs or any(c.op_type != "Conv" for c in convs):
            continue
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for c in convs for a in c.attribute):
            continue
        for conv in convs:
            old = [0, 0, 0, 0]
            for a in list(conv.attribute):
                if a.name == "pads":
                    old = list(a.ints)
                    conv.attribute.remove(a)
            new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
            conv.attribute.append(helper.make_attribute("pads", [int(v) for v in new]))
            for k, name in enumerate(conv.input):
                if name == node.output[0]:
                    conv.input[k] = node.input[0]
        removed.append(node)
    for node in removed:
        graph.node.remove(node)
    return len(removed)


def export_all(out_dir: Path | None = None, names: Iterable[str] | None = None, opset: int = OPSET,
               force: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Export ``names`` (default: all of :data:`GRAPHS`) into ``out_dir`` (default :func:`default_cache_dir`); files
    already there are kept unless ``force``. Writes ``manifest.json`` (sha256 of each file, key, torch).
    Returns name -> path."""
    out_dir = Path(out_dir) if out_dir is not None else default_cache_dir(opset)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or GRAPHS:
        path = out_dir / f"{name}.onnx"
        if force or not path.is_file():
            t = time.perf_counter()
            export_graph(name, path, opset)
            if log:
                log(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.1f} s)")
        paths[name] = path
    _write_manifest(out_dir, opset)
    return paths


def _write_manifest(out_dir: Path, opset: int) -> None:
    from ..weights import sha256_file

    files = {p.name: sha256_file(p) for p in sorted(out_dir.glob("*.onnx"))}
    data = {"key": cache_key(opset), "opset": opset, "torch": torch.__version__, "files": files}
    write_text_atomic(out_dir / MANIFEST, json.dumps(data, indent=2) + "\n")


def ensure_onnx(name: str, model_dir: Path | str | None = None) -> Path:
    """Path of ``<name>.onnx`` in ``model_dir`` (default: the cache), exporting it first if missing.
    ``name`` may also be a quantized variant such as ``attention_mesh.int8`` (built by
    :func:`attnmesh.eval.quantize.quantize_attention_mesh`, never implicitly: it needs calibration data)."""
    model_dir = Path(model_dir) if model_dir is not None else default_cache_dir()
    path = model_dir / f"{name}.onnx"
    if path.is_file():
        return path
    if name not in GRAPHS:
        raise FileNotFoundError(f"{path} not found; build it with `python -m attnmesh.eval.quantize "
                                f"--out {model_dir}`")
    export_all(model_dir, [name])
    return path
