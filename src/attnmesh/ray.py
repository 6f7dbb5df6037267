"""Landmarks for photo and video collections on a Ray cluster, with Ray Data (``pip install 'attnmesh[ray]'``).

Two levels:

* :class:`FaceMeshPredictor`, a callable class for :meth:`ray.data.Dataset.map_batches` in Ray's batch-inference
  convention: the models are built once per actor, then the actor is called per batch. A batch carries a
  ``path`` column and/or a ``bytes`` column (the encoded file, as ``ray.data.read_binary_files`` gives it);
  images are decoded with :mod:`attnmesh.io` (the same conversions and error messages as ``attnmesh images``)
  and the result is a ``pyarrow.Table`` with exactly the columns and types of ``attnmesh images --out
  x.parquet`` (:func:`attnmesh.io.outputs.parquet_schema`), built by the same code: one row per image x face,
  one row with null face columns for an image without a face, one row with ``error`` for a file that cannot be
  used (never a failed job)::

      import ray
      from attnmesh.ray import FaceMeshPredictor

      files = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
      faces = files.map_batches(FaceMeshPredictor, fn_constructor_kwargs={"max_faces": 5}, batch_size=64,
                                compute=ray.data.ActorPoolStrategy(size=8))
      faces.write_parquet("s3://bucket/faces/")

* ``attnmesh images SRC... --out DIR --engine ray`` and ``attnmesh video A.mp4 B.mp4... --out DIR --engine
  ray`` (:mod:`attnmesh.cli.ray`). The inputs are cut into *shards*: ``--shard-size``
  images in input order, or one video (tracking is sequential within a clip). Each shard is one Ray Data task
  that writes ``DIR/part-<index>-<digest>.parquet`` under a temporary name and renames it when complete; the
  digest covers the shard's paths and the options that change the results. A rerun of the same command thus
  finds the shards DIR already holds and submits only the missing ones (no duplicate rows, none missing), and
  a shard of other inputs or options found in DIR is an error rather than mixed in. A worker process that
  dies is restarted by Ray and its task retried (Ray Data's fault tolerance); the driver shows the
  progress and ends with the summary line of the local commands, counted from what DIR holds.

Without ``--address`` a local Ray is started for the run; with it, the run joins an existing cluster (docs/
cluster.md). Relative input paths are read relative to the driver's working directory and written as given;
on a cluster every worker must see them at the same place (a shared file system), or give URIs
(``s3://``, ``gs://``, ``abfs://``, ``file://``...) that ``pyarrow.fs`` reads; ``--out`` may be a URI too.

Nothing in this module imports Ray at import time: the command line's options and the plain-Python
:class:`FaceMeshPredictor` work without it.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FaceMeshPredictor", "is_uri"]

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) to be read through ``pyarrow.fs`` rather than a local path."""
    return bool(_URI.match(path))


# -- the map_batches callable -------------------------------------------------------------------------------


def _assigned_cpus() -> int | None:
    """Whole CPUs Ray assigned to the calling worker, or None outside Ray (then the backend's default)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - not in a Ray worker
        return None
    return max(1, int(cpus)) if cpus else None


class FaceMeshPredictor:
    """Face landmarks for :meth:`ray.data.Dataset.map_batches` (or any table of image paths or bytes).

    ``ds.map_batches(FaceMeshPredictor, fn_constructor_kwargs={...}, compute=ray.data.ActorPoolStrategy(size=N),
    batch_size=B)``: Ray builds one per actor (the models load once) and calls it per batch.

    Args:
        max_faces, refine_landmarks, min_detection_confidence, device, backend, model: as
            :class:`attnmesh.FaceMesh` in static image mode (``attnmesh images``' ``--max-faces``,
            ``--no-refine``...).
        batch_size: images per detector / mesh pass inside a call (``--batch-size``; default as ``attnmesh
            images``: 1, or 8 on the torch backend); a Ray batch of any size is processed in passes of this many.
        root: folder that relative paths are read from (default: the worker's working directory); the
            ``path`` column of the result keeps them as given.

    Called with a batch (a dict of columns, a ``pyarrow.Table`` or a ``pandas.DataFrame``) holding ``path``
    (local paths or ``pyarrow.fs`` URIs, read by the worker) and/or ``bytes`` (the encoded files, then
    ``path`` only names them; without ``path`` the rows' path is empty), it returns a ``pyarrow.Table`` with
    the schema of :func:`attnmesh.io.outputs.parquet_schema`: landmarks in pixels of the upright image, z
    relative depth on the x scale, head pose in degrees / centimetres, rows in input order.
    """

    def __init__(self, *, max_faces: int = 5, refine_landmarks: bool = True, min_detection_confidence: float = 0.5,
                 device: str = "cpu", backend: str = "auto", model: str = "attention_mesh", batch_size: int | None = None,
                 root: str | os.PathLike | None = None) -> None:
        from .io.outputs import parquet_schema
        from .pipeline.face_mesh import FaceMesh
        from .runtime import device_type

        if batch_size is None:  # as attnmesh images: 1, or 8 on the torch backend (large per-call overhead)
            batch_size = 8 if backend == "torch" or device_type(device) != "cpu" else 1
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.args = argparse.Namespace(max_faces=max_faces, no_refine=not refine_landmarks,
                                       min_detection_confidence=min_detection_confidence, device=device,
                                       backend=backend, model=model, batch_size=batch_size, debug=False)
        try:  # CPU threads per network call: the CPUs Ray gave this actor, if any
            self.face_mesh = FaceMesh(static_image_mode=True, max_num_faces=max_faces,
                                      refine_landmarks=refine_landmarks,
                                      min_detection_confidence=min_detection_confidence, device=device,
                                      backend=backend, model=model, num_threads=_assigned_cpus())
        except (TypeError, ValueError, RuntimeError, ImportError) as e:
            raise RuntimeError(f"cannot set up the face mesh: {e}") from None
        self.root = None if root is None else os.fspath(root)
        self.schema = parquet_schema(self.face_mesh.landmark_runner.num_landmarks)

    def __call__(self, batch: Any) -> Any:
        from .io.outputs import arrow_table, rows
        from .io.records import image_records

        paths, blobs = _input_columns(batch)
        out: list[dict[str, Any]] = []
        size = self.args.batch_size
        for start in range(0, len(paths), size):
            loaded = [(path, self._load(path, data))
                      for path, data in zip(paths[start:start + size], blobs[start:start + size])]
            for _, record, _, _ in image_records(self.face_mesh, loaded):
                out.extend(rows(record))
        return arrow_table(out, self.schema)

    def _load(self, path: str, data: bytes | None) -> Any:
        """RGB uint8 pixels, or the :class:`attnmesh.io.ImageError` naming ``path`` as given."""
        from .io import ImageError, decode_image, load_image

        try:
            if data is not None:
                return decode_image(data, path or "<bytes>")
            if is_uri(path):  # the name without a query (?endpoint_override=...) for the extension
                return decode_image(_read_uri(path), path.partition("?")[0])
            where = path if self.root is None else os.path.join(self.root, path)
            try:
                return load_image(where)
            except ImageError as e:
                raise ImageError(path, e.problem) from None
        except ImageError as e:
            return e


def _input_columns(batch: Any) -> tuple[list[str], list[bytes | None]]:
    """(paths, encoded bytes or None) of a map_batches batch in any of Ray's batch formats."""
    if hasattr(batch, "to_pydict"):  # pyarrow.Table
        columns: Mapping[str, Any] = batch.to_pydict()
    elif hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas.DataFrame
        columns = {c: batch[c].tolist() for c in batch.columns}
    else:  # dict of numpy arrays or lists
        columns = batch
    if "path" not in columns and "bytes" not in columns:
        names = ", ".join(map(str, columns)) or "none"
        raise ValueError(f"FaceMeshPredictor needs a 'path' or a 'bytes' column; the batch has: {names}")
    n = len(columns["path"] if "path" in columns else columns["bytes"])
    paths = ["" if p is None else str(p) for p in columns["path"]] if "path" in columns else [""] * n
    blobs = [None if b is None else bytes(b) for b in columns["bytes"]] if "bytes" in columns else [None] * n
    return paths, blobs


def _read_uri(uri: str) -> bytes:
    """The bytes of the file at a ``pyarrow.fs`` URI; :class:`attnmesh.io.ImageError` with the problem in the
    words of :func:`attnmesh.io.load_image` when it is missing, a folder or unreadable."""
    import pyarrow.fs as pafs

    from .io import ImageError

    try:
        fs, where = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(where)
        if info.type == pafs.FileType.NotFound:
            raise ImageError(uri, "no such file or directory")
        if info.type == pafs.FileType.Directory:
            raise ImageError(uri, "is a directory, not an image file")
        with fs.open_input_stream(where) as f:
            return f.read()
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid... with the reason
        raise ImageError(uri, f"cannot read the file ({e})") from None
