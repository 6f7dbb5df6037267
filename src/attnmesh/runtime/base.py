"""What every landmark runner offers ``FaceMesh``, whatever the backend.

* :class:`LandmarkRunner`: the protocol (``input_size``, ``num_landmarks``, ``predict_many``). ``FaceMesh``
  takes any object that has it (``FaceMesh(model=runner)``), as segment-anything's predictor takes a built model.
* :class:`CropLandmarkRunner`: the usual implementation: crops are cut here (bilinear, replicated border, as
  MediaPipe), a backend supplies :meth:`CropLandmarkRunner.run` on a batch of crops, and the points go back
  to image pixels here. No PyTorch is needed here.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..geometry.roi import Roi, crop_image, project_to_image
from ..options import check_backend
from ..registry import ModelSpec, get_model_spec
from ..topology import mirror_478

if TYPE_CHECKING:
    import torch


@runtime_checkable
class LandmarkRunner(Protocol):
    """A landmark network ready to run on face ROIs.

    Attributes:
        input_size: the network's input side, pixels.
        num_landmarks: landmarks per face (478 refined, or 468).
    """

    input_size: int
    num_landmarks: int

    def predict_many(self, items: Sequence[tuple[np.ndarray, Roi]]) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, K, 3) in image pixels (x right, y down, z on x's scale, smaller is closer) and presence
        scores (N,) in [0, 1] for ``(image, roi)`` pairs (RGB uint8 HxWx3 images, any number of them)."""
        ...


def empty_result(num_landmarks: int) -> tuple[np.ndarray, np.ndarray]:
    """The (0, K, 3) landmarks and (0,) scores of a batch without crops."""
    return np.zeros((0, num_landmarks, 3), np.float32), np.zeros((0,), np.float32)


def mirror_mean(landmarks: np.ndarray, presence: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Test-time mirror averaging: ``landmarks`` (2N, 478, 3) and ``presence`` (2N,) of N crops followed by the
    same N crops mirrored left-right; returns the mean of each face's two answers, the mirrored one mapped back
    (``x -> size - x``, pixel ``i`` spanning ``[i, i + 1)``, and the mesh's left/right permutation)."""
    n = len(landmarks) // 2
    back = landmarks[n:][:, mirror_478()].copy()
    back[..., 0] = size - back[..., 0]
    return (landmarks[:n] + back) / 2, (presence[:n] + presence[n:]) / 2


MESH_ARCHITECTURES = ("attention_mesh", "face_landmark")


def registered(model: str, architectures: Sequence[str], runner: str) -> ModelSpec:
    """The registry entry of ``model``, refused (ValueError) unless its architecture is one ``runner`` runs."""
    spec = get_model_spec(model)
    if spec.architecture not in architectures:
        raise ValueError(f"{runner} runs {' and '.join(architectures)} networks, not {spec.name!r} "
                         f"({spec.architecture}); attnmesh.runtime.make_landmark_runner picks the runner of a model")
    return spec


class CropLandmarkRunner:
    """A :class:`LandmarkRunner` over a network run on batches of ROI crops: crop, :meth:`run`, project back."""

    input_size: int
    num_landmarks: int

    def crop(self, image: np.ndarray, rois: Sequence[Roi]) -> np.ndarray:
        """(N, S, S, 3) uint8 crops of ``rois`` (bilinear, replicated border, as MediaPipe)."""
        return self.crop_many([(image, roi) for roi in rois])

    def crop_many(self, items: Sequence[tuple[np.ndarray, Roi]]) -> np.ndarray:
        """:meth:`crop` for ``(image, roi)`` pairs from any number of images."""
        out = np.empty((len(items), self.input_size, self.input_size, 3), np.uint8)
        for i, (image, roi) in enumerate(items):
            out[i] = crop_image(image, roi, self.input_size, border="replicate")
        return out

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, K, 3) in crop pixels (``input_size``-space) and presence scores (N,) for uint8 NHWC
        crops: :meth:`forward` on the crops (none: empty arrays)."""
        if len(crops) == 0:
            return empty_result(self.num_landmarks)
        return self.forward(crops)

    def forward(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The backend's network on a non-empty batch: landmarks (N, K, 3) in crop pixels and presence scores
        (N,) in [0, 1]."""
        raise NotImplementedError

    def predict(self, image: np.ndarray, rois: Sequence[Roi]) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, K, 3) in image pixels (z on the scale of x) and presence scores (N,) for the face
        ROIs ``rois`` of RGB uint8 ``image``: crop, run, project back."""
        return self.predict_many([(image, roi) for roi in rois])

    def predict_many(self, items: Sequence[tuple[np.ndarray, Roi]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` for ``(image, roi)`` pairs from any number of images, in one network pass."""
        points, scores = self.run(self.crop_many(items))
        for p, (_, roi) in zip(points, items):
            p[:] = project_to_image(p, roi, self.input_size)
        return points, scores


# -- choosing a backend ---------------------------------------------------------------------------------------

DEFAULT_NETWORK_THREADS = 1
"""Intra-op threads of one network call unless ``$ATTNMESH_THREADS`` or ``num_threads`` says otherwise. Our
networks take 1-5 ms per face: a second thread synchronises with the first after every layer, and on a 2-vCPU
Intel Xeon VM that cost more than it saved (tracking talking-d3 on OpenVINO: 142-145 fps on one thread in five
runs, 84-136 on two). Parallelism comes from elsewhere: one network per worker process in ``attnmesh images``,
decoding in its own thread in ``attnmesh video``."""


def default_threads() -> int:
    """Intra-op threads of each network call: ``$ATTNMESH_THREADS`` if set, else
    :data:`DEFAULT_NETWORK_THREADS`."""
    return env_threads() or DEFAULT_NETWORK_THREADS


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask): how many worker processes keep them busy."""
    return len(os.sched_getaffinity(0)) or 1


def env_threads() -> int | None:
    """``$ATTNMESH_THREADS`` as a number of threads (None when unset, empty or 0); ValueError if not a number."""
    value = os.environ.get("ATTNMESH_THREADS", "").strip()
    try:
        return max(0, int(value)) or None if value else None
    except ValueError:
        raise ValueError(f"$ATTNMESH_THREADS must be a whole number of threads, got {value!r}") from None


def device_type(device: str | torch.device) -> str:
    """``"cpu"``, ``"cuda"``, ``"mps"``... of a device name or ``torch.device`` (no PyTorch import)."""
    return str(device).split(":")[0]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function in float64, returned as float32 (presence scores from logits)."""
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def resolve_backend(backend: str = "auto", device: str | torch.device = "cpu") -> str:
    """The backend that runs: ``backend``, or for ``"auto"`` the one chosen here. ValueError for an unknown
    name, RuntimeError for ``"onnxruntime"`` when ONNX Runtime is not installed."""
    check_backend(backend)
    if backend == "auto":
        if device_type(device) != "cpu":
            return "torch"
        for candidate in ("openvino", "onnxruntime"):
            if importlib.util.find_spec(candidate) is not None:
                return candidate
        return "torch"
    return backend
