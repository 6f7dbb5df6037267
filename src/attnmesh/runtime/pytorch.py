"""The PyTorch backend: the reference runners, and the only ones for other devices (CUDA, MPS).

* :class:`TorchLandmarkRunner`: any registered crop network but the cascade (Attention Mesh, face_landmark,
  the fine-tuned Attention Mesh, the face transformer), or a module given directly.
* The detector and the cascade on PyTorch are :class:`attnmesh.runtime.detector.FaceDetector` and
  :class:`attnmesh.runtime.cascade.TorchCascadeRunner`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..registry import create_model, get_model_spec
from .base import CropLandmarkRunner, empty_result, mirror_mean
from .tensors import crops_to_tensor

if TYPE_CHECKING:
    from torch import nn


class TorchLandmarkRunner(CropLandmarkRunner):
    """Registered model ``model`` (see :func:`attnmesh.list_models`) with its shipped weights on PyTorch, or the
    module ``net`` of that architecture (e.g. a training checkpoint's).

    ``mirror_average`` (face transformer only): also run each crop mirrored and average the two answers
    (:func:`~attnmesh.runtime.base.mirror_mean`): twice the compute, 4-7% less error against the teacher on
    held-out faces (docs/model_card_face_transformer.md).
    """

    def __init__(self, model: str = "attention_mesh", device: str | torch.device = "cpu",
                 net: nn.Module | None = None, mirror_average: bool = False) -> None:
        spec = get_model_spec(model)
        if spec.architecture == "cascade":
            raise ValueError("the cascade runs two networks on two crops: use attnmesh.runtime.cascade."
                             "TorchCascadeRunner")
        if mirror_average and spec.architecture != "face_transformer":
            raise ValueError("mirror_average is offered for the face transformer only")
        self.spec = spec
        self.architecture = spec.architecture
        self.mirror_average = mirror_average
        self.device = torch.device(device)
        if net is None:
            net = create_model(spec.name)
            if spec.architecture == "attention_mesh":  # the same outputs, about a third less time (models.grouped)
                from ..models.grouped import GroupedAttentionMesh

                net = GroupedAttentionMesh(net)
        self.net = net.eval().to(self.device)
        self.input_size = int(getattr(self.net, "input_size", spec.input_size))
        self.num_landmarks = spec.num_landmarks

    @torch.inference_mode()
    def run(self, crops: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, K, 3) in crop pixels and presence scores (N,) for uint8 NHWC crops (or a float NCHW
        tensor in [0, 1])."""
        if len(crops) == 0:
            return empty_result(self.num_landmarks)
        x = crops_to_tensor(crops, self.device)
        if self.mirror_average:
            x = torch.cat([x, x.flip(-1)])
        out = self.net(x)
        points = out.mesh if self.architecture == "face_landmark" else out.landmarks
        points = points.float().cpu().numpy()
        presence = torch.sigmoid(out.face_logit).float().cpu().numpy()
        return mirror_mean(points, presence, self.input_size) if self.mirror_average else (points, presence)

    @torch.inference_mode()
    def analyze(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Face transformer only: all heads for uint8 NHWC crops: landmarks, embedding, expression, spoof
        probability (untrained head), face presence."""
        if self.architecture != "face_transformer":
            raise ValueError("analyze() needs the face transformer")
        out = self.net(crops_to_tensor(crops, self.device))
        return {"landmarks": out.landmarks.cpu().numpy(), "embedding": out.embedding.cpu().numpy(),
                "expression": out.expression.cpu().numpy(),
                "spoof_untrained": torch.sigmoid(out.spoof_logit).cpu().numpy(),
                "presence": torch.sigmoid(out.face_logit).cpu().numpy()}
