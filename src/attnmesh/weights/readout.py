"""The 68-point read-out of a mesh: iBUG 300-W points (``Face.landmarks68``) from the 478 (or 468) landmarks,
shipped with each model's weights.

Three kinds, all fitted on the TRAINING split of 300w-train only (:mod:`attnmesh.train.readout`), the default
of each model chosen on the validation split and recorded in its manifest entry (``readout68``):

* ``"fixed"``: one mesh vertex per iBUG point (``data/landmark_maps.json``'s ``mesh_to_68``, the documented map);
  what every model without a readout of its own uses.
* ``"linear"``: each iBUG point a weighted sum of the 16 mesh vertices nearest its fixed vertex (weights sum to
  1: translation-equivariant).
* ``"dense"``: a ridge regression from all mesh vertices to all 68 points in a face-normalised frame (origin the
  mesh centroid, x axis the outer eye corners 33 -> 263, unit the distance between them), mapped back.

Coordinates in and out are image pixels (x right, y down); only x and y are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..topology import LEFT_EYE_OUTER_CORNER, NUM_MESH_LANDMARKS, RIGHT_EYE_OUTER_CORNER

READOUT_KINDS = ("fixed", "linear", "dense")


def fixed_indices() -> np.ndarray:
    """(68,) the documented fixed map: the mesh vertex of each iBUG point."""
    data = json.loads(resources.files("attnmesh").joinpath("data/landmark_maps.json").read_text())
    return np.asarray(data["mesh_to_68"]["indices"], np.int64)


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For (..., K, 2+) landmarks: the centroid (..., 2) of the 468 mesh vertices, the rotation (..., 2, 2) whose
    rows are the unit vector along the outer eye corners (33 -> 263) and its perpendicular, and the corner
    distance (...,): ``normalised = rotation @ (p - centroid) / scale``."""
    xy = np.asarray(landmarks, np.float64)[..., :2]
    centroid = xy[..., :NUM_MESH_LANDMARKS, :].mean(-2)
    axis = xy[..., LEFT_EYE_OUTER_CORNER, :] - xy[..., RIGHT_EYE_OUTER_CORNER, :]
    scale = np.maximum(np.linalg.norm(axis, axis=-1), 1e-9)
    u = axis / scale[..., None]
    rotation = np.stack([u, np.stack([-u[..., 1], u[..., 0]], -1)], -2)
    return centroid, rotation, scale


@dataclass
class Readout68:
    """A fitted mesh -> 68 map (see the module docstring). ``kind`` is one of :data:`READOUT_KINDS`; ``data``
    its parameters (``linear``: ``columns`` and ``weights``, 68 x 16; ``dense``: ``matrix`` (136, 2 * V + 1),
    ``vertices`` V). ``source``: the (weights name, folder) it was loaded from by :func:`load_readout`, if it
    was: it then pickles as that reference (every :class:`~attnmesh.Face` carries its model's read-out, and a
    dense matrix is 1 MB), and unpickles as the same shipped read-out."""

    kind: str = "fixed"
    data: dict[str, Any] = field(default_factory=dict)
    source: tuple[str, str | None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in READOUT_KINDS:
            raise ValueError(f"readout kind must be one of {READOUT_KINDS}, got {self.kind!r}")
        self._fixed = fixed_indices()

    def __call__(self, landmarks: np.ndarray) -> np.ndarray:
        """(..., 68, 2) iBUG points, image pixels, for (..., K >= 468, 2+) landmarks."""
        xy = np.asarray(landmarks, np.float64)[..., :2]
        if self.kind == "fixed":
            return xy[..., self._fixed, :].astype(np.float32)
        if self.kind == "linear":
            cols = np.asarray(self.data["columns"], np.int64)
            w = np.asarray(self.data["weights"], np.float64)
            return np.einsum("kj,...kjc->...kc", w, xy[..., cols, :]).astype(np.float32)
        vertices = int(self.data["vertices"])
        matrix = np.asarray(self.data["matrix"], np.float64)
        centroid, rotation, scale = face_frame(xy)
        local = np.einsum("...ij,...kj->...ki", rotation, xy[..., :vertices, :] - centroid[..., None, :])
        local = local / scale[..., None, None]
        features = np.concatenate([local.reshape(*local.shape[:-2], -1), np.ones((*local.shape[:-2], 1))], -1)
        out = (features @ matrix.T).reshape(*local.shape[:-2], 68, 2) * scale[..., None, None]
        return (np.einsum("...ji,...kj->...ki", rotation, out) + centroid[..., None, :]).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.data}

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self.source is not None:
            return _shipped_readout, self.source
        return Readout68, (self.kind, self.data)

    @classmethod
    def from_dict(cls, entry: dict[str, Any] | None, directory: Path | None = None) -> Readout68:
        """From a manifest entry's ``readout68`` (a dense map's matrix in the ``.safetensors`` file it names, in
        ``directory``, sha256-checked) or :meth:`to_dict`'s output."""
        entry = dict(entry or {"kind": "fixed"})
        kind = entry.pop("kind")
        entry.pop("fit", None)  # provenance and validation figures, not parameters
        if "file" in entry:
            from safetensors.numpy import load_file

            from . import WeightsError, sha256_file, weights_dir

            path = (directory or weights_dir()) / entry.pop("file")
            digest = entry.pop("sha256", None)
            if not path.is_file() or (digest is not None and sha256_file(path) != digest):
                raise WeightsError(f"read-out file {path.name} is missing or corrupt")
            entry["matrix"] = load_file(str(path))["matrix"].astype(np.float64)
        return cls(kind, entry)


def load_readout(weights: str, directory: Path | None = None) -> Readout68:
    """The shipped read-out of weights ``weights`` (its manifest entry's ``readout68``), else the fixed map.
    Each call reads (and checks) the files again; the result remembers where it came from (``source``)."""
    from . import read_manifest

    entry = read_manifest(directory)["models"].get(weights, {})
    readout = Readout68.from_dict(entry.get("readout68"), directory)
    readout.source = (weights, None if directory is None else str(directory))
    return readout


@lru_cache(maxsize=16)
def _shipped_readout(weights: str, directory: str | None) -> Readout68:
    """A pickled shipped read-out, loaded once per process (faces from another process share it)."""
    return load_readout(weights, None if directory is None else Path(directory))


def store_readout(readout: Readout68, weights: str, fit: dict[str, Any], directory: Path | None = None
                  ) -> dict[str, Any]:
    """Record ``readout`` in the manifest entry of weights ``weights`` (a dense map's matrix goes to
    ``<weights>.readout68.safetensors`` beside them, float32); returns the ``readout68`` entry."""
    from . import read_manifest, set_manifest_entry, sha256_file, weights_dir

    directory = directory or weights_dir()
    data = readout.to_dict()
    if readout.kind == "dense":
        from safetensors.numpy import save_file

        from ..io.atomic import atomic_path

        file = directory / f"{weights}.readout68.safetensors"
        with atomic_path(file) as tmp:
            save_file({"matrix": np.asarray(data.pop("matrix"), np.float32)}, str(tmp))
        data.update(file=file.name, sha256=sha256_file(file))
    entry = read_manifest(directory)["models"][weights]
    set_manifest_entry(weights, {**entry, "readout68": {**data, "fit": fit}}, directory)
    return data
