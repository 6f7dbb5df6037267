"""ONNX export and INT8 quantization of the face transformer.

    python -m attnmesh.export.transformer [--size xs] [--out DIR] [--int8]

The graph takes ``image`` (N, 3, 128, 128) float32 RGB in [0, 1] and returns ``landmarks`` (N, 478, 3, input
pixels), ``embedding`` (N, 128), ``expression`` (N, 3), ``spoof_logit`` (N,) and ``face_logit`` (N,). It is
exported with the same exporter settings as :mod:`attnmesh.export.onnx` (TorchScript exporter, opset 17,
dynamic batch) and post-processed by its :func:`~attnmesh.export.onnx.simplify`.

INT8 (:func:`quantize_dynamic_int8`): ONNX Runtime *dynamic* quantization of the MatMul/Gemm weights (the
transformer layers and the heads; weights int8 per channel, activations quantized on the fly), convolutions
kept in float32. :func:`quantize_static_int8` is the static QDQ alternative (convolutions and MatMuls,
calibrated on training crops); ``benchmarks/face_transformer.py`` measures both.

Files go to ``$ATTNMESH_CACHE/onnx/<key>`` (default cache of :mod:`attnmesh.export.onnx`) under a name that
carries the weights' sha256 prefix, so a stale file is never used.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .onnx import OPSET, default_cache_dir, simplify
from ..io.atomic import atomic_path
from ..models.face_transformer import FaceTransformer

OUTPUTS = ("landmarks", "embedding", "expression", "spoof_logit", "face_logit")


class _Graph(nn.Module):
    def __init__(self, model: FaceTransformer) -> None:
        super().__init__()
        self.net = model.eval()

    def forward(self, image: torch.Tensor):
        out = self.net(image)
        return out.landmarks, out.embedding, out.expression, out.spoof_logit, out.face_logit


def transformer_graph(model: FaceTransformer) -> nn.Module:
    """The exported wrapper of ``model``: image (N, 3, S, S) in [0, 1] -> the :data:`OUTPUTS`, eval mode."""
    return _Graph(model).eval()


def export_face_transformer(model: FaceTransformer, path: Path | str, opset: int = OPSET,
                            simplify_graph: bool = True) -> Path:
    """Export ``model`` (eval mode) to ``path`` with a dynamic batch axis; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(2, 3, model.input_size, model.input_size)
    axes = {"image": {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}}
    was_training = model.training
    graph = transformer_graph(model)  # export restores the wrapper's mode afterwards: it must be eval
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["image"], output_names=list(OUTPUTS), dynamic_axes=axes,
                                  do_constant_folding=True)
        finally:
            model.train(was_training)
        if simplify_graph:
            simplify(tmp)
    return path


def quantize_dynamic_int8(fp32_path: Path | str, out_path: Path | str) -> Path:
    """Dynamic INT8 (MatMul/Gemm weights int8, per channel)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        quantize_dynamic(str(fp32_path), str(tmp), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                         weight_type=QuantType.QInt8)
    return out_path


def quantize_static_int8(fp32_path: Path | str, out_path: Path | str, calibration: np.ndarray,
                         batch: int = 16) -> Path:
    """Static QDQ INT8 (Conv, MatMul, Gemm, Add; weights int8 per channel, activations uint8, MinMax) calibrated
    on float (N, 3, S, S) inputs. The landmark output layer (``landmark_out``) stays float32."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"image": calibration[i:i + batch].astype(np.float32)}
                            for i in range(0, len(calibration), batch)])

        def get_next(self):
            return next(self.it, None)

    out_path = Path(out_path)
    pre = out_path.with_suffix(".pre.tmp")
    try:
        with atomic_path(out_path) as tmp:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            model = onnx.load(str(pre))
            exclude = [n.name for n in model.graph.node if "landmark_out" in n.name or "face_out" in n.name]
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv", "MatMul", "Gemm", "Add"], nodes_to_exclude=exclude)
    finally:
        pre.unlink(missing_ok=True)
        for extra in out_path.parent.glob("augmented_model*.onnx"):
            extra.unlink(missing_ok=True)
    return out_path


def _file_name(size: str, precision: str) -> str:
    from ..weights import read_manifest

    sha = read_manifest()["models"][f"face_transformer_{size}"]["sha256"][:12]
    suffix = {"fp32": "", "int8": ".int8", "int8-static": ".int8-static"}[precision]
    return f"face_transformer_{size}-{sha}{suffix}.onnx"


def ensure_transformer_onnx(size: str = "xs", precision: str = "fp32", model_dir: Path | str | None = None) -> Path:
    """Path of the shipped transformer's ONNX graph (``fp32`` or dynamic ``int8``), built on first use."""
    from ..registry import create_model

    if precision not in ("fp32", "int8"):
        raise ValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
    model_dir = Path(model_dir) if model_dir is not None else default_cache_dir()
    fp32 = model_dir / _file_name(size, "fp32")
    if not fp32.is_file():
        export_face_transformer(create_model(f"face_transformer_{size}"), fp32)
    if precision == "fp32":
        return fp32
    int8 = model_dir / _file_name(size, "int8")
    if not int8.is_file():
        quantize_dynamic_int8(fp32, int8)
    return int8


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="export the shipped face transformer to ONNX (and INT8)")
    p.add_argument("--size", default="xs")
    p.add_argument("--out", default=None)
    p.add_argument("--int8", action="store_true")
    args = p.parse_args(argv)
    print(ensure_transformer_onnx(args.size, "fp32", args.out))
    if args.int8:
        print(ensure_transformer_onnx(args.size, "int8", args.out))


if __name__ == "__main__":
    main()
