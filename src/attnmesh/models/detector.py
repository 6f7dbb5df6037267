"""BlazeFace short-range face detector (Bazarevsky et al., 2019), as released in MediaPipe
(``face_detection_short_range.tflite``).

Diagram, top to bottom (NCHW)::

    image (N, 3, 128, 128), RGB in [-1, 1], the letterboxed whole image
      └─ stem 5x5 s2 + ReLU ─► 64x64x24
           └─ stage64 (24 → 28) ─► stage32 (28 → 42) ─► stage16 (42 → 88) ───► features16 (N, 88, 16, 16)
                                                            └─ stage8 (88 → 96) ─► features8 (N, 96, 8, 8)
      features16 ─ 1x1 convs ─► 2 anchors per cell: logits (N, 512), offsets (N, 512, 16)
      features8  ─ 1x1 convs ─► 6 anchors per cell: logits (N, 384), offsets (N, 384, 16)
      concatenated ─► BlazeFaceOutput: logits (N, 896), offsets (N, 896, 16)

Offsets per anchor: box centre x, y, width, height, then 6 keypoints (x, y), all in units of 1/128 of the
input (128-space pixels), relative to the anchor centre; :func:`decode_boxes` turns them into boxes.
The anchors (:func:`ssd_anchors`) are ordered grid by grid, then row, column and anchor, as the outputs.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .blocks import BlazeBlock, ConvAct
from .sizes import DETECTOR_INPUT_SIZE, DETECTOR_NUM_KEYPOINTS

INPUT_SIZE = DETECTOR_INPUT_SIZE
NUM_KEYPOINTS = DETECTOR_NUM_KEYPOINTS  # right eye, left eye, nose tip, mouth centre, right ear, left ear
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS
SCORE_CLIP = 100.0  # logits are clipped to ±this before the sigmoid


class SsdAnchorOptions(NamedTuple):
    """MediaPipe's ``SsdAnchorsCalculatorOptions`` as the short-range face detector sets them."""

    input_size: int = INPUT_SIZE
    strides: tuple[int, ...] = (8, 16, 16, 16)
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True


def ssd_anchors(options: SsdAnchorOptions = SsdAnchorOptions()) -> np.ndarray:
    """Anchors (A, 4) ``[x_center, y_center, w, h]`` normalized to the input, as MediaPipe's
    ``SsdAnchorsCalculator`` generates them: consecutive layers with the same stride share one grid, each
    layer contributing one anchor per aspect ratio plus one at the interpolated scale."""
    o = options
    n = len(o.strides)

    def scale_at(i: int) -> float:
        return (o.min_scale + o.max_scale) / 2 if n == 1 else o.min_scale + (o.max_scale - o.min_scale) * i / (n - 1)

    anchors: list[list[float]] = []
    layer = 0
    while layer < n:
        sizes: list[tuple[float, float]] = []  # (w, h) of each anchor of a cell
        last = layer
        while last < n and o.strides[last] == o.strides[layer]:
            scale = scale_at(last)
            for ratio in o.aspect_ratios:
                sizes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if o.interpolated_scale_aspect_ratio > 0:
                interpolated = math.sqrt(scale * (1.0 if last == n - 1 else scale_at(last + 1)))
                r = math.sqrt(o.interpolated_scale_aspect_ratio)
                sizes.append((interpolated * r, interpolated / r))
            last += 1
        cells = math.ceil(o.input_size / o.strides[layer])
        for y in range(cells):
            for x in range(cells):
                for w, h in sizes:
                    if o.fixed_anchor_size:
                        w, h = 1.0, 1.0
                    anchors.append([(x + o.anchor_offset) / cells, (y + o.anchor_offset) / cells, w, h])
        layer = last
    return np.array(anchors, np.float32)


class BlazeFaceOutput(NamedTuple):
    """``logits``: (N, A) raw face scores; ``offsets``: (N, A, 16) raw regressor outputs, 128-space pixels."""

    logits: torch.Tensor
    offsets: torch.Tensor


class BlazeFace(nn.Module):
    """The short-range BlazeFace network (ReLU BlazeBlocks, two anchor grids)."""

    input_size = INPUT_SIZE

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvAct(3, 24, kernel=5, stride=2, act="relu")  # -> 64x64
        self.stage64 = nn.Sequential(BlazeBlock(24, 24, act="relu"), BlazeBlock(24, 28, act="relu"))
        self.stage32 = nn.Sequential(*[BlazeBlock(i, o, s, act="relu") for i, o, s in
                                       ((28, 32, 2), (32, 36, 1), (36, 42, 1))])
        self.stage16 = nn.Sequential(*[BlazeBlock(i, o, s, act="relu") for i, o, s in
                                       ((42, 48, 2), (48, 56, 1), (56, 64, 1), (64, 72, 1), (72, 80, 1),
                                        (80, 88, 1))])
        self.stage8 = nn.Sequential(BlazeBlock(88, 96, 2, act="relu"),
                                    *[BlazeBlock(96, 96, act="relu") for _ in range(4)])
        self.logits16 = nn.Conv2d(88, 2, 1)  # 2 anchors per cell of the 16x16 grid
        self.offsets16 = nn.Conv2d(88, 2 * NUM_COORDS, 1)
        self.logits8 = nn.Conv2d(96, 6, 1)  # 6 anchors per cell of the 8x8 grid
        self.offsets8 = nn.Conv2d(96, 6 * NUM_COORDS, 1)
        self.register_buffer("anchors", torch.from_numpy(ssd_anchors()), persistent=False)

    def forward(self, image: torch.Tensor) -> BlazeFaceOutput:
        """``image``: (N, 3, 128, 128) RGB in [-1, 1]."""
        features16 = self.stage16(self.stage32(self.stage64(self.stem(image))))
        features8 = self.stage8(features16)
        logits = torch.cat([_per_anchor(self.logits16(features16), 1), _per_anchor(self.logits8(features8), 1)], 1)
        offsets = torch.cat([_per_anchor(self.offsets16(features16), NUM_COORDS),
                             _per_anchor(self.offsets8(features8), NUM_COORDS)], 1)
        return BlazeFaceOutput(logits.squeeze(-1), offsets)


def _per_anchor(x: torch.Tensor, values: int) -> torch.Tensor:
    """(N, A*values, H, W) -> (N, H*W*A, values), in the row, column, anchor order of the anchors."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, values)


def decode_boxes(offsets: torch.Tensor, anchors: torch.Tensor, input_size: int = INPUT_SIZE) -> torch.Tensor:
    """MediaPipe's ``TensorsToDetectionsCalculator`` box decoding (XYWH order, no exp, fixed-size anchors).

    Args:
        offsets: (N, A, 16) raw regressor outputs.
        anchors: (A, 4) ``[x_center, y_center, w, h]``, normalized.
    Returns:
        (N, A, 16): ``x0, y0, x1, y1`` then 6 keypoints ``x, y``, normalized to the input tensor ([0, 1]).
    """
    a_xy, a_wh = anchors[:, :2], anchors[:, 2:]
    center = offsets[..., 0:2] / input_size * a_wh + a_xy
    size = offsets[..., 2:4] / input_size * a_wh
    keypoints = offsets[..., 4:].reshape(*offsets.shape[:-1], NUM_KEYPOINTS, 2) / input_size * a_wh[:, None] \
        + a_xy[:, None]
    return torch.cat([center - size / 2, center + size / 2, keypoints.flatten(-2)], -1)


def scores_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Face probability: ``sigmoid(clip(logit, ±100))`` (MediaPipe's ``score_clipping_thresh``)."""
    return torch.sigmoid(logits.clamp(-SCORE_CLIP, SCORE_CLIP))
