"""Crops to network inputs, shared by the landmark runners."""

from __future__ import annotations

import numpy as np
import torch


def crops_to_tensor(crops: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC crops -> float32 NCHW in [0, 1] on ``device``; a tensor (already NCHW in [0, 1]) is only
    moved there."""
    if isinstance(crops, torch.Tensor):
        return crops.to(device)
    return torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
