"""The face_landmark + iris cascade as one differentiable module on a 192x192 face crop.

Diagram (NCHW; "192-space" = pixel coordinates of the face crop, "64-space" those of an eye crop)::

    image (N, 3, 192, 192), RGB in [0, 1]
      └─ FaceLandmarkModel ─► mesh (N, 468, 3), face logit (N,)
    mesh[33], mesh[133]  ─► eye_transform ─► sample_eye ────────────► (N, 3, 64, 64)  subject's right eye
    mesh[362], mesh[263] ─► eye_transform ─► sample_eye, mirrored ──► (N, 3, 64, 64)  subject's left eye
      └─ IrisLandmarkModel (2N crops) ─► eye (71, 3), iris (5, 3) ─ un-mirror ─ eye_to_input_space ─► 192-space
    merge_eyes ─► landmarks (N, 478, 3), 192-space

Here the eyes are cut from the 192x192 face crop with a bilinear sampler, so this module sees the eyes at
the face crop's resolution; :class:`attnmesh.runtime.cascade.TorchCascadeRunner` (what the pipeline
runs) cuts them from the full image as MediaPipe does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import topology
from .face_landmark import FaceLandmarkModel
from .iris import INPUT_SIZE as EYE_SIZE
from .iris import NUM_EYE_POINTS, IrisLandmarkModel

EYE_ROI_SCALE = 2.3  # eye ROI side = 2.3 x the longer side of the two eye corners' box
# Mesh points that span each eye, left to right across an unmirrored image (the rotation runs 0 -> 1).
RIGHT_EYE_CORNERS = (33, 133)  # subject's right eye: outer, inner corner; cropped as is
LEFT_EYE_CORNERS = (362, 263)  # subject's left eye: inner, outer corner; cropped and mirrored


def eye_transform(points: torch.Tensor, corners: tuple[int, int], scale: float = EYE_ROI_SCALE) -> torch.Tensor:
    """MediaPipe's ``IrisLandmarkLandmarksToRoi`` as an (N, 2, 3) affine from eye-crop units to the points'
    frame: ``(u, v)`` in [0, 1]^2 (crop edge to edge) maps to ``c + R(r) * side * (u - 1/2, v - 1/2)``.

    ``points``: (N, K, 2+) landmarks (pixels, x right, y down). The ROI is the box of the two ``corners``,
    rotated so that ``corners[0] -> corners[1]`` is horizontal, square on its longer side, x``scale``.
    """
    p = points[:, list(corners), :2]
    lo, hi = p.min(1).values, p.max(1).values
    side = scale * (hi - lo).max(-1).values
    d = p[:, 1] - p[:, 0]
    r = torch.atan2(d[:, 1], d[:, 0])  # = -atan2(-dy, dx): the rotation of geometry.roi.rotation_from_points
    c, s = torch.cos(r) * side, torch.sin(r) * side
    a = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    t = (lo + hi) / 2 - a.sum(-1) / 2
    return torch.cat([a, t.unsqueeze(-1)], -1)


def sample_eye(image: torch.Tensor, transform: torch.Tensor, size: int = EYE_SIZE,
               mirror: bool = False) -> torch.Tensor:
    """Bilinear ``size x size`` crop of ``image`` (N, C, H, W) with a replicated border: output pixel ``i``
    samples the image at ``transform(i / size)`` (pixel centres at integers, as OpenCV's warp and
    :func:`attnmesh.geometry.roi.crop_image`); ``mirror`` flips the crop left-right."""
    n, _, h, w = image.shape
    ij = torch.arange(size, dtype=image.dtype, device=image.device) / size
    gy, gx = torch.meshgrid(ij, ij, indexing="ij")
    if mirror:
        gx = gx.flip(-1)
    grid = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3)
    pos = torch.einsum("nij,nkj->nki", transform.to(image.dtype), grid.expand(n, -1, -1))
    norm = torch.stack([(2 * pos[..., 0] + 1) / w - 1, (2 * pos[..., 1] + 1) / h - 1], -1)
    return F.grid_sample(image, norm.reshape(n, size, size, 2), mode="bilinear", padding_mode="border",
                         align_corners=False)


def eye_to_input_space(points: torch.Tensor, transform: torch.Tensor, size: int = EYE_SIZE,
                       mirror: bool = False) -> torch.Tensor:
    """Iris-model points (N, K, 3) in ``size``-space -> the frame of ``transform``; z is scaled like x.
    ``mirror``: the crop was mirrored, so x is first mapped back to ``size - x``."""
    x = size - points[..., 0] if mirror else points[..., 0]
    uv = torch.stack([x, points[..., 1]], -1) / size
    xy = torch.einsum("nij,nkj->nki", transform[..., :2], uv) + transform[..., 2].unsqueeze(1)
    side = transform[..., :2].norm(dim=-2)[:, :1]  # column norm = side, (N, 1)
    return torch.cat([xy, (points[..., 2] * side / size).unsqueeze(-1)], -1)


def merge_eyes(mesh: torch.Tensor, right_eye: torch.Tensor, left_eye: torch.Tensor, right_iris: torch.Tensor,
               left_iris: torch.Tensor) -> torch.Tensor:
    """MediaPipe's ``UpdateFaceLandmarksCalculator`` plus the appended irises: (N, 468, 3) mesh, (N, 71, 3)
    eye contours and (N, 5, 3) irises (subject's sides, all in one frame) -> (N, 478, 3). The eye contours
    overwrite x, y **and z** of their mesh points (the Attention Mesh keeps the mesh z instead)."""
    out = mesh
    for indices, points in ((topology.RIGHT_EYE, right_eye), (topology.LEFT_EYE, left_eye)):
        out = out.index_copy(1, torch.tensor(indices, device=mesh.device), points.to(mesh.dtype))
    return torch.cat([out, right_iris.to(mesh.dtype), left_iris.to(mesh.dtype)], 1)


class CascadeMeshOutput(NamedTuple):
    """``landmarks``: (N, 478, 3) in 192-space pixels (z relative depth, same scale); ``mesh``: (N, 468, 3)
    before the eyes are merged; ``face_logit``: (N,); ``eye_transforms``: (N, 2, 2, 3) eye-crop affines
    (right eye, left eye; see :func:`eye_transform`) into 192-space."""

    landmarks: torch.Tensor
    mesh: torch.Tensor
    face_logit: torch.Tensor
    eye_transforms: torch.Tensor


class CascadeMesh(nn.Module):
    """face_landmark, then the iris model on eyes cut from the same 192x192 crop: 478 landmarks.

    Shipped weights: ``load_model_weights(m.face, "face_landmark")`` and
    ``load_model_weights(m.iris, "iris_landmark")`` (:mod:`attnmesh.weights`).
    """

    input_size = FaceLandmarkModel.input_size

    def __init__(self) -> None:
        super().__init__()
        self.face = FaceLandmarkModel()
        self.iris = IrisLandmarkModel()

    def forward(self, image: torch.Tensor) -> CascadeMeshOutput:
        """``image``: (N, 3, 192, 192) RGB in [0, 1]."""
        mesh, face_logit = self.face(image)
        t_right = eye_transform(mesh, RIGHT_EYE_CORNERS)
        t_left = eye_transform(mesh, LEFT_EYE_CORNERS)
        crops = torch.cat([sample_eye(image, t_right), sample_eye(image, t_left, mirror=True)])
        eyes = self.iris(crops)
        points = torch.cat([eyes.eye, eyes.iris], 1)
        n = image.shape[0]
        right = eye_to_input_space(points[:n], t_right)
        left = eye_to_input_space(points[n:], t_left, mirror=True)
        landmarks = merge_eyes(mesh, right[:, :NUM_EYE_POINTS], left[:, :NUM_EYE_POINTS],
                               right[:, NUM_EYE_POINTS:], left[:, NUM_EYE_POINTS:])
        return CascadeMeshOutput(landmarks, mesh, face_logit, torch.stack([t_right, t_left], 1))
