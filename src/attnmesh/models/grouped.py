"""The Attention Mesh's region networks as grouped networks: the same outputs from fewer, wider layers, for
inference (the exported graphs of OpenVINO and ONNX Runtime, and the PyTorch backend).

The refinement half of the Attention Mesh runs three :class:`~attnmesh.models.attention_mesh.RegionTrunk` s
(lips, right eye, left eye; 16x16x32 crops of the feature map -> 4x4x128) and five
:class:`~attnmesh.models.attention_mesh.RegionHead` s (lips contour; each eye's contour and iris), each of the
same shape: some 250 small layers in all, on 16x16 to 1x1 maps, about 4 us each in OpenVINO. Here the trunks'
weights, and the heads', are concatenated into one network of grouped layers each (group ``g`` holds network
``g``'s channels): depthwise convolutions, PReLU slopes and max-pools act per channel, so they concatenate as
they are; each 1x1 and the final 2x2 convolution becomes a convolution with one group per network; zero channels
appended on a skip path are appended to every group; the heads' output convolution is padded with zero filters
to the largest head (80 points, the lips) and the padding sliced off. Every network computes what it computed
before, in the same order: OpenVINO gives the same landmarks to the bit (the Parquet table of 300w-train is
unchanged). The Attention Mesh at batch 1, one thread, profiled on a 2-vCPU AMD EPYC: 592 -> 427 graph nodes;
the heads 326-354 -> 185-201 us, the trunks about 20% less (0.17-0.18 -> 0.14 of the backbone's time); the
three crop transforms, computed with a region axis (:func:`~attnmesh.models.spatial.region_transforms`, which
:meth:`AttentionMesh.region_transforms` uses too), 427 -> 324 nodes; in all about 15% less time.

PyTorch eager, batch 1, one thread, alternated: 23-28 -> 16-17 ms. Training keeps the plain
:class:`~attnmesh.models.attention_mesh.AttentionMesh` (the grouped layers hold copies of its weights).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention_mesh import AttentionMesh, AttentionMeshOutput, RegionHead, RegionTrunk, refine_landmarks
from .blocks import BlazeBlock, Conv2dSame
from .spatial import CROP_SIZE, region_to_input_space, sample_region


def _concat_prelu(acts: Sequence[nn.PReLU]) -> nn.PReLU:
    out = nn.PReLU(sum(a.weight.numel() for a in acts))
    out.weight.data = torch.cat([a.weight.data for a in acts])
    return out


def _grouped_conv(convs: Sequence[nn.Conv2d], depthwise: bool) -> nn.Conv2d:
    """One convolution doing ``convs`` (same shape, no groups of their own unless ``depthwise``) side by side on
    their inputs concatenated along channels."""
    first, n = convs[0], len(convs)
    cin, cout = first.in_channels * n, first.out_channels * n
    groups = cin if depthwise else n
    if isinstance(first, Conv2dSame):
        out: nn.Conv2d = Conv2dSame(cin, cout, first.kernel_size[0], first.stride[0], groups=groups)
    else:
        out = nn.Conv2d(cin, cout, first.kernel_size, first.stride, groups=groups)
    out.weight.data = torch.cat([c.weight.data for c in convs])
    assert all(c.bias is not None for c in convs) and out.bias is not None
    out.bias.data = torch.cat([c.bias.data for c in convs])  # type: ignore[union-attr]
    return out


class GroupedBlazeBlock(nn.Module):
    """:class:`BlazeBlock` s of the same shape side by side, on their inputs concatenated along channels: group
    ``g`` of the input and output channels is block ``g``'s. A block that appends zero channels on its skip path
    appends them to each group."""

    def __init__(self, blocks: Sequence[BlazeBlock]) -> None:
        super().__init__()
        first = blocks[0]
        self.groups = len(blocks)
        self.stride = first.stride
        self.extra_channels = first.extra_channels
        self.dw = _grouped_conv([b.dw for b in blocks], depthwise=True)
        self.pw = _grouped_conv([b.pw for b in blocks], depthwise=False)
        self.act = _concat_prelu([b.act for b in blocks])  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pw(self.dw(x))
        skip = F.max_pool2d(x, 2, 2) if self.stride == 2 else x
        if self.extra_channels:
            n, c, height, width = skip.shape
            skip = skip.reshape(n, self.groups, c // self.groups, height, width)
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels)).reshape(n, -1, height, width)
        return self.act(skip + h)


class GroupedRegionTrunks(nn.Module):
    """:class:`RegionTrunk` s side by side: (N, G*32, 16, 16) region crops concatenated along channels ->
    (N, G*128, 4, 4) region features, group ``g`` trunk ``g``'s."""

    def __init__(self, trunks: Sequence[RegionTrunk]) -> None:
        super().__init__()
        self.stages = nn.Sequential(*[GroupedBlazeBlock(blocks) for stage in ("stage16", "stage8", "stage4")
                                      for blocks in zip(*(getattr(t, stage) for t in trunks))])

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.stages(crops)


class GroupedRegionHeads(nn.Module):
    """:class:`RegionHead` s of the same architecture (their ``num_points`` may differ) as one grouped network:
    input their region features concatenated along channels, (N, G*128, 4, 4); output each head's points,
    (N, num_points_g, 2), as the heads give them."""

    def __init__(self, heads: Sequence[RegionHead]) -> None:
        super().__init__()
        self.num_points = [h.num_points for h in heads]
        self.width = 2 * max(self.num_points)  # output channels per group
        self.stage4 = nn.Sequential(*[GroupedBlazeBlock(blocks) for blocks in zip(*(h.stage4 for h in heads))])
        self.stage2 = nn.Sequential(*[GroupedBlazeBlock(blocks) for blocks in zip(*(h.stage2 for h in heads))])
        self.reduce = copy.deepcopy(heads[0].reduce)
        self.reduce.conv = _grouped_conv([h.reduce.conv for h in heads], depthwise=False)
        self.reduce.act = _concat_prelu([h.reduce.act for h in heads])  # type: ignore[arg-type]
        self.refine = GroupedBlazeBlock([h.refine for h in heads])
        first = heads[0].out
        self.out = nn.Conv2d(first.in_channels * len(heads), self.width * len(heads), first.kernel_size, first.stride,
                             groups=len(heads))
        weight = torch.zeros_like(self.out.weight.data)
        bias = torch.zeros_like(self.out.bias.data)
        for g, h in enumerate(heads):
            rows = slice(g * self.width, g * self.width + 2 * h.num_points)
            weight[rows] = h.out.weight.data
            bias[rows] = h.out.bias.data
        self.out.weight.data, self.out.bias.data = weight, bias

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        y = self.out(self.refine(self.reduce(self.stage2(self.stage4(features)))))
        y = y.reshape(y.shape[0], len(self.num_points), self.width)
        return [y[:, g, :2 * k].reshape(-1, k, 2) for g, k in enumerate(self.num_points)]


class GroupedAttentionMesh(nn.Module):
    """:class:`AttentionMesh` ``net`` with its region trunks and heads run as :class:`GroupedRegionTrunks` and
    :class:`GroupedRegionHeads`: the same :class:`AttentionMeshOutput` (transforms included), for inference (the
    grouped layers hold copies of ``net``'s weights: build it from a trained network)."""

    input_size = AttentionMesh.input_size

    def __init__(self, net: AttentionMesh) -> None:
        super().__init__()
        self.net = net
        self.trunks = GroupedRegionTrunks([net.lips.trunk, net.right_eye.trunk, net.left_eye.trunk])
        self.heads = GroupedRegionHeads([net.lips.contour, net.right_eye.contour, net.right_eye.iris,
                                         net.left_eye.contour, net.left_eye.iris])

    def forward(self, image: torch.Tensor) -> AttentionMeshOutput:
        net = self.net
        features48, features6 = net.backbone(image)
        mesh, face_logit = net.predict_mesh(features6)
        transforms = net.region_transforms(mesh)
        t_lips, t_right, t_left = transforms.unbind(1)
        crops = torch.cat([sample_region(features48, t, CROP_SIZE) for t in (t_lips, t_right, t_left)], 1)
        lips_f, right_f, left_f = self.trunks(crops).chunk(3, 1)
        lips, right_eye, right_iris, left_eye, left_iris = self.heads(
            torch.cat([lips_f, right_f, right_f, left_f, left_f], 1))
        lips = region_to_input_space(lips, t_lips)
        right_eye, right_iris = (region_to_input_space(p, t_right) for p in (right_eye, right_iris))
        left_eye, left_iris = (region_to_input_space(p, t_left) for p in (left_eye, left_iris))
        landmarks = refine_landmarks(mesh, lips, right_eye, left_eye, right_iris, left_iris)
        return AttentionMeshOutput(landmarks, mesh, face_logit, lips, right_eye, left_eye, right_iris, left_iris,
                                   transforms)

