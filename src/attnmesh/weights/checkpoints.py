"""Weights outside the shipped set, read into their modules: Attention Mesh weights files and training
checkpoints (:func:`load_attention_mesh_file`), and face-transformer distillation checkpoints (``.pt``) and weights files
(``.safetensors``) written by the shipping step, read into :class:`~attnmesh.models.face_transformer.FaceTransformer`.
The shipped ``face_transformer_xs`` is built by :func:`attnmesh.create_model`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..models.attention_mesh import AttentionMesh
from ..models.face_transformer import FaceTransformer


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A distillation checkpoint (``.pt``: model, size, input_size, step) or shipped weights (``.safetensors``,
    float16, read as float32), read by :func:`attnmesh.weights.read_weights_file`, in the checkpoint's form, with
    the point-refiner settings (``refine_dim``, ``refine_steps``) read off the tensors."""
    from . import read_weights_file

    ck = read_weights_file(path)
    if "metadata" in ck:  # a .safetensors file: its settings are in the metadata
        meta = ck.pop("metadata")
        ck.update(size=meta.get("model", "").removeprefix("face_transformer_"),
                  input_size=int(meta.get("input_size", 0)))
    steps = len({k.split(".")[1] for k in ck["model"] if k.startswith("refiners.")})
    ck["refine_steps"] = steps or 1
    ck["refine_dim"] = int(ck["model"]["refiners.0.project.weight"].shape[0]) if steps else 0
    return ck


def model_from_checkpoint(ck: dict[str, Any]) -> FaceTransformer:
    """:class:`FaceTransformer` of a :func:`read_checkpoint` result with its weights, in eval mode."""
    model = FaceTransformer(ck["size"], ck["input_size"], ck["refine_dim"], ck["refine_steps"])
    model.load_state_dict(ck["model"], strict=True)
    return model.eval()


def load_face_transformer_file(path: str | Path) -> FaceTransformer:
    """:class:`FaceTransformer` from a distillation checkpoint or a weights file (:func:`read_checkpoint`), in
    eval mode."""
    return model_from_checkpoint(read_checkpoint(path))


def checkpoint_architecture(path: str | Path) -> str:
    """The architecture (:data:`attnmesh.registry.ARCHITECTURES`) a weights file (``.safetensors``) or training
    checkpoint (``.pt``) holds, as recorded in it (``architecture`` in the safetensors metadata or the checkpoint
    dict). Files written before that record existed are recognised by their tensor names (the face transformer
    has a ``landmark_out`` layer; anything else is taken for an Attention Mesh and checked when loaded)."""
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            recorded = (f.metadata() or {}).get("architecture")
            keys = set(f.keys())
    elif path.endswith(".pt"):
        # mmap: only the names are needed here, the weights are read once, by the runner
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        ck = ck if isinstance(ck, dict) else {}
        recorded = ck.get("architecture")
        keys = set(ck.get("model", {}) if isinstance(ck.get("model"), dict) else {})
    else:
        raise ValueError(f"{path}: weights must be a .safetensors file or a .pt checkpoint")
    if recorded:
        return str(recorded)
    return "face_transformer" if "landmark_out.weight" in keys else "attention_mesh"


def load_attention_mesh_file(model: str, device: str | torch.device = "cpu") -> AttentionMesh:
    """An :class:`AttentionMesh` with shipped weights ``model`` (manifest name), a ``.safetensors`` file, or a
    training checkpoint ``.pt``. Weights of another network (e.g. the face detector's) raise
    :class:`attnmesh.weights.WeightsError` with one line, not torch's list of every missing tensor."""
    from . import WeightsError, load_state_dict, read_weights_file

    net = AttentionMesh()
    state = read_weights_file(model)["model"] if model.endswith((".safetensors", ".pt")) else load_state_dict(model)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unknown or reshaped:
        example = (missing or unknown or reshaped)[0]
        raise WeightsError(f"{model}: not Attention Mesh weights ({len(missing)} of its {len(expected)} tensors "
                           f"missing, {len(unknown)} unknown, {len(reshaped)} of another shape; e.g. {example})")
    net.load_state_dict(state, strict=True)
    return net.to(device)
