"""Map TFLite operators onto our PyTorch modules by following the graph from a named tensor.

Our modules list their layers in execution order, so a module is loaded by walking the TFLite graph
from its input tensor: a :class:`BlazeBlock` is the DEPTHWISE_CONV_2D reading the tensor, the CONV_2D
reading that, the ADD, and the activation (the iris model's :class:`BottleneckBlock` has a reducing conv
and its activation in front, and its skip path is checked as well). Where the graph branches,
``towards`` (the name of a model output) selects the branch that leads to it. Every loaded parameter is
recorded with the TFLite tensor it came from, for the weights manifest.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.blocks import BlazeBlock, ConvAct
from ..models.iris import BottleneckBlock
from .tflite_graph import Op, TFLiteGraph


class GraphWalker:
    """Copies weights from a :class:`TFLiteGraph` into modules, recording ``{param name: tflite tensor}``."""

    def __init__(self, graph: TFLiteGraph, model: nn.Module) -> None:
        self.graph = graph
        self.names = {id(m): n for n, m in model.named_modules()}
        self.sources: dict[str, str] = {}

    # -- leaves ------------------------------------------------------------------------------------

    def _set(self, module: nn.Module, param: str, value: np.ndarray, source: str) -> None:
        target = getattr(module, param)
        if tuple(target.shape) != value.shape:
            raise ValueError(f"{self.names[id(module)]}.{param}: shape {tuple(target.shape)} != {value.shape} "
                             f"from {source}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))
        self.sources[f"{self.names[id(module)]}.{param}"] = source

    def load_conv(self, conv: nn.Conv2d, op: Op) -> None:
        """CONV_2D weights are [Cout, KH, KW, Cin]; DEPTHWISE_CONV_2D weights are [1, KH, KW, C]."""
        w_name, b_name = op.inputs[1], op.inputs[2]
        w = self.graph.const(w_name)
        w = w.transpose(3, 0, 1, 2) if op.kind == "DEPTHWISE_CONV_2D" else w.transpose(0, 3, 1, 2)
        stride = op.options["stride"][0]
        if conv.stride[0] != stride or op.options["activation"] != 0:
            raise ValueError(f"{op.outputs[0]}: stride/activation mismatch with {self.names[id(conv)]}")
        self._set(conv, "weight", w, w_name)
        self._set(conv, "bias", self.graph.const(b_name), b_name)

    def load_act(self, act: nn.Module, op: Op) -> None:
        if isinstance(act, nn.PReLU):
            if op.kind != "PRELU":
                raise ValueError(f"{op.outputs[0]}: expected PRELU, found {op.kind}")
            self._set(act, "weight", self.graph.const(op.inputs[1]).reshape(-1), op.inputs[1])
        elif op.kind != "RELU":
            raise ValueError(f"{op.outputs[0]}: expected RELU, found {op.kind}")

    def _act_op(self, tensor: str) -> Op:
        ops = [op for op in self.graph.consumers(tensor) if op.kind in ("PRELU", "RELU")]
        if len(ops) != 1:
            raise ValueError(f"expected one activation reading {tensor!r}")
        return ops[0]

    # -- composites --------------------------------------------------------------------------------

    def walk(self, module: nn.Module, tensor: str, towards: str) -> str:
        """Load ``module`` starting at TFLite tensor ``tensor``; return the tensor its output matches."""
        g = self.graph
        if isinstance(module, BlazeBlock):
            dw = g.consumer(tensor, "DEPTHWISE_CONV_2D", towards)
            self.load_conv(module.dw, dw)
            pw = g.consumer(dw.outputs[0], "CONV_2D")
            self.load_conv(module.pw, pw)
            add = g.consumer(pw.outputs[0], "ADD")
            act = self._act_op(add.outputs[0])
            self.load_act(module.act, act)
            return act.outputs[0]
        if isinstance(module, BottleneckBlock):
            reduced = self.walk(module.reduce, tensor, towards)
            dw = g.consumer(reduced, "DEPTHWISE_CONV_2D")
            self.load_conv(module.dw, dw)
            pw = g.consumer(dw.outputs[0], "CONV_2D")
            self.load_conv(module.pw, pw)
            add = g.consumer(pw.outputs[0], "ADD")
            self._check_skip(add, pw.outputs[0], tensor, module.stride, module.extra_channels)
            act = self._act_op(add.outputs[0])
            self.load_act(module.act, act)
            return act.outputs[0]
        if isinstance(module, ConvAct):
            conv = g.consumer(tensor, "CONV_2D", towards)
            self.load_conv(module.conv, conv)
            act = self._act_op(conv.outputs[0])
            self.load_act(module.act, act)
            return act.outputs[0]
        if isinstance(module, nn.Conv2d):
            conv = g.consumer(tensor, "CONV_2D", towards)
            self.load_conv(module, conv)
            return conv.outputs[0]
        children = list(module.children())
        if not children:
            raise TypeError(f"cannot walk {type(module).__name__}")
        for child in children:
            tensor = self.walk(child, tensor, towards)
        return tensor

    def _check_skip(self, add: Op, branch: str, block_input: str, stride: int, extra_channels: int) -> None:
        """The ADD's other operand must be ``block_input`` through the skip path the module computes:
        MAX_POOL_2D for stride 2, then PAD for extra channels."""
        skip = next(t for t in add.inputs if t != branch)
        expected = (["PAD"] if extra_channels else []) + (["MAX_POOL_2D"] if stride == 2 else [])
        for kind in expected:
            op = self.graph.producer(skip)
            if op is None or op.kind != kind:
                raise ValueError(f"{add.outputs[0]}: skip path lacks {kind}")
            skip = op.inputs[0]
        if skip != block_input:
            raise ValueError(f"{add.outputs[0]}: skip path does not start at the block input {block_input!r}")

    def check_complete(self, model: nn.Module) -> None:
        """Every parameter of ``model`` must have been loaded exactly from the file."""
        missing = [n for n, _ in model.named_parameters() if n not in self.sources]
        if missing:
            raise ValueError(f"{self.graph.path.name}: parameters not loaded: {missing[:5]}...")
