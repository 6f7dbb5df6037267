"""Checks of the arguments of :class:`attnmesh.FaceMesh` and :class:`attnmesh.FaceDetector`, run when they are
constructed, so that a bad argument fails at once with one line naming it instead of deep inside
``process()``.

Wrong types raise :class:`TypeError`, values out of range :class:`ValueError`, and a device or backend this
machine cannot provide (CUDA without a GPU, ONNX Runtime not installed) :class:`RuntimeError`.
"""

from __future__ import annotations

import importlib.util
import math
import numbers

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


#: The values of ``backend=`` (see :mod:`attnmesh.runtime`).
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")

def check_flag(name: str, value: object) -> bool:
    """``value`` as a bool: True/False (NumPy bools too) or the integers 0 and 1; anything else (a string such
    as ``"False"``, which would count as true) raises TypeError."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and int(value) in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``: an integer (Python or NumPy), not a bool or a float such as 2.5."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number (int), got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def check_unit(name: str, value: object) -> float:
    """``value`` as a float in [0, 1] (a probability or score threshold); NaN, strings and bools are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return v


def check_device(device: object) -> str | torch.device:
    """``device`` (a string such as ``"cpu"``, ``"cuda:1"``, or a :class:`torch.device`) as a torch device that
    exists here (the string ``"cpu"`` is returned as it is, without importing PyTorch). ValueError for a name
    torch does not know, RuntimeError for CUDA / MPS that this PyTorch build or this machine does not have
    (instead of torch's ``AssertionError`` on first use)."""
    if device == "cpu":
        return device
    import torch

    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', or a torch.device; got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        reason = " ".join(str(e).split())
        raise ValueError(f"device {device!r} is not a torch device ({reason})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES)")
            raise RuntimeError(f"device {str(device)!r} needs CUDA, but {why}; use device='cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise RuntimeError(f"device {str(device)!r}: there {'is' if count == 1 else 'are'} only {count} CUDA "
                               f"device{'s' * (count != 1)} (cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {str(device)!r} needs Apple's MPS, which is not available here; use device='cpu'")
    return dev


def check_backend(backend: object) -> None:
    """Refuse a backend name that is not offered, or ``"onnxruntime"`` when ONNX Runtime is not installed
    (RuntimeError naming the install command, instead of a ``ModuleNotFoundError`` on first use)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "openvino" and importlib.util.find_spec("openvino") is None:
        raise RuntimeError("backend='openvino' needs OpenVINO, which is not installed: pip install openvino "
                           "(or use backend='torch')")
    if backend == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
        raise RuntimeError("backend='onnxruntime' needs ONNX Runtime, which is not installed: "
                           "pip install \"attnmesh[onnx]\" (or use backend='torch')")
