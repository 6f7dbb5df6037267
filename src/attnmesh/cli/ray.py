"""``--engine ray`` of ``attnmesh images`` and ``attnmesh video``: the inputs cut into shards, one Ray Data task
per shard writing ``DIR/part-<index>-<digest>.parquet`` (resumable; see :mod:`attnmesh.ray` and docs/cluster.md).
Nothing here imports Ray at import time."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import CliError
from ..ray import FaceMeshPredictor, is_uri
from .common import PROG, SHARD_SIZE

__all__ = ["run_images_ray", "run_video_ray", "expand_sources", "video_table", "command_options"]



#: File name suffixes of SRC arguments read as lists of paths (one per line) rather than as images.
LIST_SUFFIXES = (".txt", ".lst")

#: Seconds between progress lines when stderr is not a terminal (no progress bar then).
PROGRESS_EVERY_S = 30.0

_SHARD = re.compile(r"^part-(\d{6})-([0-9a-f]{16})\.parquet$")

#: Parsed arguments that name inputs and outputs or choose the engine: not passed on to the workers' commands.
_IO_KEYS = ("run", "command", "paths", "input", "out", "render", "pose_axes", "engine", "address", "workers",
            "shard_size", "debug")
#: Options that change speed or placement, never the rows: left out of the shards' digests. Every other
#: option is in them, so that an option added to the commands later can only make a rerun refuse to mix.
_RUN_KEYS = ("device", "backend", "batch_size")


# -- command line -------------------------------------------------------------------------------------------



def run_images_ray(args: argparse.Namespace) -> int:
    """``attnmesh images SRC... --out DIR --engine ray``: see the module docstring."""
    _check_ray_args(args, "images")
    paths = expand_sources(args.paths)
    if not paths:
        raise CliError("no image files found in " + ", ".join(args.paths) + " (looked for "
                       + "/".join(e[1:] for e in _image_extensions()) + ")")
    folder = _OutFolder(args.out)
    size = args.shard_size or SHARD_SIZE
    options = {k: v for k, v in command_options(args).items() if k not in _RUN_KEYS}
    plan = [(_shard_name(i, paths[s:s + size], options), paths[s:s + size])
            for i, s in enumerate(range(0, len(paths), size))]
    todo = folder.todo(plan)
    if todo:
        kwargs = {"out": folder.uri, "root": os.getcwd(),
                  "options": {"max_faces": args.max_faces, "refine_landmarks": not args.no_refine,
                              "min_detection_confidence": args.min_detection_confidence, "device": args.device,
                              "backend": args.backend, "model": args.model,
                              "batch_size": args.batch_size or (8 if args.backend == "torch" else 1)}}
        items = [{"shard": name, "paths": chunk} for name, chunk in todo]
        _execute(args, items, sum(len(c) for _, c in todo), "img", _ImageShards, kwargs)
    return folder.summarize(plan, {name for name, _ in todo}, video=False)


def run_video_ray(args: argparse.Namespace) -> int:
    """``attnmesh video A.mp4 B.mp4... --out DIR --engine ray``: one task per video, rows as ``video --out
    x.parquet`` gives for each (a video that cannot be read is one row with ``error``; a damaged one keeps
    its decoded frames plus such a row)."""
    _check_ray_args(args, "video")
    videos = _once(_expand_lists(args.input if isinstance(args.input, list) else [args.input]))
    if not videos:
        raise CliError("no videos given (the list files are empty)")
    folder = _OutFolder(args.out)
    options = command_options(args)
    digest = {k: v for k, v in options.items() if k not in _RUN_KEYS}
    plan = [(_shard_name(i, [v], digest), [v]) for i, v in enumerate(videos)]
    todo = folder.todo(plan)
    if todo:
        kwargs = {"out": folder.uri, "root": os.getcwd(),
                  "options": options}
        items = [{"shard": name, "paths": chunk} for name, chunk in todo]
        _execute(args, items, len(todo), "video", _video_shards, kwargs)
    return folder.summarize(plan, {name for name, _ in todo}, video=True)


def _once(paths: Sequence[str]) -> list[str]:
    """``paths`` as given, each file once (a repeated one would repeat its rows), as iter_image_paths does."""
    out, seen = [], set()
    for p in paths:
        key = p if is_uri(p) else os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def command_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a parsed ``images`` or ``video`` command line that its local run takes for every input
    (model, thresholds, tracking, smoothing, frames...): all of them but the inputs, outputs and engine."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in _IO_KEYS}


def _check_ray_args(args: argparse.Namespace, command: str) -> None:
    if getattr(args, "render", None):
        raise CliError(f"--render: not available with --engine ray (overlays are written by the local engine: "
                       f"attnmesh {command} ... --out FILE --render ...)", code=2)
    out = str(args.out)
    if out == "-":
        raise CliError("--out -: --engine ray writes a folder of Parquet shards; give --out DIR", code=2)
    suffix = Path(out).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".npz", ".csv"):
        raise CliError(f"--out {out}: --engine ray writes a folder of Parquet shards, not a {suffix} file; "
                       "give a folder name", code=2)


def _image_extensions() -> tuple[str, ...]:
    from ..io import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def _shard_name(index: int, paths: Sequence[str], options: Mapping[str, Any]) -> str:
    """``part-<index>-<digest>.parquet``: the digest of the shard's sorted paths and the options that change
    its rows, so that the same command names the same shards and other inputs or options name others."""
    key = json.dumps({"paths": sorted(paths), "options": dict(sorted(options.items()))}, separators=(",", ":"),
                     default=str)
    return f"part-{index:06d}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.parquet"


# -- inputs -------------------------------------------------------------------------------------------------


def expand_sources(sources: Sequence[str]) -> list[str]:
    """The image paths named by ``sources``, in order, each once: files as given, folders searched
    recursively as :func:`attnmesh.io.iter_image_paths` does (so the same paths and order as ``attnmesh
    images``), ``.txt`` / ``.lst`` files read as one path per line (blank lines and ``#`` comments skipped)
    and ``.parquet`` files as their ``path`` column, entries expanded in turn. URIs (``s3://...``) are
    listed through ``pyarrow.fs``. Raises :class:`CliError` for an unreadable list."""
    from ..io import iter_image_paths

    found: list[str] = []
    for item in _expand_lists(sources):
        found.extend(_list_uri(item) if is_uri(item) else (str(p) for p in iter_image_paths([item])))
    return _once(found)


def _expand_lists(sources: Sequence[str]) -> list[str]:
    """``sources`` with every list file (.txt, .lst, .parquet) replaced by the paths it holds."""
    out: list[str] = []
    for src in map(str, sources):
        suffix = Path(src.split("?", 1)[0]).suffix.lower()
        if suffix in LIST_SUFFIXES or suffix == ".parquet":
            out.extend(_read_list(src, parquet=suffix == ".parquet"))
        else:
            out.append(src)
    return out


def _read_list(src: str, parquet: bool) -> list[str]:
    import pyarrow.fs as pafs

    try:
        fs, where = pafs.FileSystem.from_uri(src) if is_uri(src) else (pafs.LocalFileSystem(), os.path.abspath(src))
        info = fs.get_file_info(where)
        if info.type == pafs.FileType.NotFound:
            raise CliError(f"{src}: no such file or directory")
        if info.type == pafs.FileType.Directory:
            raise CliError(f"{src}: is a directory; a list of paths is a .txt or .parquet file")
        if parquet:
            import pyarrow.parquet as pq

            schema = pq.read_schema(where, filesystem=fs)
            if "path" not in schema.names:
                raise CliError(f"{src}: a .parquet list of inputs needs a 'path' column (it has: "
                               f"{', '.join(schema.names)})")
            return [p for p in pq.read_table(where, columns=["path"], filesystem=fs).column("path").to_pylist()
                    if p]
        with fs.open_input_stream(where) as f:
            text = f.read().decode("utf-8")
    except CliError:
        raise
    except UnicodeDecodeError:
        raise CliError(f"{src}: not a text list of paths (not UTF-8)") from None
    except Exception as e:  # noqa: BLE001 - pyarrow's OSError / ArrowInvalid carry the reason
        raise CliError(f"{src}: cannot read the list of inputs ({' '.join(str(e).split())})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _list_uri(uri: str) -> list[str]:
    """A URI as image inputs: a file as given, a folder's image files (recursive, sorted, hidden names
    skipped) as URIs of the same form (scheme, host, query such as ``?endpoint_override=``), a missing
    object as given (the worker reports it)."""
    import pyarrow.fs as pafs

    try:
        fs, where = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(where)
        if info.type != pafs.FileType.Directory:
            return [uri]
        base, _, query = uri.partition("?")
        base, where = base.rstrip("/"), where.rstrip("/")
        files = []
        for f in fs.get_file_info(pafs.FileSelector(where, recursive=True)):
            rel = f.path[len(where):].lstrip("/")
            if (f.type == pafs.FileType.File and not any(part.startswith(".") for part in rel.split("/"))
                    and os.path.splitext(rel)[1].lower() in _image_extensions()):
                files.append((tuple(rel.split("/")), f"{base}/{rel}" + (f"?{query}" if query else "")))
        return [u for _, u in sorted(files)]
    except Exception as e:  # noqa: BLE001
        raise CliError(f"{uri}: cannot list it ({' '.join(str(e).split())})") from None


# -- output folder ------------------------------------------------------------------------------------------


def _filesystem(target: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path in it) of a local folder or a URI."""
    import pyarrow.fs as pafs

    if is_uri(target):
        return pafs.FileSystem.from_uri(target)
    return pafs.LocalFileSystem(), os.path.abspath(target)


def _write_shard(fs: Any, base: str, name: str, table: Any) -> None:
    """Write ``table`` as ``base/name``: to a hidden temporary name, then renamed (an object store's upload
    is atomic the same way), so a shard is either complete or absent."""
    import uuid

    import pyarrow.parquet as pq

    from ..io.outputs import PARQUET_ROWS_PER_GROUP

    tmp = f"{base}/.{name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        pq.write_table(table, tmp, filesystem=fs, compression="zstd", row_group_size=PARQUET_ROWS_PER_GROUP)
        fs.move(tmp, f"{base}/{name}")
    except BaseException:
        try:
            fs.delete_file(tmp)
        except Exception:  # noqa: BLE001 - cleaning up after another error
            pass
        raise


class _OutFolder:
    """The ``--out`` folder of a Ray run (local path or URI): created if needed; which shards it holds."""

    def __init__(self, target: str) -> None:
        import pyarrow.fs as pafs

        self.display = str(target)
        try:
            self.fs, self.base = _filesystem(self.display)
            info = self.fs.get_file_info(self.base)
            if info.type == pafs.FileType.File:
                raise CliError(f"--out {target}: exists and is not a folder (--engine ray writes a folder of "
                               "Parquet shards)")
            self.fs.create_dir(self.base, recursive=True)
            listing = self.fs.get_file_info(pafs.FileSelector(self.base))
        except CliError:
            raise
        except Exception as e:  # noqa: BLE001 - OSError, ArrowInvalid (bad URI), missing credentials...
            raise CliError(f"--out {target}: cannot use it as the output folder ({' '.join(str(e).split())})") from None
        self.uri = self.display if is_uri(self.display) else self.base
        self.shards = {os.path.basename(f.path) for f in listing if _SHARD.match(os.path.basename(f.path))}
        for f in listing:  # temporaries of writes that were interrupted
            name = os.path.basename(f.path)
            if name.startswith(".part-") and name.endswith(".tmp"):
                try:
                    self.fs.delete_file(f.path)
                except Exception:  # noqa: BLE001
                    pass

    def todo(self, plan: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, Sequence[str]]]:
        """The shards of ``plan`` not in the folder yet; CliError if it holds shards that are not in ``plan``."""
        planned = {name for name, _ in plan}
        foreign = sorted(self.shards - planned)
        if foreign:
            raise CliError(f"--out {self.display}: holds {len(foreign)} shard{'s' * (len(foreign) != 1)} of other "
                           f"inputs or options (e.g. {foreign[0]}); rerun with the inputs, --shard-size and "
                           "options that wrote them, or give a new folder")
        return [(name, paths) for name, paths in plan if name not in self.shards]

    def summarize(self, plan: Sequence[tuple[str, Sequence[str]]], written: set[str], video: bool) -> int:
        """Check that every shard of ``plan`` is there, print the failures of shards from earlier runs and the
        summary line (counted from the shards); exit code 1 if any input failed."""
        import pyarrow.dataset as pads
        import pyarrow.fs as pafs

        names = [name for name, _ in plan]
        infos = self.fs.get_file_info([f"{self.base}/{n}" for n in names])
        missing = [n for n, info in zip(names, infos) if info.type != pafs.FileType.File]
        if missing:
            raise CliError(f"--out {self.display}: {len(missing)} shard(s) missing after the run (e.g. {missing[0]})")
        columns = ["path", "frame", "face", "error"]
        table = pads.dataset([f"{self.base}/{n}" for n in names], filesystem=self.fs,
                             format="parquet").to_table(columns=columns)
        sources = table.column("path").to_pylist()
        frames, faces, errors = (table.column(c).to_pylist() for c in columns[1:])
        old_rows = _rows_of_old_shards(self, names, written)
        for i in old_rows:
            if errors[i] is not None:
                print(f"{PROG}: error: {sources[i]}: {errors[i]}", file=sys.stderr, flush=True)
        n_inputs = sum(len(paths) for _, paths in plan)
        n_faces = sum(f is not None for f in faces)
        failed = len({p for p, e in zip(sources, errors) if e is not None})
        where = (f"{self.display} ({len(names)} shard{'s' * (len(names) != 1)}: {len(written)} written now, "
                 f"{len(names) - len(written)} already there)")
        if video:
            n_frames = len({(p, f) for p, f in zip(sources, frames) if f is not None})
            with_face = len({(p, f) for p, f, k in zip(sources, frames, faces) if f is not None and k is not None})
            print(f"{PROG}: {n_inputs} video{'s' * (n_inputs != 1)}, {n_frames} frame{'s' * (n_frames != 1)}, "
                  f"{n_faces} face{'s' * (n_faces != 1)} in {with_face} frame{'s' * (with_face != 1)}, {failed} "
                  f"failed -> {where}", file=sys.stderr, flush=True)
        else:
            print(f"{PROG}: {n_inputs} image{'s' * (n_inputs != 1)}, {n_faces} face{'s' * (n_faces != 1)}, "
                  f"{failed} failed -> {where}", file=sys.stderr, flush=True)
        return 1 if failed else 0


def _rows_of_old_shards(folder: _OutFolder, names: Sequence[str], written: set[str]) -> list[int]:
    """Row indices (in the dataset of ``names``) of the shards not written by this run."""
    import pyarrow.parquet as pq

    out, start = [], 0
    for name in names:
        n = pq.ParquetFile(f"{folder.base}/{name}", filesystem=folder.fs).metadata.num_rows
        if name not in written:
            out.extend(range(start, start + n))
        start += n
    return out


# -- workers ------------------------------------------------------------------------------------------------


def _summary(name: str, table: Any, inputs: int) -> dict[str, Any]:
    """What a worker returns to the driver for one written shard (small: never the rows themselves)."""
    paths, errors = table.column("path").to_pylist(), table.column("error").to_pylist()
    return {"shard": name, "inputs": inputs, "faces": len(table) - table.column("face").null_count,
            "errors": [f"{p}: {e}" for p, e in zip(paths, errors) if e is not None], "pid": os.getpid()}


def _summary_table(summaries: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(summaries, schema=pa.schema([
        ("shard", pa.string()), ("inputs", pa.int64()), ("faces", pa.int64()), ("errors", pa.list_(pa.string())),
        ("pid", pa.int64())]))


class _ImageShards:
    """Ray Data actor of ``images --engine ray``: each row ``{"shard", "paths"}`` -> the shard's rows by a
    :class:`FaceMeshPredictor` (built once per actor), written to the output folder; returns summaries."""

    def __init__(self, out: str, root: str, options: dict[str, Any]) -> None:
        self.predictor = FaceMeshPredictor(**options, root=root)
        self.fs, self.base = _filesystem(out)

    def __call__(self, batch: Any) -> Any:
        summaries = []
        for name, paths in zip(_column(batch, "shard"), _column(batch, "paths")):
            paths = [str(p) for p in paths]
            table = self.predictor({"path": paths})
            _write_shard(self.fs, self.base, name, table)
            summaries.append(_summary(name, table, len(paths)))
        return _summary_table(summaries)


def _video_shards(batch: Any, out: str, root: str, options: dict[str, Any]) -> Any:
    """Ray Data task of ``video --engine ray``: each row ``{"shard", "paths": [video]}`` -> the video's rows
    by ``attnmesh video --out x.parquet`` itself (:func:`attnmesh.cli.video.run_video`), written to the output
    folder; returns summaries."""
    fs, base = _filesystem(out)
    summaries = []
    for name, paths in zip(_column(batch, "shard"), _column(batch, "paths")):
        video = str(list(paths)[0])
        table = video_table(video, options, root)
        _write_shard(fs, base, name, table)
        summaries.append(_summary(name, table, 1))
    return _summary_table(summaries)


def video_table(video: str, options: Mapping[str, Any], root: str | None = None) -> Any:
    """The rows of ``attnmesh video VIDEO --out x.parquet`` with ``options`` (:func:`command_options` of the
    parsed command line) as a ``pyarrow.Table``, ``path`` as given. A video that cannot be read
    is one row with ``error``; a damaged one keeps the frames decoded plus one such row (frame null)."""
    import contextlib
    import io
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..io.outputs import error_record, parquet_schema, rows
    from .common import num_landmarks
    from .video import run_video

    schema = parquet_schema(num_landmarks(argparse.Namespace(no_refine=bool(options.get("no_refine")),
                                                             model=options.get("model", "attention_mesh"))))
    problem = None
    with tempfile.TemporaryDirectory(prefix="attnmesh-video-") as tmp:
        if is_uri(video):
            source = os.path.join(tmp, "input" + os.path.splitext(video)[1])
            try:
                import pyarrow.fs as pafs

                fs, where = pafs.FileSystem.from_uri(video)
                with fs.open_input_stream(where) as src, open(source, "wb") as dst:
                    while chunk := src.read(1 << 22):
                        dst.write(chunk)
            except Exception as e:  # noqa: BLE001 - missing object, no permission...: the video's error row
                problem = f"cannot read the file ({' '.join(str(e).split())})"
        else:
            source = video if root is None else os.path.join(root, video)
        target = os.path.join(tmp, "frames.parquet")
        if problem is None:
            job = argparse.Namespace(**options, input=source, out=target, render=None, pose_axes=False,
                                     debug=False)
            messages = io.StringIO()
            try:
                with contextlib.redirect_stderr(messages):
                    code = run_video(job)
                if code != 0:
                    lines = [ln for ln in messages.getvalue().splitlines() if ln.startswith(f"{PROG}: error: ")]
                    problem = lines[-1][len(f"{PROG}: error: "):] if lines else f"exit code {code}"
            except CliError as e:
                problem = str(e)
            except Exception as e:  # noqa: BLE001 - as the local engine, an internal error is the video's error
                problem = f"internal error: {type(e).__name__}: {e}"
            if problem is not None and problem.startswith(f"{source}: "):
                problem = problem[len(source) + 2:]
        table = pq.read_table(target).cast(schema) if os.path.exists(target) else schema.empty_table()
    table = table.set_column(0, schema.field("path"), pa.array([video] * len(table), pa.string()))
    if problem is not None:
        table = pa.concat_tables([table, pa.Table.from_pylist(list(rows(error_record(video, problem))),
                                                              schema=schema)])
    return table


def _column(batch: Any, name: str) -> list[Any]:
    if hasattr(batch, "to_pydict"):
        return batch.column(name).to_pylist()
    return list(batch[name])


# -- driver -------------------------------------------------------------------------------------------------


@contextmanager
def _ray_session(args: argparse.Namespace) -> Iterator[Any]:
    """Ray connected for the run: ``ray.init(address=...)`` with ``--address``, else with ``$RAY_ADDRESS`` (set
    by ``ray job submit`` and on KubeRay's RayJob), else a local Ray started for the run (with at least
    ``--workers`` CPUs); shut down (disconnected) afterwards."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise CliError("--engine ray needs Ray Data: pip install 'attnmesh[ray]' (or: pip install 'ray[data]')"
                       ) from None
    import logging

    address = args.address or os.environ.get("RAY_ADDRESS") or None
    what = "--address" if args.address else "RAY_ADDRESS"
    try:
        if address is None:
            ray.init(num_cpus=max(os.cpu_count() or 1, args.workers or 1), include_dashboard=False,
                     logging_level=logging.WARNING)
        else:
            _check_listening(address, what)
            ray.init(address=address, logging_level=logging.WARNING)
    except CliError:
        raise
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError with the reason
        where = f"join the Ray cluster at {what} {address}" if address else "start a local Ray"
        raise CliError(f"--engine ray: cannot {where} ({' '.join(str(e).split())[:300]})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_listening(address: str, what: str = "--address", timeout_s: float = 10.0) -> None:
    """CliError unless something accepts a TCP connection at ``address`` (``host:port``, ``ray://host:port``;
    ``auto`` and other forms are left to Ray): Ray itself keeps retrying an address where nothing listens."""
    import socket

    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise CliError(f"{what} {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                       "'ray start --head' or give the head node's address") from None


def _execute(args: argparse.Namespace, items: list[dict[str, Any]], total: int, unit: str, udf: Any,
             kwargs: dict[str, Any]) -> None:
    """Run ``udf`` over ``items`` (one Ray Data block and task each) and show the progress as shards finish."""
    import logging

    with _ray_session(args) as ray:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        workers = args.workers or max(1, cpus)
        if workers > cpus:
            raise CliError(f"--workers {workers}: the Ray cluster has {cpus} CPU{'s' * (cpus != 1)} and each "
                           "worker takes one", code=2)
        workers = min(workers, len(items))
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows one bar over inputs below
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
        gpus = 1 if str(getattr(args, "device", "cpu")).startswith("cuda") else 0
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        common = {"batch_size": 1, "num_cpus": 1, "num_gpus": gpus}
        # Fault tolerance is Ray Data's: a dead actor is restarted and its task retried, a dead task worker's
        # task retried (Ray's max_retries); the shards written are complete files, so a retry rewrites one.
        if isinstance(udf, type):
            ds = ds.map_batches(udf, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=workers),
                                **common)
        else:
            ds = ds.map_batches(udf, fn_kwargs=kwargs, compute=ray.data.TaskPoolStrategy(size=workers), **common)
        progress = _Progress(total, len(items), unit, workers)
        try:
            with progress:
                for row in ds.iter_rows():
                    for line in row["errors"]:
                        progress.say(f"{PROG}: error: {' '.join(str(line).split())}")
                    progress.update(int(row["inputs"]))
        except (CliError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - a task that failed after its retries
            cause = getattr(e, "cause", None) or e
            detail = " ".join(str(cause).split())
            raise CliError(f"the Ray job failed ({type(cause).__name__}: {detail[:400]}); the shards already in "
                           f"--out are kept and a rerun resumes") from None


class _Progress:
    """A tqdm bar over inputs on a terminal; otherwise a line every :data:`PROGRESS_EVERY_S` seconds."""

    def __init__(self, total: int, shards: int, unit: str, workers: int) -> None:
        from tqdm import tqdm

        self.tty = sys.stderr.isatty()
        self.total, self.done, self.shards, self.unit = total, 0, shards, unit
        self.words = {"img": "image"}.get(unit, unit)
        self.start = self.last = time.monotonic()
        print(f"{PROG}: {total} {self.words}{'s' * (total != 1)} in {shards} shard{'s' * (shards != 1)} to do, "
              f"{workers} Ray worker{'s' * (workers != 1)}", file=sys.stderr, flush=True)
        self.bar = tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=not self.tty)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()

    def say(self, message: str) -> None:
        if self.tty:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if not self.tty and (now - self.last >= PROGRESS_EVERY_S or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            print(f"{PROG}: {self.done}/{self.total} {self.words}s, {rate:.2f}/s", file=sys.stderr, flush=True)
