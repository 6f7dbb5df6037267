"""attnmesh: high-fidelity 3D face meshes in real time (Attention Mesh, 478 landmarks) in PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["FaceMesh", "FaceDetector", "Face", "Detection", "Roi", "load_image", "list_models", "create_model",
           "__version__"]

if TYPE_CHECKING:
    from .geometry.roi import Roi
    from .io import load_image
    from .runtime.detector import FaceDetector
    from .pipeline.face_mesh import FaceMesh
    from .registry import create_model, list_models
    from .results import Detection, Face

_LAZY = {"FaceMesh": ".pipeline.face_mesh", "FaceDetector": ".runtime.detector",
         "Face": ".results", "Detection": ".results", "Roi": ".geometry.roi", "load_image": ".io",
         "list_models": ".registry", "create_model": ".registry"}


def __getattr__(name: str) -> Any:
    """Import the public classes on first use, so ``import attnmesh`` (and the CLI's --help) stays fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'attnmesh' has no attribute {name!r}")
