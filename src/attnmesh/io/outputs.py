"""Output files of the command line: JSON lines, Parquet, NumPy ``.npz`` and CSV, chosen by the extension.

Every writer takes the same *records*, one per image (``attnmesh images``) or per video frame
(``attnmesh video``), as built by :func:`image_record`, :func:`frame_record` and :func:`error_record`:

* image: ``{"path", "width", "height", "faces": [face, ...]}``
* video frame: ``{"path", "frame", "timestamp", "width", "height", "faces": [face, ...]}``
* failure: ``{"path", "error"}`` (an image that could not be read or processed)

and ``"path_bytes"`` after ``"path"`` when the file name is not valid UTF-8 (:func:`path_fields`: ``path`` is
then readable text with ``\\xNN`` for the undecodable bytes, ``path_bytes`` the exact name in hex),

and a face (:func:`face_record`) is ``{"score", "detection_score", "box", "roi", "landmarks", "pose"}``, plus
``"track_id"`` in video. Floats are rounded once, here (landmarks, box, roi, translation and angles to 3
decimals, the pose transform to 6), so every format holds the same numbers. The two large fields are NumPy
float64 arrays in a record, ``landmarks`` (K, 3) and the pose's ``transform`` (4, 4) (cheap to pass between
processes and to put in columns); everything else is plain Python. :func:`json_ready` makes a record plain
JSON values.

* ``.jsonl`` / ``.ndjson``: the records as they are, one JSON object per line; JSON Schema in
  ``attnmesh/data/jsonl.schema.json`` (:func:`jsonl_schema`).
* ``.parquet``: one row per image x face (video: frame x face); an image or frame without a face is one row
  with null face columns, a failure one row with ``error`` set; fixed-size list columns; the schema is
  :func:`parquet_schema`.
* ``.npz``: arrays over the records, padded over faces; keys, dtypes and shapes in :func:`npz_layout`.
* ``.csv``: the Parquet rows with lists spread over columns (``x0, y0, z0, x1, ...``); header
  :func:`csv_columns`.

All of them are documented in ``docs/outputs.md``. Each writer writes to a temporary file in the target's
folder and renames it over the target in :meth:`Writer.commit`, so an interrupted run never leaves a file that
looks complete; :meth:`Writer.discard` removes the temporary file. :class:`TempFile` does the same for the
other files the commands write (overlays, videos, reports).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import CliError
from ..topology import NUM_MESH_LANDMARKS

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".npz": "npz", ".csv": "csv"}
SCHEMA_VERSION = "attnmesh.faces/1"
PARQUET_ROWS_PER_GROUP = 512  # ~3 MB per group at 478 landmarks; small groups keep the conversion spread over a run

# -- records ------------------------------------------------------------------------------------------------


def _r(x: Any, decimals: int = 3) -> Any:
    """Floats (scalars or arrays) rounded to ``decimals`` as plain Python values; ValueError if not finite."""
    return _rounded(x, decimals).tolist()


def _rounded(x: Any, decimals: int = 3) -> np.ndarray:
    """Floats rounded to ``decimals`` as a float64 array; ValueError if not finite."""
    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("non-finite value in the results")
    return np.round(a, decimals)


def json_ready(value: Any) -> Any:
    """``value`` (a record, or any part of one) with its NumPy arrays as nested lists: plain JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def pose_record(landmarks: np.ndarray, image_size: tuple[int, int]) -> dict[str, Any] | None:
    """Head pose of one face (:func:`pose_records` of one)."""
    return pose_records(np.asarray(landmarks)[None], [image_size])[0]


def pose_records(landmarks: np.ndarray, image_sizes: Any) -> list[dict[str, Any] | None]:
    """Head pose of M faces, from :func:`attnmesh.geometry.face_geometry.estimate_head_poses` (all at once):
    ``landmarks`` (M, K, 3) image pixels, ``image_sizes`` (M, 2) each face's image (width, height). Per face
    ``{"pitch", "yaw", "roll"}`` degrees, ``"translation"`` [x, y, z] centimetres (camera metric space, z < 0)
    and ``"transform"`` the 4x4 canonical-face -> camera matrix; None when the landmarks are too degenerate for
    a fit. Angles as :attr:`attnmesh.geometry.face_geometry.FaceGeometry.euler_angles`."""
    from ..geometry.face_geometry import estimate_head_poses, euler_from_rotations

    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[1] < NUM_MESH_LANDMARKS or landmarks.shape[2] != 3:
        return [None] * len(landmarks)  # not a mesh: no pose
    if len(landmarks) == 0:
        return []
    poses = estimate_head_poses(landmarks, image_sizes)
    scales = np.sqrt((poses[:, :3, 0] ** 2).sum(1))  # as FaceGeometry.scale, .rotation, .euler_angles
    angles = euler_from_rotations(poses[:, :3, :3] / scales[:, None, None])
    angles, translations, transforms = np.round(angles, 3), np.round(poses[:, :3, 3], 3), np.round(poses, 6)
    return [{"pitch": float(a[0]), "yaw": float(a[1]), "roll": float(a[2]), "translation": t.tolist(),
             "transform": m} if np.isfinite(m).all() else None
            for a, t, m in zip(angles, translations, transforms)]


def face_record(face: Any, image_size: tuple[int, int], landmarks: np.ndarray | None = None,
                video: bool = False, pose: dict[str, Any] | None | bool = True) -> dict[str, Any]:
    """The record of one :class:`attnmesh.Face` found in an image of ``image_size`` = (width, height).

    ``landmarks`` replaces the face's own (smoothed landmarks in video); ``video`` adds ``track_id``; ``pose``
    is the face's :func:`pose_records` entry when computed with other faces' (default: computed here).
    Raises ValueError for a non-finite value.
    """
    det = face.detection
    points = face.landmarks if landmarks is None else landmarks
    record = {
        "score": _r(face.score),
        "detection_score": None if det is None else _r(det.score),
        "box": _r(face.box),
        "roi": _r(face.roi.as_tuple()),
        "landmarks": _rounded(points),
        "pose": pose_record(points, image_size) if pose is True else pose,
    }
    if video:
        track_id = getattr(face, "track_id", None)
        record["track_id"] = None if track_id is None else int(track_id)
    return record


def path_fields(path: str | bytes | os.PathLike) -> dict[str, str]:
    """How a file name is stored in every output: ``{"path": name}``, and for a name that is not valid UTF-8
    (possible on Linux, where a name is any bytes) ``{"path": text, "path_bytes": hex}``: ``text`` is the name
    decoded as UTF-8 with each undecodable byte written ``\\xNN`` (readable, valid Unicode, but not a unique
    key: a name could really contain those four characters), and ``path_bytes`` the name's exact bytes as
    lower-case hex, from which ``os.fsdecode(bytes.fromhex(path_bytes))`` opens the file again."""
    name = os.fspath(path)
    if isinstance(name, bytes):
        raw = name
    else:
        try:
            name.encode("utf-8")
            return {"path": name}
        except UnicodeEncodeError:  # lone surrogates: undecodable bytes (os.fsdecode's surrogateescape)
            try:
                raw = os.fsencode(name)
            except UnicodeEncodeError:  # a surrogate that no file name decodes to (only from API callers)
                raw = name.encode("utf-8", "surrogatepass")
    try:
        return {"path": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"path": raw.decode("utf-8", "backslashreplace"), "path_bytes": raw.hex()}


def image_record(path: str | bytes | os.PathLike, width: int, height: int, faces: list[dict]) -> dict[str, Any]:
    return {**path_fields(path), "width": int(width), "height": int(height), "faces": faces}


def frame_record(path: str | bytes | os.PathLike, frame: int, timestamp: float, width: int, height: int,
                 faces: list[dict]) -> dict[str, Any]:
    return {**path_fields(path), "frame": int(frame), "timestamp": round(float(timestamp), 6), "width": int(width),
            "height": int(height), "faces": faces}


def error_record(path: str | bytes | os.PathLike, problem: str) -> dict[str, Any]:
    return {**path_fields(path), "error": " ".join(str(problem).split())}


# -- schemas ------------------------------------------------------------------------------------------------


def jsonl_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one line of a ``.jsonl`` output (``data/jsonl.schema.json``)."""
    return json.loads(resources.files("attnmesh").joinpath("data/jsonl.schema.json").read_text())


def parquet_schema(num_landmarks: int = 478) -> Any:
    """The ``pyarrow.Schema`` of a ``.parquet`` output with ``num_landmarks`` (478, or 468 with
    ``--no-refine``) landmarks per face. Every column but ``path`` is nullable: the face columns are null on
    a row for an image (frame) without a face, everything but ``path`` and ``error`` on a failure row;
    ``path_bytes`` is null unless the file name is not valid UTF-8 (:func:`path_fields`)."""
    import pyarrow as pa

    f32, f64 = pa.float32(), pa.float64()
    return pa.schema([
        pa.field("path", pa.string(), nullable=False),
        pa.field("frame", pa.int64()),
        pa.field("timestamp", f64),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("face", pa.int32()),
        pa.field("track_id", pa.int64()),
        pa.field("score", f32),
        pa.field("detection_score", f32),
        pa.field("box", pa.list_(f32, 4)),
        pa.field("roi", pa.list_(f32, 4)),
        pa.field("landmarks", pa.list_(f32, num_landmarks * 3)),
        pa.field("pose_pitch", f64),
        pa.field("pose_yaw", f64),
        pa.field("pose_roll", f64),
        pa.field("pose_translation", pa.list_(f64, 3)),
        pa.field("pose_transform", pa.list_(f64, 16)),
        pa.field("error", pa.string()),
        pa.field("path_bytes", pa.binary()),
    ], metadata={"attnmesh.schema": SCHEMA_VERSION, "attnmesh.num_landmarks": str(num_landmarks)})


_SCALAR_COLUMNS = ["path", "frame", "timestamp", "width", "height", "face", "track_id", "score", "detection_score"]


def csv_columns(num_landmarks: int = 478) -> list[str]:
    """The header of a ``.csv`` output."""
    return (_SCALAR_COLUMNS + ["box_x0", "box_y0", "box_x1", "box_y1", "roi_cx", "roi_cy", "roi_size",
                               "roi_rotation", "pose_pitch", "pose_yaw", "pose_roll", "pose_tx", "pose_ty",
                               "pose_tz"]
            + [f"pose_m{i}{j}" for i in range(4) for j in range(4)] + ["error"]
            + [f"{c}{k}" for k in range(num_landmarks) for c in "xyz"] + ["path_bytes"])


def npz_layout(num_records: int, max_faces: int, num_landmarks: int = 478) -> dict[str, tuple[str, tuple]]:
    """Key -> (numpy dtype kind, shape) of a ``.npz`` output with ``num_records`` images (frames), at most
    ``max_faces`` faces in any of them and ``num_landmarks`` landmarks per face. Dtype kinds: ``U`` unicode
    string, ``i`` int, ``f`` float."""
    n, f, k = num_records, max_faces, num_landmarks
    return {
        "schema": ("U", ()),
        "path": ("U", (n,)), "path_bytes": ("U", (n,)), "frame": ("i", (n,)), "timestamp": ("f", (n,)),
        "width": ("i", (n,)), "height": ("i", (n,)), "num_faces": ("i", (n,)), "error": ("U", (n,)),
        "track_id": ("i", (n, f)), "score": ("f", (n, f)), "detection_score": ("f", (n, f)),
        "box": ("f", (n, f, 4)), "roi": ("f", (n, f, 4)), "landmarks": ("f", (n, f, k, 3)),
        "pose_pitch": ("f", (n, f)), "pose_yaw": ("f", (n, f)), "pose_roll": ("f", (n, f)),
        "pose_translation": ("f", (n, f, 3)), "pose_transform": ("f", (n, f, 4, 4)),
    }


# -- flat rows (parquet, csv) -------------------------------------------------------------------------------


def rows(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The flat rows of one record: one per face, one with null face fields when there is none, one with
    ``error`` for a failure. Values are Python scalars, lists, flat float64 arrays (``landmarks``,
    ``pose_transform``), bytes (``path_bytes``) or None (the names of
    :func:`parquet_schema`)."""
    raw = record.get("path_bytes")
    base = {"path": record["path"], "frame": record.get("frame"), "timestamp": record.get("timestamp"),
            "width": record.get("width"), "height": record.get("height"), "error": record.get("error"),
            "path_bytes": None if raw is None else bytes.fromhex(raw)}
    faces = record.get("faces") or [None]
    for index, face in enumerate(faces):
        row = dict(base)
        if face is None:
            yield row
            continue
        pose = face.get("pose")
        row.update({
            "face": index, "track_id": face.get("track_id"), "score": face["score"],
            "detection_score": face["detection_score"], "box": face["box"], "roi": face["roi"],
            "landmarks": np.asarray(face["landmarks"], np.float64).reshape(-1),
        })
        if pose is not None:
            row.update({"pose_pitch": pose["pitch"], "pose_yaw": pose["yaw"], "pose_roll": pose["roll"],
                        "pose_translation": pose["translation"],
                        "pose_transform": np.asarray(pose["transform"], np.float64).reshape(-1)})
        yield row


def arrow_table(rows: list[dict[str, Any]], schema: Any) -> Any:
    """A ``pyarrow.Table`` of ``schema`` (:func:`parquet_schema`) from :func:`rows` output: what
    ``pa.Table.from_pylist(rows, schema=schema)`` gives, built from NumPy buffers. Faster, and it keeps pyarrow
    from importing pandas (about 0.5-0.8 s, where pandas is installed), which any of pyarrow's conversions of
    Python or NumPy values does."""
    import pyarrow as pa

    return pa.Table.from_arrays([_arrow_column([row.get(f.name) for row in rows], f.type) for f in schema],
                                schema=schema)


_NUMPY_TYPES = {"float": np.float32, "double": np.float64, "int32": np.int32, "int64": np.int64}


def _arrow_column(values: list[Any], type_: Any) -> Any:
    """One column: Python scalars, flat lists or arrays (fixed-size list columns), str or bytes, None for null."""
    import pyarrow as pa

    n = len(values)
    present = np.fromiter((v is not None for v in values), bool, n)
    validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    if pa.types.is_fixed_size_list(type_):
        size = type_.list_size
        flat = np.zeros((n, size), _NUMPY_TYPES[str(type_.value_type)])
        for i in np.flatnonzero(present):
            flat[i] = values[i]
        child = pa.Array.from_buffers(type_.value_type, n * size, [None, pa.py_buffer(flat)])
        return pa.Array.from_buffers(type_, n, [validity], children=[child])
    if pa.types.is_string(type_) or pa.types.is_binary(type_):
        data = [b"" if v is None else v.encode("utf-8") if isinstance(v, str) else bytes(v)
                for v in values]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum([len(d) for d in data], out=offsets[1:])
        return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])
    array = np.array([0 if v is None else v for v in values], _NUMPY_TYPES[str(type_)])
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(array)])


# -- writers ------------------------------------------------------------------------------------------------


class OutputError(CliError):
    """A problem with an output file, as one line (the CLI reports it and exits with 1)."""


def output_format(target: str) -> str:
    """``jsonl``, ``parquet``, ``npz`` or ``csv`` from the extension of ``target`` (``-``: jsonl on stdout)."""
    if target == "-":
        return "jsonl"
    suffix = Path(target).suffix.lower()
    if suffix not in FORMATS:
        kinds = ", ".join(FORMATS)
        what = f"unknown output format '{suffix}'" if suffix else "no file extension to choose the format by"
        raise OutputError(f"--out {target}: {what}; use one of {kinds}")
    return FORMATS[suffix]


def check_target(target: str | os.PathLike, what: str = "--out") -> Path:
    """``target`` as a Path after checking, without creating anything, that a file can be put there: it is
    not a folder, and its folder exists (a file standing where a folder of the path should be is named)."""
    path = Path(target)
    if path.is_dir():
        raise OutputError(f"{what} {target}: is a directory; give a file name")
    folder = path.parent
    if not folder.is_dir():
        for above in (folder, *folder.parents):
            if above.exists():
                if not above.is_dir():
                    raise OutputError(f"{what} {target}: '{above}' is a file, not a folder")
                break
        raise OutputError(f"{what} {target}: the folder '{folder}' does not exist")
    return path


def temp_path(target: str | os.PathLike, what: str = "--out") -> str:
    """A new empty temporary file next to ``target`` (same folder, hidden name ``.NAME.XXXX.part.EXT``), after
    checking that the target can be written there (:func:`check_target`)."""
    path = check_target(target, what)
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=folder)
    except OSError as e:
        raise OutputError(f"{what} {target}: cannot write in '{folder}' ({e.strerror or e})") from None
    os.close(fd)
    return tmp


def replace(tmp: str, target: str | os.PathLike, what: str = "--out") -> None:
    """Give ``tmp`` a normal file's mode and rename it over ``target``."""
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
        os.replace(tmp, target)
    except OSError as e:
        remove_quietly(tmp)
        raise OutputError(f"{what} {target}: cannot write the output ({e.strerror or e})") from None


def remove_quietly(path: str | None) -> None:
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends: the CLI turns them into exceptions, which must not
    interrupt the few steps that create or rename a temporary file.

    Python runs signal handlers in the main thread, whichever thread the operating system delivered the signal
    to (a process pool's manager thread, a runtime's worker threads), so masking the signal in this thread
    is not enough: the handlers themselves are swapped for one that notes the signal, and each noted signal
    is raised again, to the restored handler, when the block ends. Outside the main thread no handler can run
    in this thread, and the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda number, _frame: caught.append(number))
    except (AttributeError, ValueError, OSError):  # no such signal here
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


class TempFile:
    """A file written under a temporary name beside ``target`` (:func:`temp_path`) and renamed over it by
    :meth:`commit`; :meth:`discard` removes it. As a context manager it commits when the block ends normally
    and discards on any exception (KeyboardInterrupt and the CLI's termination signal included)::

        with TempFile("report.json", "--out") as tmp:
            Path(tmp.path).write_text(text)
    """

    def __init__(self, target: str | os.PathLike, what: str = "--out") -> None:
        self.target, self.what = target, what
        with _signals_held():  # Ctrl-C or SIGTERM cannot fall between creating the file and owning it
            self.path: str | None = temp_path(target, what)
            # removed when this object goes away uncommitted, even if a signal came before its 'with' block
            self._cleanup = weakref.finalize(self, remove_quietly, self.path)

    def commit(self) -> None:
        if self.path is not None:
            with _signals_held():
                replace(self.path, self.target, self.what)
                self.path = None
                self._cleanup.detach()

    def discard(self) -> None:
        remove_quietly(self.path)
        self.path = None
        self._cleanup.detach()

    def __enter__(self) -> TempFile:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


class Writer:
    """Base of the writers: ``write(record)`` for each record, then ``commit()`` (or ``discard()``)."""

    format = ""

    def __init__(self, target: str, num_landmarks: int = 478) -> None:
        self.target = target
        self.num_landmarks = num_landmarks
        # created as a TempFile: a signal cannot leave it behind between its creation and this object owning it
        self._temp = None if target == "-" else TempFile(target)
        self.tmp: str | None = None if self._temp is None else self._temp.path

    def write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Finish the temporary file (raises OSError on failure)."""

    def commit(self) -> None:
        try:
            self._close()
        except OSError as e:
            self.discard()
            raise OutputError(f"--out {self.target}: cannot write the output ({e.strerror or e})") from None
        if self._temp is not None:
            self._temp.commit()
            self.tmp = None

    def discard(self) -> None:
        try:
            self._abort()
        except Exception:  # noqa: BLE001 - cleaning up after another error
            pass
        if self._temp is not None:
            self._temp.discard()
        self.tmp = None

    def _abort(self) -> None:
        """Close whatever is open without finishing it."""


class JsonlWriter(Writer):
    format = "jsonl"

    def __init__(self, target: str, num_landmarks: int = 478) -> None:
        super().__init__(target, num_landmarks)
        self.file: TextIO = (sys.stdout if self.tmp is None
                             else open(self.tmp, "w", encoding="utf-8", newline="\n"))  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record, separators=(",", ":"), allow_nan=False, default=_json_default) + "\n")

    def _close(self) -> None:
        self.file.flush()
        if self.tmp is not None:
            os.fsync(self.file.fileno())
            self.file.close()

    def _abort(self) -> None:
        if self.tmp is not None:
            self.file.close()


class CsvWriter(Writer):
    format = "csv"

    def __init__(self, target: str, num_landmarks: int = 478) -> None:
        super().__init__(target, num_landmarks)
        self.file: TextIO = (sys.stdout if self.tmp is None
                             else open(self.tmp, "w", encoding="utf-8", newline=""))  # noqa: SIM115
        self.csv = csv.writer(self.file, lineterminator="\n")
        self.columns = csv_columns(num_landmarks)
        self.csv.writerow(self.columns)

    def write(self, record: dict[str, Any]) -> None:
        blank = [""]
        for row in rows(record):
            cells = ["" if row.get(c) is None else row[c] for c in _SCALAR_COLUMNS]
            cells += row.get("box") or blank * 4
            cells += row.get("roi") or blank * 4
            cells += ["" if row.get(c) is None else row[c] for c in ("pose_pitch", "pose_yaw", "pose_roll")]
            cells += row.get("pose_translation") or blank * 3
            cells += _cells(row.get("pose_transform"), 16)
            cells.append(row.get("error") or "")
            cells += _cells(row.get("landmarks"), 3 * self.num_landmarks)
            cells.append("" if row["path_bytes"] is None else row["path_bytes"].hex())
            self.csv.writerow(cells)

    _close = JsonlWriter._close
    _abort = JsonlWriter._abort


def _cells(values: Any, count: int) -> list[Any]:
    """CSV cells of a flat array (``count`` blanks for a null)."""
    return [""] * count if values is None else np.asarray(values).tolist()


class ParquetWriter(Writer):
    """Rows are buffered and written in row groups of :data:`PARQUET_ROWS_PER_GROUP`, zstd-compressed.
    Dictionary encoding only for the text columns: on float columns pyarrow's default tried it on every
    landmark for nothing (2,109 faces: 0.42 s of the main thread's time against 0.08 s, and a 3% larger file)."""

    format = "parquet"

    def __init__(self, target: str, num_landmarks: int = 478) -> None:
        if target == "-":
            raise OutputError("--out -: stdout takes JSON lines only; give a .parquet file name")
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise OutputError("--out .parquet needs pyarrow: pip install pyarrow") from None
        super().__init__(target, num_landmarks)
        self.schema = parquet_schema(num_landmarks)
        text = [f.name for f in self.schema if f.type in (pa.string(), pa.large_string())]
        self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd", use_dictionary=text)
        self.buffer: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.buffer.extend(rows(record))
        if len(self.buffer) >= PARQUET_ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.buffer:
            self.writer.write_table(arrow_table(self.buffer, self.schema))
            self.buffer = []

    def _close(self) -> None:
        self._flush()
        self.writer.close()

    def _abort(self) -> None:
        self.writer.close()


class NpzWriter(Writer):
    """Keeps the records in memory (compactly) and writes the padded arrays at :meth:`commit`."""

    format = "npz"

    def __init__(self, target: str, num_landmarks: int = 478) -> None:
        if target == "-":
            raise OutputError("--out -: stdout takes JSON lines only; give a .npz file name")
        super().__init__(target, num_landmarks)
        self.items: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        faces = []
        for face in record.get("faces") or []:
            pose = face.get("pose")
            faces.append((
                -1 if face.get("track_id") is None else face["track_id"],
                face["score"], np.nan if face["detection_score"] is None else face["detection_score"],
                np.asarray(face["box"], np.float32), np.asarray(face["roi"], np.float32),
                np.asarray(face["landmarks"], np.float32),
                None if pose is None else (pose["pitch"], pose["yaw"], pose["roll"],
                                           np.asarray(pose["translation"]), np.asarray(pose["transform"])),
            ))
        self.items.append({"path": record["path"], "path_bytes": record.get("path_bytes", ""),
                           "frame": record.get("frame", -1), "timestamp": record.get("timestamp", np.nan),
                           "width": record.get("width", -1), "height": record.get("height", -1),
                           "error": record.get("error", ""), "faces": faces})

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self.items)
        f = max((len(it["faces"]) for it in self.items), default=0)
        k = self.num_landmarks
        out: dict[str, np.ndarray] = {
            "schema": np.array(SCHEMA_VERSION),
            "path": np.array([it["path"] for it in self.items], dtype=str).reshape(n),
            "path_bytes": np.array([it["path_bytes"] for it in self.items], dtype=str).reshape(n),
            "frame": np.array([it["frame"] for it in self.items], np.int64).reshape(n),
            "timestamp": np.array([it["timestamp"] for it in self.items], np.float64).reshape(n),
            "width": np.array([it["width"] for it in self.items], np.int32).reshape(n),
            "height": np.array([it["height"] for it in self.items], np.int32).reshape(n),
            "num_faces": np.array([len(it["faces"]) for it in self.items], np.int32).reshape(n),
            "error": np.array([it["error"] for it in self.items], dtype=str).reshape(n),
            "track_id": np.full((n, f), -1, np.int64),
            "score": np.full((n, f), np.nan, np.float32),
            "detection_score": np.full((n, f), np.nan, np.float32),
            "box": np.full((n, f, 4), np.nan, np.float32),
            "roi": np.full((n, f, 4), np.nan, np.float32),
            "landmarks": np.full((n, f, k, 3), np.nan, np.float32),
            "pose_pitch": np.full((n, f), np.nan, np.float64),
            "pose_yaw": np.full((n, f), np.nan, np.float64),
            "pose_roll": np.full((n, f), np.nan, np.float64),
            "pose_translation": np.full((n, f, 3), np.nan, np.float64),
            "pose_transform": np.full((n, f, 4, 4), np.nan, np.float64),
        }
        for i, it in enumerate(self.items):
            for j, (track_id, score, det_score, box, roi, landmarks, pose) in enumerate(it["faces"]):
                out["track_id"][i, j] = track_id
                out["score"][i, j] = score
                out["detection_score"][i, j] = det_score
                out["box"][i, j] = box
                out["roi"][i, j] = roi
                out["landmarks"][i, j] = landmarks
                if pose is not None:
                    (out["pose_pitch"][i, j], out["pose_yaw"][i, j], out["pose_roll"][i, j],
                     out["pose_translation"][i, j], out["pose_transform"][i, j]) = pose
        return out

    def _close(self) -> None:
        with open(self.tmp, "wb") as fh:  # type: ignore[arg-type]
            np.savez_compressed(fh, **self.arrays())
            fh.flush()
            os.fsync(fh.fileno())


WRITERS: dict[str, type[Writer]] = {"jsonl": JsonlWriter, "parquet": ParquetWriter, "npz": NpzWriter,
                                    "csv": CsvWriter}


def open_writer(target: str, num_landmarks: int = 478) -> Writer:
    """The writer for ``target`` by its extension (``-``: JSON lines on stdout). Raises :class:`OutputError`
    for an unknown extension, a folder, a missing or unwritable folder."""
    if target != "-" and Path(target).is_dir():
        raise OutputError(f"--out {target}: is a directory; give a file name, e.g. {Path(target) / 'results.jsonl'}")
    return WRITERS[output_format(target)](target, num_landmarks)
