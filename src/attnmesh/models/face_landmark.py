"""MediaPipe's earlier face mesh model (``face_landmark.tflite``, Kartynnik et al. 2019): 468 points, no
attention. It is the base of the cascade that the Attention Mesh paper compares with.

Diagram::

    image (N, 3, 192, 192), RGB in [0, 1]
      └─ MeshBackbone ─► features6 (N, 128, 6, 6) ─┬─ MeshHead ─► mesh_out ─► mesh (N, 468, 3), 192-space
                                                   └─ face-flag head (one stride-2 block) ─► face logit (N,)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .. import topology
from .attention_mesh import INPUT_SIZE, MeshBackbone, MeshHead


class FaceLandmarkOutput(NamedTuple):
    """``mesh``: (N, 468, 3) in 192-space pixels (z: relative depth, same scale); ``face_logit``: (N,)."""

    mesh: torch.Tensor
    face_logit: torch.Tensor


class FaceLandmarkModel(nn.Module):
    input_size = INPUT_SIZE

    def __init__(self) -> None:
        super().__init__()
        self.backbone = MeshBackbone()
        self.head = MeshHead(repeats=2)
        self.mesh_out = nn.Conv2d(32, 3 * topology.NUM_MESH_LANDMARKS, kernel_size=3, stride=3)
        self.face_flag_head = MeshHead(repeats=0)
        self.face_flag_out = nn.Conv2d(32, 1, kernel_size=3, stride=3)

    def forward(self, image: torch.Tensor) -> FaceLandmarkOutput:
        """``image``: (N, 3, 192, 192) RGB in [0, 1]."""
        _, features6 = self.backbone(image)
        mesh = self.mesh_out(self.head(features6)).reshape(-1, topology.NUM_MESH_LANDMARKS, 3)
        face_logit = self.face_flag_out(self.face_flag_head(features6)).reshape(-1)
        return FaceLandmarkOutput(mesh, face_logit)
