"""A small fully connected network distilled from the blendshape solver: it predicts the 24 coefficients
from the same input as :class:`attnmesh.apps.blendshapes.BlendshapeSolver` (the pose-normalised points of
:func:`~attnmesh.apps.blendshapes.solver_ids` minus the user's neutral face, 158 x 3 = 474 values, centimetres) in a few tens of microseconds instead of
milliseconds.

Architecture: 474 -> 128 -> 128 -> 24, ReLU, outputs clamped to [0, 1]. Trained by
``python -m research.blendshape_net.train`` on synthetic faces (random identities by Laplacian morph,
random poses, random known coefficients, projected through the camera; the labels are the solver's
coefficients). Weights: ``blendshape_net.safetensors`` beside this module (float16) with
``blendshape_net.json``, a manifest of our own: the file's sha256, the architecture, the input layout (feature
point ids, input scale), the coefficient names, and how it was trained (seed, sample count, final losses),
checked when loading.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_NAME = "blendshape_net.safetensors"
MANIFEST_NAME = "blendshape_net.json"
INPUT_SCALE = 2.0  # the displacements (cm) are multiplied by this before the first layer
HIDDEN = 128


class BlendshapeNet(nn.Module):
    def __init__(self, num_inputs: int, num_outputs: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(num_inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, num_inputs) scaled displacements -> (N, 24) raw coefficients (clamp to [0, 1] to use)."""
        return self.layers(x)


def apps_dir() -> Path:
    return Path(str(resources.files("attnmesh.apps")))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def load_net() -> tuple[BlendshapeNet, dict]:
    """The shipped network (eval mode, float32) and its manifest; RuntimeError if missing or corrupt."""
    from safetensors.torch import load_file

    from .blendshapes import BLENDSHAPE_NAMES, solver_ids

    folder = apps_dir()
    manifest_path, weights_path = folder / MANIFEST_NAME, folder / WEIGHTS_NAME
    if not manifest_path.is_file() or not weights_path.is_file():
        raise RuntimeError(f"blendshape network weights not found in {folder} "
                           "(run `python -m research.blendshape_net.train`)")
    manifest = json.loads(manifest_path.read_text())
    if _sha256(weights_path) != manifest["sha256"]:
        raise RuntimeError(f"{weights_path}: sha256 does not match {MANIFEST_NAME}")
    if tuple(manifest["outputs"]) != BLENDSHAPE_NAMES or manifest["feature_ids"] != solver_ids().tolist():
        raise RuntimeError(f"{MANIFEST_NAME}: the network was trained for other blendshapes or features; retrain")
    net = BlendshapeNet(manifest["num_inputs"], len(manifest["outputs"]), manifest["hidden"])
    net.load_state_dict({k: v.float() for k, v in load_file(str(weights_path)).items()})
    return net.eval(), manifest


class BlendshapeNetPredictor:
    """Coefficients from pose-normalised landmarks with the shipped network; same interface as
    :class:`attnmesh.apps.blendshapes.BlendshapeSolver` (``neutral``: (478, 3), default the canonical face)."""

    def __init__(self, neutral: np.ndarray | None = None) -> None:
        from .blendshapes import BLENDSHAPE_NAMES, extended_canonical

        self.names = BLENDSHAPE_NAMES
        self.net, manifest = load_net()
        self.scale = float(manifest["input_scale"])
        self.neutral = extended_canonical().copy() if neutral is None else np.asarray(neutral, np.float64)
        self._ids = np.asarray(manifest["feature_ids"], np.int64)  # the points it was trained on
        # plain NumPy forward pass: no framework overhead for one face (~20 us)
        lin = [m for m in self.net.layers if isinstance(m, nn.Linear)]
        self._w = [m.weight.detach().numpy().T.astype(np.float32) for m in lin]
        self._b = [m.bias.detach().numpy().astype(np.float32) for m in lin]

    def features(self, metric: np.ndarray) -> np.ndarray:
        return ((np.asarray(metric)[self._ids] - self.neutral[self._ids]).ravel() * self.scale).astype(np.float32)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """(..., 3 x points) scaled features -> (..., 24) coefficients in [0, 1]."""
        h = x
        for i, (w, b) in enumerate(zip(self._w, self._b)):
            h = h @ w + b
            if i < len(self._w) - 1:
                np.maximum(h, 0.0, out=h)
        return np.clip(h, 0.0, 1.0)

    def solve(self, metric: np.ndarray) -> np.ndarray:
        """(24,) coefficients for pose-normalised landmarks ``metric`` (478, 3)."""
        return self.predict_features(self.features(metric)).astype(np.float64)

    def solve_landmarks(self, landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        from .blendshapes import metric_landmarks

        return self.solve(metric_landmarks(landmarks, image_size))
