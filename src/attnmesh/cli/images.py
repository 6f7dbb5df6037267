"""``attnmesh images PATH... --out FILE [--render DIR]``: landmarks and head pose of photos and folders,
decoded and run in worker threads (worker processes on PyTorch), a batch of images per detector and mesh pass."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CliError
from ..io import IMAGE_EXTENSIONS
from ..io.records import image_records
from .common import (OUT_HELP, PROG, RAY_WORKERS_HELP, InputFiles, add_model_options, commit_all, discard_all,
                     command_face_mesh, faces_word, open_writer_for, positive_int, show_library_notes,
                     add_engine_options, check_local_engine, say)

# -- images -------------------------------------------------------------------------------------------------


def add_images(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "images", parents=[common], help="face landmarks for photos and folders of photos",
        description="Find faces and their 478 (or 468) landmarks and head pose in images. Folders are searched "
                    "recursively for " + _extensions() + " files. One record per image (JSON lines) or per "
                    "image x face (Parquet, CSV).")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files and/or folders (--engine ray: also .txt/.parquet lists of paths, URIs)")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help=OUT_HELP + "; '-': JSON lines on stdout")
    p.add_argument("--render", metavar="DIR",
                   help="also write an overlay PNG per image into DIR (created if needed), under the image's "
                        "name (relative to the folder it was found in)")
    p.add_argument("--pose-axes", action="store_true", help="draw the head-pose axes on the overlays")
    add_model_options(p, max_faces=5)
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                   help="images per detector/mesh pass in each worker (default: 8)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="workers, each decoding and processing its own batches with one CPU thread (threads; "
                        "processes on the torch backend; default: the CPUs this process may use, 1 on the torch "
                        "backend); with "
                        "--engine ray: " + RAY_WORKERS_HELP)
    add_engine_options(p, workers=False)
    return p


def _extensions() -> str:
    return "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)


class _Overlays:
    """Overlay PNGs for ``--render DIR``: ``DIR/<name relative to its folder argument>`` with the extension
    replaced by ``.png`` (``name.ext.png``, then ``name-2.png``... when two inputs would share a name).

    The names of all overlays are planned before any work, and refused (exit code 2) when DIR is one of the
    input folders or inside one (the next run would read the overlays as photos, and overwrite them) or when
    an overlay would overwrite an input file. :meth:`create` then makes the folder."""

    def __init__(self, folder: str, roots: Sequence[str], pose_axes: bool, paths: Sequence[Path],
                 inputs: InputFiles) -> None:
        self.folder = Path(folder)
        self.roots = [Path(r) for r in roots if Path(r).is_dir()]
        self.pose_axes = pose_axes
        self.used: set[str] = set()
        if self.folder.exists() and not self.folder.is_dir():
            raise CliError(f"--render {folder}: exists and is not a folder")
        real = os.path.realpath(folder)
        for root in self.roots:
            root_real = os.path.realpath(root)
            if os.path.commonpath([real, root_real]) == root_real:
                where = "is the input folder" if real == root_real else "is inside the input folder"
                raise CliError(f"--render {folder}: {where} {root}; the overlays would be read as photos by the next "
                               "run, and overwrite input photos; choose a folder outside it", 2)
        self.targets = {path: self.name(path) for path in paths}
        for path, target in self.targets.items():
            hit = inputs.find(target)
            if hit is not None:
                raise CliError(f"--render {folder}: the overlay of {path} would overwrite the input {hit}; choose "
                               "another folder", 2)

    def create(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"--render {self.folder}: cannot create the folder ({e.strerror or e})") from None

    def name(self, path: Path) -> Path:
        rel = Path(path.name)
        for root in self.roots:
            try:
                rel = path.relative_to(root)
                break
            except ValueError:
                continue
        rel = Path(*[part for part in rel.parts if part not in ("..", "/")]) if rel.parts else Path("image")
        candidates = [rel.with_suffix(".png"), rel.with_name(rel.name + ".png")]
        candidates += [rel.with_name(f"{rel.stem}-{i}.png") for i in range(2, 10_000)]
        for c in candidates:
            key = os.path.normcase(str(c))
            if key not in self.used:
                self.used.add(key)
                return self.folder / c
        raise CliError(f"--render: too many images named {rel}")

    def write(self, path: Path, image: Any, faces: Sequence[Any]) -> Path:
        import cv2

        from ..io.outputs import TempFile
        from ..render import draw_face_mesh

        target = self.targets[path]
        target.parent.mkdir(parents=True, exist_ok=True)
        overlay = draw_face_mesh(image, faces, pose_axes=self.pose_axes)
        ok, data = cv2.imencode(".png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
        if not ok:
            raise CliError(f"--render: cannot encode the overlay of {path}")
        with TempFile(target, "--render") as tmp:
            try:
                Path(tmp.path).write_bytes(data.tobytes())  # type: ignore[arg-type]
            except OSError as e:
                raise CliError(f"--render {target}: cannot write ({e.strerror or e})") from None
        return target



def run_images(args: argparse.Namespace) -> int:
    check_local_engine(args, "images")
    from ..io import iter_image_paths

    paths = list(iter_image_paths(args.paths))
    if not paths:
        raise CliError("no image files found in " + ", ".join(args.paths)
                       + f" (looked for {_extensions()})")
    inputs = InputFiles(paths)
    inputs.refuse("--out", args.out)
    overlays = _Overlays(args.render, args.paths, args.pose_axes, paths, inputs) if args.render else None
    out = open_writer_for(args.out, args)  # before loading the models: a bad --out fails at once
    try:
        if overlays is not None:
            overlays.create()
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="img", file=sys.stderr, dynamic_ncols=True,
                   disable=len(paths) < 2 or not sys.stderr.isatty())
        n_faces = n_failed = 0
        with bar:
            for path, record, im, faces in _image_results(paths, args):
                out.write(record)
                if "error" in record:
                    n_failed += 1
                    say(f"{PROG}: error: {path}: {record['error']}", bar)
                elif overlays is not None:
                    overlays.write(path, im, faces)
                n_faces += len(record.get("faces") or ())
                bar.update(1)
        commit_all(out)
    except BaseException:
        discard_all(out)
        raise
    where = "stdout" if args.out == "-" else args.out
    rendered = f" (overlays in {args.render})" if args.render else ""
    say(f"{PROG}: {len(paths)} image{'s' * (len(paths) != 1)}, {faces_word(n_faces)}, "
        f"{n_failed} failed -> {where}{rendered}")
    return 1 if n_failed else 0




def _image_results(paths: Sequence[Path], args: argparse.Namespace) -> Iterator[tuple[Path, dict, Any, Any]]:
    """:func:`image_records` of every path, in order: ``(path, record, image, faces)`` (``image`` and ``faces``
    are None unless ``--render`` needs them).

    Chunks of at most ``args.batch_size`` images (:func:`even_chunks`; default 8: one detector pass, then one
    mesh pass over all their faces) go to ``args.workers`` workers (default: the CPUs this process may use; 1 on the torch backend),
    each running its networks on one CPU thread: threads sharing one :class:`FaceMesh` on OpenVINO and ONNX
    Runtime (the networks, decoding and warps release the GIL), worker processes with a FaceMesh each on
    PyTorch. Each image's faces are what a lone ``FaceMesh`` gives it: no result depends on the number of workers or
    on the batch size."""
    from ..runtime import available_cpus, device_type

    on_torch = getattr(args, "backend", "auto") == "torch" or device_type(args.device) != "cpu"
    workers = getattr(args, "workers", None) or (1 if on_torch else available_cpus())
    batch = args.batch_size or IMAGES_BATCH
    chunks = even_chunks(paths, batch)
    workers = min(workers, len(chunks))
    keep_images = bool(getattr(args, "render", None))
    if workers <= 1:
        fm = command_face_mesh(args, num_threads=None if on_torch else threads_in_one_process())
        for chunk in chunks:
            yield from _chunk_results(fm, chunk, args, keep_images)
        return
    if not on_torch:  # OpenVINO and ONNX Runtime release the GIL, as do decoding and the warps
        fm, problem = _set_up(args, 1)
        if problem is not None:
            raise CliError(problem.message, problem.code)
        yield from _threaded_results(fm, chunks, args, workers, keep_images)
        return
    yield from _pooled_results(chunks, args, workers, max(1, available_cpus() // workers), keep_images)


def _threaded_results(fm: Any, chunks: Sequence[list[Path]], args: argparse.Namespace, workers: int,
                      keep_images: bool) -> Iterator[tuple[Path, dict, Any, Any]]:
    """``_chunk_results`` of each chunk in ``workers`` threads sharing ``fm`` (one network thread each), in
    order, at most two chunks per thread in flight. In one process rather than ``workers`` processes: no second
    interpreter, no second compilation of the graphs, no results pickled back (on 2,012 300-W photos, 2 CPUs:
    1.5-2.5 s less CPU, 3-7% less wall time than two processes; the same output to the bit)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(workers, thread_name_prefix="attnmesh-images")
    try:
        window = 2 * workers
        pending = [pool.submit(_chunk_results, fm, c, args, keep_images) for c in chunks[:window]]
        for k in range(len(chunks)):
            done = pending.pop(0)
            if k + window < len(chunks):
                pending.append(pool.submit(_chunk_results, fm, chunks[k + window], args, keep_images))
            yield from done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def threads_in_one_process() -> int:
    """Network threads when one process does all the work (``--workers 1``, or one chunk): ``$ATTNMESH_THREADS``
    if set, else every CPU (batches of 8 images give each layer enough work to share)."""
    from ..runtime import available_cpus, env_threads

    return env_threads() or available_cpus()


def even_chunks(paths: Sequence[Path], batch: int) -> list[list[Path]]:
    """``paths`` in order, in as few chunks of at most ``batch`` as possible, of sizes that differ by at most
    one (2,012 photos in batches of 8: 248 of 8 and 4 of 7, not 251 of 8 and a last one of 4). A short last
    chunk ran its detector one image at a time, which cost the process a compile of the batch-1 detector
    graph (0.25-0.35 s, at the very end) for four images."""
    count = -(-len(paths) // batch)
    size, extra = divmod(len(paths), count) if count else (0, 0)
    chunks, start = [], 0
    for k in range(count):
        end = start + size + (k < extra)
        chunks.append(list(paths[start:end]))
        start = end
    return chunks


IMAGES_BATCH = 8
"""Default images per detector/mesh pass of ``attnmesh images`` (OpenVINO's mesh graph costs about 40% less
per face in batches of 4-8 than one by one; results are the same to the bit)."""


def _chunk_results(fm: Any, chunk: Sequence[Path], args: argparse.Namespace,
                   keep_images: bool) -> list[tuple[Path, dict, Any, Any]]:
    from ..io import ImageError, load_image

    loaded: list[tuple[Path, Any]] = []
    for path in chunk:
        try:
            loaded.append((path, load_image(path)))
        except ImageError as e:
            loaded.append((path, e))
    # images and Face objects go back to the parent only for --render: the records hold what the output needs
    return [(path, record, image, faces) if keep_images else (path, record, None, None)
            for path, record, image, faces in image_records(fm, loaded, args.debug)]


def _pooled_results(chunks: Sequence[list[Path]], args: argparse.Namespace, workers: int, threads: int,
                    keep_images: bool) -> Iterator[tuple[Path, dict, Any, Any]]:
    """``_chunk_results`` of each chunk in ``workers`` spawned processes, in order, at most two chunks per
    worker in flight (memory stays flat however many images there are). A worker that cannot set up its
    FaceMesh (a bad option, unusable weights) answers with the problem, raised here as :class:`CliError`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(args, threads))
    try:
        window = 2 * workers
        pending = [pool.submit(_worker_chunk, c, keep_images) for c in chunks[:window]]
        for k in range(len(chunks)):
            done = pending.pop(0)
            if k + window < len(chunks):
                pending.append(pool.submit(_worker_chunk, chunks[k + window], keep_images))
            result = done.result()
            if isinstance(result, _SetupProblem):
                raise CliError(result.message, result.code)
            yield from result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class _SetupProblem:
    """Why a worker process has no FaceMesh: the one-line message and exit code of the CliError it got."""

    message: str
    code: int


class _Worker:
    """The FaceMesh of an ``attnmesh images`` worker process (set by :func:`_worker_start`), or why not."""

    face_mesh: Any = None
    args: argparse.Namespace | None = None
    problem: _SetupProblem | None = None


def _worker_start(args: argparse.Namespace, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops the pool)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    show_library_notes()  # e.g. a graph being built on first use (each worker builds what it lacks)
    _Worker.args = args
    _Worker.face_mesh, _Worker.problem = _set_up(args, threads)


def _set_up(args: argparse.Namespace, threads: int) -> tuple[Any, _SetupProblem | None]:
    """The FaceMesh of the workers, or why there is none (the one-line message and exit code)."""
    try:
        return command_face_mesh(args, num_threads=threads), None
    except CliError as e:
        return None, _SetupProblem(str(e), e.code)
    except Exception as e:  # --debug re-raises inside command_face_mesh: keep its traceback in the message
        import traceback

        return None, _SetupProblem(traceback.format_exc().rstrip() if args.debug else
                                   f"cannot set up the face mesh: {type(e).__name__}: {e}", 1)


def _worker_chunk(chunk: Sequence[Path], keep_images: bool) -> list[tuple[Path, dict, Any, Any]] | _SetupProblem:
    if _Worker.problem is not None:
        return _Worker.problem
    return _chunk_results(_Worker.face_mesh, chunk, _Worker.args, keep_images)

