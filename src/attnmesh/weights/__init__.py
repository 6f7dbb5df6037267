"""Shipped weights: ``.safetensors`` files beside this module plus ``manifest.json``.

The manifest records, for each model, the file, its sha256, the ``.tflite`` it was imported from (package,
path inside the package, sha256) and, for each of our parameters, the TFLite tensor it came from.
``python -m attnmesh.convert`` regenerates all of it. Loading verifies the sha256.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io.atomic import write_text_atomic

if TYPE_CHECKING:
    import torch

MANIFEST_NAME = "manifest.json"


class WeightsError(RuntimeError):
    """A weights file is missing, corrupt, or does not match its manifest."""


def weights_dir() -> Path:
    return Path(str(resources.files("attnmesh.weights")))


def read_manifest(directory: Path | None = None) -> dict[str, Any]:
    path = (directory or weights_dir()) / MANIFEST_NAME
    if not path.is_file():
        raise WeightsError(f"weights manifest not found: {path} (run `python -m attnmesh.convert`)")
    return json.loads(path.read_text())


def set_manifest_entry(name: str, entry: dict[str, Any], directory: Path | None = None) -> dict[str, Any]:
    """Add or replace the manifest entry of shipped model ``name`` (entries kept sorted; written atomically)."""
    path = (directory or weights_dir()) / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["models"][name] = entry
    manifest["models"] = dict(sorted(manifest["models"].items()))
    write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
    return entry


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict(name: str, directory: Path | None = None) -> dict[str, torch.Tensor]:
    """The float32 state dict of shipped model ``name`` (e.g. ``"attention_mesh"``), sha256-verified."""
    from safetensors.torch import load_file

    directory = directory or weights_dir()
    manifest = read_manifest(directory)
    if name not in manifest["models"]:
        raise WeightsError(f"no shipped weights named {name!r}; available: {sorted(manifest['models'])}")
    entry = manifest["models"][name]
    path = directory / entry["file"]
    if not path.is_file():
        raise WeightsError(f"weights file missing: {path}")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise WeightsError(f"weights file {path.name} is corrupt: sha256 {digest[:12]}… != manifest "
                           f"{entry['sha256'][:12]}…")
    return {k: v.float() for k, v in load_file(str(path)).items()}


def load_model_weights(model: torch.nn.Module, name: str, directory: Path | None = None) -> torch.nn.Module:
    """Load shipped weights ``name`` into ``model`` (strict) and return it."""
    model.load_state_dict(load_state_dict(name, directory), strict=True)
    return model


def read_weights_file(path: str | Path) -> dict[str, Any]:
    """A weights file outside the shipped set, as a checkpoint dict whose ``"model"`` is a float32 state dict:
    a ``.safetensors`` file (float16 or float32 tensors; its string metadata under ``"metadata"``) or a training
    / distillation checkpoint ``.pt`` (read with ``weights_only=True``; every key it holds, e.g. ``step``,
    ``config``, ``size``). The one reader of such files (``attnmesh train``'s checkpoints, ``attnmesh eval``'s
    weights files, the face transformer's checkpoints); anything else raises :class:`WeightsError` in one line."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except SafetensorError as e:
            raise WeightsError(f"{path}: not a readable .safetensors file ({_first_line(e)})") from None
        return {"model": {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                "metadata": meta}
    if path.suffix == ".pt":
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # also torch's refusal of anything but tensors and plain data
            raise WeightsError(f"{path}: not a readable checkpoint (not a torch.save file of tensors and plain "
                               "data)") from None
        except Exception as e:  # zip, EOF and other decoding errors have no common base
            raise WeightsError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_first_line(e)})") from None
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
            raise WeightsError(f"{path}: not a training checkpoint (no 'model' state dict in it)")
        return ckpt
    raise WeightsError(f"{path}: weights must be a .safetensors or .pt file")


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (torch.load's run to a page), at most 160 characters."""
    line = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "")
    return line if len(line) <= 160 else line[:157] + "..."
