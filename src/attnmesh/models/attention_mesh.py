"""Attention Mesh (Grishchenko et al., 2020), as released in MediaPipe (``face_landmark_with_attention``).

Diagram, top to bottom (NCHW; "192-space" = pixel coordinates of the 192x192 input crop)::

    image (N, 3, 192, 192), RGB in [0, 1]
      └─ MeshBackbone ──────────────► features48 (N, 32, 48, 48) ──┐   attention source
           └─► features6 (N, 128, 6, 6)                            │
                 └─ MeshHead ─► (N, 32, 3, 3) ─┬─ mesh_out ─► mesh (N, 468, 3), 192-space
                                               └─ face_flag_out ─► face logit (N,)
      mesh ─► region_transform (lips / right eye / left eye) ─► T (N, 2, 3) ─┤
                                       sample_region(features48, T) ─► (N, 32, 16, 16) crops
      crop ─► lips:      RegionTrunk ─► RegionHead(80)             ─► lips (N, 80, 2)
      crop ─► each eye:  RegionTrunk ─┬► RegionHead(71) (contours) ─► eye  (N, 71, 2)
                                      └► RegionHead(5)  (iris)     ─► iris (N, 5, 2)
      region points ─► region_to_input_space(T) ─► 192-space
      refine_landmarks ─► landmarks (N, 478, 3), 192-space

The released model takes 192x192 crops and extracts a 48x48 map (the paper describes 256 and 64).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .. import topology
from .blocks import BlazeBlock, ConvAct, blaze_stage
from .sizes import MESH_INPUT_SIZE
from .spatial import CROP_SIZE, FEATURE_STRIDE, region_to_input_space, region_transforms, sample_region

INPUT_SIZE = MESH_INPUT_SIZE


class MeshBackbone(nn.Module):
    """192x192 image -> ``features48`` (48x48x32, the attention source) and ``features6`` (6x6x128)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvAct(3, 16, kernel=3, stride=2)  # -> 96x96
        self.stage96 = nn.Sequential(BlazeBlock(16, 16), BlazeBlock(16, 16))
        self.down48 = BlazeBlock(16, 32, stride=2)  # -> 48x48x32: features48
        self.stage48 = nn.Sequential(BlazeBlock(32, 32), BlazeBlock(32, 32))
        self.stage24 = blaze_stage(32, 64, repeats=2)
        self.stage12 = blaze_stage(64, 128, repeats=2)
        self.stage6 = blaze_stage(128, 128, repeats=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features48 = self.down48(self.stage96(self.stem(x)))
        features6 = self.stage6(self.stage12(self.stage24(self.stage48(features48))))
        return features48, features6


class MeshHead(nn.Module):
    """6x6x128 -> 3x3x32 features for the 1x1-output heads (a stride-3 3x3 conv reads all 9 cells)."""

    def __init__(self, repeats: int = 2) -> None:
        super().__init__()
        self.stage3 = blaze_stage(128, 128, repeats=repeats)
        self.reduce = ConvAct(128, 32)
        self.refine = BlazeBlock(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refine(self.reduce(self.stage3(x)))


class RegionTrunk(nn.Module):
    """16x16x32 region crop -> 4x4x128 region features."""

    def __init__(self) -> None:
        super().__init__()
        self.stage16 = nn.Sequential(BlazeBlock(32, 32), BlazeBlock(32, 32))
        self.stage8 = blaze_stage(32, 64, repeats=2)
        self.stage4 = blaze_stage(64, 128, repeats=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage4(self.stage8(self.stage16(x)))


class RegionHead(nn.Module):
    """4x4x128 region features -> ``num_points`` (x, y) in the region's 64x64 crop frame."""

    def __init__(self, num_points: int) -> None:
        super().__init__()
        self.num_points = num_points
        self.stage4 = nn.Sequential(BlazeBlock(128, 128), BlazeBlock(128, 128))
        self.stage2 = blaze_stage(128, 128, repeats=2)
        self.reduce = ConvAct(128, 32)
        self.refine = BlazeBlock(32, 32)
        self.out = nn.Conv2d(32, 2 * num_points, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out(self.refine(self.reduce(self.stage2(self.stage4(x)))))
        return y.reshape(-1, self.num_points, 2)


class LipsModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = RegionTrunk()
        self.contour = RegionHead(len(topology.LIPS))

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        return self.contour(self.trunk(crop))


class EyeModel(nn.Module):
    """One eye: eye contours and brow (71 points) and, from the same trunk, the iris (5 points)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = RegionTrunk()
        self.contour = RegionHead(len(topology.RIGHT_EYE))
        self.iris = RegionHead(len(topology.RIGHT_IRIS))

    def forward(self, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.trunk(crop)
        return self.contour(f), self.iris(f)


class AttentionMeshOutput(NamedTuple):
    """Outputs of :class:`AttentionMesh`; every point is in 192-space pixels of the input crop.

    ``landmarks``: (N, 478, 3) refined; ``mesh``: (N, 468, 3) before refinement; ``face_logit``: (N,),
    sigmoid gives the face-presence score; regions: lips (N, 80, 2), right/left eye (N, 71, 2),
    right/left iris (N, 5, 2) (subject's sides); ``transforms``: (N, 3, 2, 3) crop transforms of
    lips, right eye, left eye (crop frame -> 48-space).
    """

    landmarks: torch.Tensor
    mesh: torch.Tensor
    face_logit: torch.Tensor
    lips: torch.Tensor
    right_eye: torch.Tensor
    left_eye: torch.Tensor
    right_iris: torch.Tensor
    left_iris: torch.Tensor
    transforms: torch.Tensor


class AttentionMesh(nn.Module):
    """One network: mesh (468 points), face presence, and region refinements (478 points)."""

    input_size = INPUT_SIZE

    def __init__(self) -> None:
        super().__init__()
        self.backbone = MeshBackbone()
        self.head = MeshHead()
        self.mesh_out = nn.Conv2d(32, 3 * topology.NUM_MESH_LANDMARKS, kernel_size=3, stride=3)
        self.face_flag_out = nn.Conv2d(32, 1, kernel_size=3, stride=3)
        self.lips = LipsModel()
        self.right_eye = EyeModel()
        self.left_eye = EyeModel()

    def forward(self, image: torch.Tensor) -> AttentionMeshOutput:
        """``image``: (N, 3, 192, 192) RGB in [0, 1]."""
        features48, features6 = self.backbone(image)
        mesh, face_logit = self.predict_mesh(features6)
        return self.refine_regions(features48, mesh, face_logit, self.region_transforms(mesh))

    def predict_mesh(self, features6: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features6`` -> mesh (N, 468, 3) in 192-space and the face logit (N,)."""
        h = self.head(features6)
        mesh = self.mesh_out(h).reshape(-1, topology.NUM_MESH_LANDMARKS, 3)
        return mesh, self.face_flag_out(h).reshape(-1)

    @staticmethod
    def region_transforms(mesh: torch.Tensor) -> torch.Tensor:
        """Crop transforms (N, 3, 2, 3) of lips, right eye, left eye (crop frame -> 48-space) from mesh
        points (N, 468+, 2+) in 192-space (the predicted mesh, or in training any target mesh)."""
        regions = (("lips", topology.LIPS), ("right_eye", topology.RIGHT_EYE), ("left_eye", topology.LEFT_EYE))
        return region_transforms(mesh / FEATURE_STRIDE, [topology.CROP_ROTATION_PAIRS[name] for name, _ in regions],
                                 [indices for _, indices in regions])

    def refine_regions(self, features48: torch.Tensor, mesh: torch.Tensor, face_logit: torch.Tensor,
                       transforms: torch.Tensor) -> AttentionMeshOutput:
        """The attention half: crop ``features48`` with ``transforms`` (N, 3, 2, 3), run the region models,
        map their points to 192-space and refine ``mesh`` into 478 landmarks."""
        t_lips, t_right, t_left = transforms.unbind(1)
        lips = region_to_input_space(self.lips(sample_region(features48, t_lips, CROP_SIZE)), t_lips)
        right_eye, right_iris = self.right_eye(sample_region(features48, t_right, CROP_SIZE))
        left_eye, left_iris = self.left_eye(sample_region(features48, t_left, CROP_SIZE))
        right_eye, right_iris = (region_to_input_space(p, t_right) for p in (right_eye, right_iris))
        left_eye, left_iris = (region_to_input_space(p, t_left) for p in (left_eye, left_iris))

        landmarks = refine_landmarks(mesh, lips, right_eye, left_eye, right_iris, left_iris)
        return AttentionMeshOutput(landmarks, mesh, face_logit, lips, right_eye, left_eye,
                                   right_iris, left_iris, transforms)


def refine_landmarks(mesh: torch.Tensor, lips: torch.Tensor, right_eye: torch.Tensor, left_eye: torch.Tensor,
                     right_iris: torch.Tensor, left_iris: torch.Tensor) -> torch.Tensor:
    """MediaPipe's ``LandmarksRefinementCalculator``: 468 mesh points + region points -> (N, 478, 3).

    Lips and eyes overwrite x, y of their mesh points and keep the mesh z; each iris gets the mean mesh z
    of its eye's 16 inner-contour points.
    """
    n = mesh.shape[0]
    xy = mesh[..., :2]
    z = mesh[..., 2]
    for indices, points in ((topology.LIPS, lips), (topology.RIGHT_EYE, right_eye), (topology.LEFT_EYE, left_eye)):
        xy = xy.index_copy(1, torch.tensor(indices, device=mesh.device), points)
    iris_z = [z[:, list(idx)].mean(1, keepdim=True).expand(n, len(topology.RIGHT_IRIS))
              for idx in (topology.RIGHT_IRIS_Z_AVERAGE, topology.LEFT_IRIS_Z_AVERAGE)]
    mesh_points = torch.cat([xy, z.unsqueeze(-1)], -1)
    iris_points = torch.cat([torch.cat([right_iris, iris_z[0].unsqueeze(-1)], -1),
                             torch.cat([left_iris, iris_z[1].unsqueeze(-1)], -1)], 1)
    return torch.cat([mesh_points, iris_points], 1)
