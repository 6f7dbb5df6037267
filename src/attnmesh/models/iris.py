"""MediaPipe's iris landmark model (``iris_landmark.tflite``, Ablavatski et al. 2020): eye contours and
iris from a 64x64 eye crop. With :class:`~attnmesh.models.face_landmark.FaceLandmarkModel` it forms the
two-stage cascade that the Attention Mesh paper compares with (see :mod:`attnmesh.runtime.cascade`).

Diagram (NCHW; "64-space" = pixel coordinates of the 64x64 input crop)::

    eye crop (N, 3, 64, 64), RGB in [0, 1]
      └─ IrisBackbone ─► features8 (N, 128, 8, 8) ─┬─ IrisTrunk(71) ─► eye  (N, 71, 3), 64-space
                                                   └─ IrisTrunk(5)  ─► iris (N, 5, 3),  64-space

The crop is of a subject's right eye as it appears in an unmirrored photo (outer corner on the image
left); the cascade mirrors the other eye before running the model.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Conv2dSame, ConvAct, make_act
from .sizes import IRIS_INPUT_SIZE

INPUT_SIZE = IRIS_INPUT_SIZE
NUM_EYE_POINTS = 71  # eye contours and brow, in the order of topology.RIGHT_EYE / LEFT_EYE
NUM_IRIS_POINTS = 5  # iris centre, then 4 points on its contour


class BottleneckBlock(nn.Module):
    """Residual block ``PReLU(skip(x) + Conv1x1(DWConv3x3(PReLU(reduce(x)))))`` with a bottleneck of
    ``out_ch // 2`` channels.

    ``reduce`` is a 1x1 conv for stride 1 and a 2x2 stride-2 (VALID) conv for stride 2, where the depthwise
    conv stays at stride 1. The skip path is the identity, a 2x2 max-pool for stride 2, and zero channels
    appended at the end when ``out_ch > in_ch``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError("BottleneckBlock cannot reduce channels on its skip path")
        mid = out_ch // 2
        self.stride = stride
        self.extra_channels = out_ch - in_ch
        self.reduce = ConvAct(in_ch, mid, kernel=stride, stride=stride)
        self.dw = Conv2dSame(mid, mid, 3, groups=mid)
        self.pw = nn.Conv2d(mid, out_ch, 1)
        self.act = make_act("prelu", out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pw(self.dw(self.reduce(x)))
        skip = F.max_pool2d(x, 2, 2) if self.stride == 2 else x
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
        return self.act(skip + h)


def bottleneck_stage(in_ch: int, out_ch: int, repeats: int) -> nn.Sequential:
    """One stride-2 block followed by ``repeats`` identity blocks."""
    return nn.Sequential(BottleneckBlock(in_ch, out_ch, stride=2),
                         *(BottleneckBlock(out_ch, out_ch) for _ in range(repeats)))


class IrisBackbone(nn.Module):
    """64x64 eye crop -> ``features8`` (8x8x128), shared by the eye-contour and iris trunks."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvAct(3, 64, kernel=3, stride=2)  # -> 32x32
        self.stage32 = nn.Sequential(*(BottleneckBlock(64, 64) for _ in range(4)))
        self.stage16 = bottleneck_stage(64, 128, repeats=4)
        self.down8 = BottleneckBlock(128, 128, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down8(self.stage16(self.stage32(self.stem(x))))


class IrisTrunk(nn.Module):
    """8x8x128 features -> ``num_points`` (x, y, z) in 64-space (z: relative depth, same pixel scale)."""

    def __init__(self, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.stage8 = nn.Sequential(BottleneckBlock(128, 128), BottleneckBlock(128, 128))
        self.stage4 = bottleneck_stage(128, 128, repeats=2)
        self.stage2 = bottleneck_stage(128, 128, repeats=2)
        self.out = nn.Conv2d(128, 3 * num_points, kernel_size=2)  # 2x2 -> 1x1, VALID

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out(self.stage2(self.stage4(self.stage8(x))))
        return y.reshape(-1, self.num_points, 3)


class IrisLandmarkOutput(NamedTuple):
    """``eye``: (N, 71, 3) eye contours and brow; ``iris``: (N, 5, 3), centre first. Both in 64-space
    pixels of the input crop, z relative depth on the same scale."""

    eye: torch.Tensor
    iris: torch.Tensor


class IrisLandmarkModel(nn.Module):
    input_size = INPUT_SIZE

    def __init__(self) -> None:
        super().__init__()
        self.backbone = IrisBackbone()
        self.eye = IrisTrunk(NUM_EYE_POINTS)
        self.iris = IrisTrunk(NUM_IRIS_POINTS)

    def forward(self, image: torch.Tensor) -> IrisLandmarkOutput:
        """``image``: (N, 3, 64, 64) RGB in [0, 1], a subject's right eye (mirror a left eye first)."""
        features8 = self.backbone(image)
        return IrisLandmarkOutput(self.eye(features8), self.iris(features8))
