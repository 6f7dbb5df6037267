"""A read-only view of a ``.tflite`` flatbuffer: tensors, constant buffers and operators.

Only what the importer needs: every constant tensor as a float32 NumPy array (float16 weights that the
file stores behind a ``DEQUANTIZE`` op are resolved and cast), the operator list in execution order with
its input/output tensor names and builtin options, and the flexbuffer ``custom_options`` of custom ops.
Needs the ``tflite`` package (``pip install attnmesh[convert]``); nothing at run time imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_TFLITE_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}


@dataclass
class Op:
    """One operator: ``kind`` is the builtin name (``CONV_2D``) or the custom code."""

    index: int
    kind: str
    inputs: list[str]
    outputs: list[str]
    options: dict[str, Any] = field(default_factory=dict)


class TFLiteGraph:
    """Tensors and operators of subgraph 0 of a TFLite model, addressed by tensor name."""

    def __init__(self, path: str | Path) -> None:
        try:
            import tflite
        except ImportError as e:  # pragma: no cover - exercised only without the extra
            raise ImportError("reading .tflite files needs `pip install attnmesh[convert]`") from e
        self.path = Path(path)
        buf = self.path.read_bytes()
        model = tflite.Model.GetRootAsModel(buf, 0)
        graph = model.Subgraphs(0)
        builtin_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}

        self.shapes: dict[str, tuple[int, ...]] = {}
        raw: dict[str, np.ndarray] = {}
        names: list[str] = []
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            name = t.Name().decode()
            names.append(name)
            self.shapes[name] = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            data = model.Buffers(t.Buffer()).DataAsNumpy()
            if isinstance(data, np.ndarray) and data.size:
                arr = np.frombuffer(data.tobytes(), dtype=_TFLITE_DTYPES[t.Type()])
                raw[name] = arr.reshape(self.shapes[name]) if self.shapes[name] else arr

        self.ops: list[Op] = []
        dequantized: dict[str, str] = {}
        for i in range(graph.OperatorsLength()):
            o = graph.Operators(i)
            code = model.OperatorCodes(o.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            kind = code.CustomCode().decode() if code.CustomCode() else builtin_names[builtin]
            ins = [names[j] for j in o.InputsAsNumpy() if j >= 0] if o.InputsLength() else []
            outs = [names[j] for j in o.OutputsAsNumpy()]
            options: dict[str, Any] = {}
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D"):
                options = self._builtin_options(o, kind, tflite)
            elif o.CustomOptionsLength():
                options = _parse_flexbuffer_map(o.CustomOptionsAsNumpy().tobytes())
            if kind == "DEQUANTIZE":
                dequantized[outs[0]] = ins[0]
                continue
            self.ops.append(Op(i, kind, ins, outs, options))

        # A float16 constant behind DEQUANTIZE is, for our purposes, the float32 constant it produces.
        self.constants: dict[str, np.ndarray] = {k: v.astype(np.float32) for k, v in raw.items()
                                                 if v.dtype in (np.float16, np.float32)}
        self.int_constants: dict[str, np.ndarray] = {k: v for k, v in raw.items() if v.dtype.kind in "iu"}
        for out, src in dequantized.items():
            if src in raw:
                self.constants[out] = raw[src].astype(np.float32)
        self.stored_dtype = {out: str(raw[src].dtype) for out, src in dequantized.items() if src in raw}
        self.inputs = [names[j] for j in graph.InputsAsNumpy()]
        self.outputs = [names[j] for j in graph.OutputsAsNumpy()]

    @staticmethod
    def _builtin_options(o: Any, kind: str, tflite: Any) -> dict[str, Any]:
        table = o.BuiltinOptions()
        cls = {"CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
               "MAX_POOL_2D": tflite.Pool2DOptions}[kind]
        opt = cls()
        opt.Init(table.Bytes, table.Pos)
        out = {"stride": (opt.StrideH(), opt.StrideW()), "padding": "SAME" if opt.Padding() == 0 else "VALID",
               "activation": opt.FusedActivationFunction()}
        if kind == "MAX_POOL_2D":
            out["filter"] = (opt.FilterHeight(), opt.FilterWidth())
        return out

    # -- navigation -------------------------------------------------------------------------------

    def producer(self, tensor: str) -> Op | None:
        """The op that writes ``tensor`` (None for graph inputs and constants)."""
        for op in self.ops:
            if tensor in op.outputs:
                return op
        return None

    def consumers(self, tensor: str, kind: str | None = None) -> list[Op]:
        """Ops (in execution order) that read ``tensor``, optionally only those of one kind."""
        return [op for op in self.ops if tensor in op.inputs and (kind is None or op.kind == kind)]

    def reaches(self, tensor: str, target: str) -> bool:
        """Whether ``target`` is computed (transitively) from ``tensor``."""
        frontier, seen = [tensor], {tensor}
        while frontier:
            t = frontier.pop()
            if t == target:
                return True
            for op in self.ops:
                if t in op.inputs:
                    for o in op.outputs:
                        if o not in seen:
                            seen.add(o)
                            frontier.append(o)
        return False

    def consumer(self, tensor: str, kind: str, towards: str | None = None) -> Op:
        """The single op of ``kind`` reading ``tensor``; ``towards`` (an output tensor name) disambiguates
        a branch point by keeping only the consumer from which that output is reachable."""
        ops = self.consumers(tensor, kind)
        if towards is not None and len(ops) > 1:
            ops = [op for op in ops if self.reaches(op.outputs[0], towards)]
        if len(ops) != 1:
            raise ValueError(f"{self.path.name}: expected one {kind} reading {tensor!r} "
                             f"(towards {towards!r}), found {[op.outputs[0] for op in ops]}")
        return ops[0]

    def const(self, name: str) -> np.ndarray:
        return self.constants[name]


def _parse_flexbuffer_map(data: bytes) -> dict[str, Any]:
    """Decode a flexbuffer map (the custom_options format) into plain Python values."""
    from flatbuffers import flexbuffers

    value = flexbuffers.Loads(data)
    return dict(value) if isinstance(value, dict) else {"value": value}
