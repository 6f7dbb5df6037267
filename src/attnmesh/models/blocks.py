"""Building blocks shared by the MediaPipe-family networks (BlazeFace, face mesh, attention mesh).

All modules are NCHW. Padding follows TensorFlow's ``SAME`` rule (extra pixel at the bottom/right),
which differs from PyTorch's symmetric ``padding=k//2`` for stride-2 layers; see :func:`pad_same`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Pad ``x`` (N, C, H, W) as TensorFlow's ``SAME`` padding does: ``total = max((ceil(n/s)-1)*s + k - n, 0)``
    split as ``total // 2`` before and the rest after, for each spatial axis."""
    h, w = x.shape[-2:]
    if torch.jit.is_tracing():  # ONNX export: spatial sizes are fixed per network, so export constant pads
        h, w = int(h), int(w)
    pad_h = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pad_w = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding (the constructor's ``padding`` is ignored)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(pad_same(x, self.kernel_size[0], self.stride[0]))


def make_act(kind: str, channels: int) -> nn.Module:
    """``"prelu"`` (per-channel PReLU, the face models) or ``"relu"`` (BlazeFace)."""
    if kind == "prelu":
        return nn.PReLU(channels)
    if kind == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {kind!r}")


class ConvAct(nn.Module):
    """Convolution (TF ``SAME``) followed by an activation: the stems and the 1x1 channel reducers."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, act: str = "prelu") -> None:
        super().__init__()
        self.conv = Conv2dSame(in_ch, out_ch, kernel, stride)
        self.act = make_act(act, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class BlazeBlock(nn.Module):
    """Residual block ``act(skip(x) + Conv1x1(DWConv3x3_stride(x)))``.

    The skip path is the identity, a 2x2 max-pool for stride 2, and zero channels appended at the end
    when ``out_ch > in_ch``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, act: str = "prelu") -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError("BlazeBlock cannot reduce channels on its skip path")
        self.stride = stride
        self.extra_channels = out_ch - in_ch
        self.dw = Conv2dSame(in_ch, in_ch, 3, stride, groups=in_ch)
        self.pw = nn.Conv2d(in_ch, out_ch, 1)
        self.act = make_act(act, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pw(self.dw(x))
        skip = F.max_pool2d(x, 2, 2) if self.stride == 2 else x
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(skip + h)


def blaze_stage(in_ch: int, out_ch: int, repeats: int, stride: int = 2, act: str = "prelu") -> nn.Sequential:
    """One strided (or channel-growing) block followed by ``repeats`` identity blocks."""
    blocks = [BlazeBlock(in_ch, out_ch, stride, act)]
    blocks += [BlazeBlock(out_ch, out_ch, 1, act) for _ in range(repeats)]
    return nn.Sequential(*blocks)
