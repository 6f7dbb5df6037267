"""Spatial-transformer region crops of the Attention Mesh (MediaPipe's three custom ops, in PyTorch).

Frames used here (all continuous pixel coordinates, x right, y down):

* **192-space**: the 192x192 model input; mesh and region landmarks are output in it.
* **48-space**: the 48x48 feature map ``features48`` (192-space x 0.25).
* **crop frame**: a ``CROP_SIZE`` x ``CROP_SIZE`` (16x16) region crop of the feature map, 0..16 from pixel edge
  to pixel edge. Region heads predict in this frame scaled by 4 (a 64x64 frame).

A crop transform ``T`` is an (N, 2, 3) affine matrix mapping crop-frame points to 48-space:
``T(u) = c + R(-theta) diag(sx, sy) (u - CROP_SIZE/2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

CROP_SIZE = 16  # region crop side, in feature-map pixels
CROP_SCALE = 1.5  # the crop covers 1.5x the region's rotated bounding box
FEATURE_STRIDE = 4  # 192-space pixels per 48-space pixel


def region_transform(points48: torch.Tensor, rotation_pair: tuple[int, int], subset: Sequence[int],
                     crop_size: int = CROP_SIZE, scale: float = CROP_SCALE) -> torch.Tensor:
    """MediaPipe's ``Landmarks2TransformMatrix`` (v2).

    Args:
        points48: (N, K, 2+) landmarks in 48-space; only x, y are used.
        rotation_pair: indices (L, R); the crop is rotated so that L -> R is horizontal.
        subset: indices whose rotated bounding box defines the crop centre and size.
    Returns:
        (N, 2, 3) affine ``T`` mapping crop-frame points to 48-space.
    """
    return region_transforms(points48, [rotation_pair], [subset], crop_size, scale)[:, 0]


def region_transforms(points48: torch.Tensor, rotation_pairs: Sequence[tuple[int, int]],
                      subsets: Sequence[Sequence[int]], crop_size: int = CROP_SIZE, scale: float = CROP_SCALE
                      ) -> torch.Tensor:
    """:func:`region_transform` of R regions at once (one computation with a region axis, as one graph
    does it): ``rotation_pairs`` and ``subsets`` per region -> (N, R, 2, 3). Each subset is padded to the longest
    by repeating its first index, which changes no minimum or maximum."""
    longest = max(len(ix) for ix in subsets)
    index = torch.tensor([list(ix) + [ix[0]] * (longest - len(ix)) for ix in subsets])  # (R, K)
    pairs = torch.tensor([list(pair) for pair in rotation_pairs])  # (R, 2)
    p = points48[..., :2]
    left, right = p[:, pairs[:, 0]], p[:, pairs[:, 1]]  # (N, R, 2)
    theta = -torch.atan2(right[..., 1] - left[..., 1], right[..., 0] - left[..., 0])  # (N, R)
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # R(theta), (N, R, 2, 2)
    q = torch.einsum("nrij,nrkj->nrki", rot, p[:, index])  # each subset rotated upright
    q_min, q_max = q.min(dim=2).values, q.max(dim=2).values
    size = q_max - q_min
    center = torch.einsum("nrji,nrj->nri", rot, (q_max + q_min) / 2)  # R(-theta) = R(theta)^T
    sx = scale * size[..., 0] / crop_size
    sy = scale * size[..., 1] / crop_size
    # A = R(-theta) diag(sx, sy); t = c - A (crop/2, crop/2)
    a = torch.stack([torch.stack([c * sx, s * sy], -1), torch.stack([-s * sx, c * sy], -1)], -2)
    t = center - a.sum(-1) * (crop_size / 2)
    return torch.cat([a, t.unsqueeze(-1)], -1)


def sample_region(features: torch.Tensor, transform: torch.Tensor, crop_size: int = CROP_SIZE) -> torch.Tensor:
    """MediaPipe's ``TransformTensorBilinear`` (v2): bilinear crop of ``features`` (N, C, H, W).

    Output pixel (i, j) samples feature position ``T(i + 0.5, j + 0.5) - 0.5`` (pixel centres at integers).
    A sample outside ``[0, W-1] x [0, H-1]`` is all zeros (no partial blend at the border), as in the
    reference kernel. Differentiable with respect to both ``features`` and ``transform``.
    """
    n, _, h, w = features.shape
    ij = torch.arange(crop_size, dtype=features.dtype, device=features.device) + 0.5
    gy, gx = torch.meshgrid(ij, ij, indexing="ij")
    grid = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3)  # (1, S*S, 3)
    pos = torch.einsum("nij,nkj->nki", transform, grid.expand(n, -1, -1)) - 0.5  # (N, S*S, 2) pixel idx
    inside = ((pos[..., 0] >= 0) & (pos[..., 0] <= w - 1) & (pos[..., 1] >= 0) & (pos[..., 1] <= h - 1))
    norm = torch.stack([2 * pos[..., 0] / (w - 1) - 1, 2 * pos[..., 1] / (h - 1) - 1], -1)
    out = F.grid_sample(features, norm.reshape(n, crop_size, crop_size, 2), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out * inside.reshape(n, 1, crop_size, crop_size).to(out.dtype)


def region_to_input_space(points: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """MediaPipe's ``TransformLandmarks`` (v2): region-head output (N, K, 2), in the crop frame scaled by
    ``FEATURE_STRIDE`` (64x64), to 192-space: ``out = 4 * T(points / 4)``."""
    a, t = transform[..., :2], transform[..., 2]
    return torch.einsum("nij,nkj->nki", a, points) + FEATURE_STRIDE * t.unsqueeze(1)
