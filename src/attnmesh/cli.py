"""The ``attnmesh`` command line.

* ``attnmesh demo [--out DIR]``: the shipped astronaut photo -> overlay PNG and landmarks in DIR.
* ``attnmesh images PATH... --out FILE [--render DIR]``: landmarks and head pose of photos and folders.
* ``attnmesh video IN --out FILE [--render OUT.mp4] [--no-smooth]``: the same per frame, in tracking mode,
  stabilised (``--no-smooth``: raw).
* ``attnmesh webcam [--camera 0]``: a live overlay window.

``--out`` takes .jsonl, .parquet, .npz or .csv (:mod:`attnmesh.outputs`, docs/outputs.md).

Each subcommand is a pair of small functions registered in :data:`COMMANDS`: ``add_<name>(subparsers)``
declares its arguments, ``run_<name>(args) -> int`` does the work and returns the exit code. Heavy imports
(torch, the pipeline, tqdm) happen inside the ``run_`` functions, so ``attnmesh --help`` is instant.

Errors: every failure is one line on stderr, ``attnmesh: error: ...``, and a non-zero exit code (2 for bad
arguments, 1 otherwise, 130 when interrupted with Ctrl-C, 143 when terminated with SIGTERM); never a
traceback, unless ``--debug`` is given or the ``ATTNMESH_DEBUG`` environment variable is set (to anything but
``0``), which re-raises for developers. An output that would overwrite an input is refused (exit code 2)
before any work; outputs are written under temporary names and renamed when complete, and the temporary files
are removed on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .apps.commands import add_makeup, add_puppet, run_makeup, run_puppet
from .options import BACKENDS
from .registry import get_model_spec, list_models, model_names
from .topology import NUM_MESH_LANDMARKS
from .cli_args import (PROG, CliError, InputFiles, _nonnegative_float, _positive_int, _unit_float, face_mesh,
                       print_error, refuse_same_output, say)
from .ray import RAY_WORKERS_HELP, add_engine_options, ray_engine
from .train.commands import add_eval, add_train, run_eval, run_train


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: usage problems raise :class:`CliError` (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{message} (see '{self.prog} --help')", code=2)


def _error(message: str) -> None:
    print_error(message)


def _debug_env() -> bool:
    return os.environ.get("ATTNMESH_DEBUG", "") not in ("", "0")


# -- argument types -----------------------------------------------------------------------------------------


# -- shared options -----------------------------------------------------------------------------------------

OUT_HELP = ("output file; the format follows the extension: .jsonl (JSON lines), .parquet, .npz, .csv "
            "(see docs/outputs.md); written to a temporary name and renamed when done")


def _add_model_options(p: argparse.ArgumentParser, max_faces: int) -> None:
    p.add_argument("--max-faces", type=_positive_int, default=max_faces, metavar="N",
                   help=f"most faces per image (default: {max_faces})")
    p.add_argument("--no-refine", action="store_true",
                   help="468 landmarks from the base mesh model instead of 478 from the Attention Mesh")
    p.add_argument("--min-detection-confidence", type=_unit_float, default=0.5, metavar="X",
                   help="face detector score threshold in [0, 1] (default: 0.5)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps... (default: cpu)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="inference backend (default: auto = OpenVINO on CPU, torch on other devices)")
    p.add_argument("--model", choices=model_names(), default="attention_mesh", metavar="MODEL",
                   help="landmark model, a registered name (default: attention_mesh): "
                        + "; ".join(f"{name}: {get_model_spec(name).summary}" for name in list_models())
                        + " (aliases: attention, transformer)")


def _open_writer(target: str, args: argparse.Namespace) -> Any:
    from .outputs import open_writer

    return open_writer(target, num_landmarks(args))  # OutputError: one line, exit code 1


def num_landmarks(args: argparse.Namespace) -> int:
    """Landmarks per face that the command's options give (468 with --no-refine or the base mesh)."""
    spec = get_model_spec(getattr(args, "model", "attention_mesh"))
    return NUM_MESH_LANDMARKS if args.no_refine and spec.name == "attention_mesh" else spec.num_landmarks


def _commit(*writers: Any) -> None:
    for w in writers:
        if w is not None:
            w.commit()


def _discard(*writers: Any) -> None:
    for w in writers:
        if w is not None:
            w.discard()


def _say(message: str, bar: Any = None) -> None:
    say(message, bar)


def _faces_word(n: int) -> str:
    return f"{n} face{'s' * (n != 1)}"


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
    _add_model_options(p, max_faces=5)
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="images per detector/mesh pass in each worker (default: 8)")
    p.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                   help="worker processes, each decoding and processing its own batches with one CPU thread "
                        "(default: the CPUs this process may use; 1 on the torch backend); with "
                        "--engine ray: " + RAY_WORKERS_HELP)
    add_engine_options(p, workers=False)
    return p


def _extensions() -> str:
    return "jpg/jpeg/png/bmp/webp/tif/tiff"  # kept in step with attnmesh.io.IMAGE_EXTENSIONS (not imported: fast --help)


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

        from .outputs import TempFile
        from .render import draw_face_mesh

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


def image_records(fm: Any, loaded: Sequence[tuple[Any, Any]],
                  args: argparse.Namespace) -> list[tuple[Any, dict, Any, Any]]:
    """The output records of one batch of images, in order: ``loaded`` holds (path, RGB uint8 image or the
    :class:`attnmesh.io.ImageError` that loading it raised) per input; the result (path, record, image, faces)
    per input, where a failure's record is :func:`attnmesh.outputs.error_record` (image and faces None) and a
    success's is :func:`attnmesh.outputs.image_record` with its faces (:class:`attnmesh.Face`). One detector
    and mesh pass for the batch (``_process``). Shared by ``attnmesh images`` and :mod:`attnmesh.ray`."""
    from .io import ImageError
    from .outputs import error_record, face_record, image_record

    good = [im for _, im in loaded if not isinstance(im, ImageError)]
    results = dict(zip((id(im) for im in good), _process(fm, good, args)))
    out: list[tuple[Any, dict, Any, Any]] = []
    for path, im in loaded:
        if isinstance(im, ImageError):
            out.append((path, error_record(path, im.problem), None, None))
            continue
        faces = results[id(im)]
        if isinstance(faces, BaseException):
            out.append((path, error_record(path, f"internal error: {type(faces).__name__}: {faces}"), None, None))
            continue
        size = (int(im.shape[1]), int(im.shape[0]))
        try:
            record = image_record(path, *size, [face_record(f, size) for f in faces])
        except ValueError as e:
            if args.debug:
                raise
            out.append((path, error_record(path, f"internal error: {e}"), None, None))
            continue
        out.append((path, record, im, faces))
    return out


def run_images(args: argparse.Namespace) -> int:
    on_ray = ray_engine(args, "images")
    if on_ray is not None:
        return on_ray(args)
    from .io import iter_image_paths

    paths = list(iter_image_paths(args.paths))
    if not paths:
        raise CliError("no image files found in " + ", ".join(args.paths)
                       + f" (looked for {_extensions()})")
    inputs = InputFiles(paths)
    inputs.refuse("--out", args.out)
    overlays = _Overlays(args.render, args.paths, args.pose_axes, paths, inputs) if args.render else None
    out = _open_writer(args.out, args)  # before loading the models: a bad --out fails at once
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
                    _say(f"{PROG}: error: {path}: {record['error']}", bar)
                elif overlays is not None:
                    overlays.write(path, im, faces)
                n_faces += len(faces or ())
                bar.update(1)
        _commit(out)
    except BaseException:
        _discard(out)
        raise
    where = "stdout" if args.out == "-" else args.out
    rendered = f" (overlays in {args.render})" if args.render else ""
    say(f"{PROG}: {len(paths)} image{'s' * (len(paths) != 1)}, {_faces_word(n_faces)}, "
        f"{n_failed} failed -> {where}{rendered}")
    return 1 if n_failed else 0


# -- video --------------------------------------------------------------------------------------------------

VIDEO_RENDER_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi")


def add_video(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "video", parents=[common], help="face landmarks for every frame of a video (tracking mode)",
        description="Track faces through a video (the detector runs only while fewer than --max-faces faces "
                    "are tracked) and write their landmarks and head pose per frame, with the frame index and "
                    "its timestamp in the container. One record per frame (JSON lines) or per frame x face "
                    "(Parquet, CSV).")
    p.add_argument("input", nargs="+", metavar="IN",
                   help="video file (anything FFmpeg reads: mp4, mov, mkv, avi, webm...); several with --engine ray")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help=OUT_HELP + "; '-': JSON lines on stdout")
    p.add_argument("--render", metavar="OUT.mp4",
                   help="also write the video with the meshes drawn (" + ", ".join(VIDEO_RENDER_EXTENSIONS) + ")")
    p.add_argument("--pose-axes", action="store_true", help="draw the head-pose axes in --render")
    p.add_argument("--no-smooth", action="store_true",
                   help="raw per-frame landmarks, as MediaPipe's FaceMesh (default: each tracked face is "
                        "stabilised, head pose and expression filtered apart: about half MediaPipe's jitter, "
                        "under a frame of lag; outputs, pose and overlay use the stabilised landmarks)")
    p.add_argument("--smooth", action="store_true", help="accepted for compatibility: smoothing is the default")
    p.add_argument("--smooth-beta", type=_nonnegative_float, default=None, metavar="B",
                   help="smooth with MediaPipe's one-euro filter instead, with this beta (MediaPipe's: 80); "
                        "lower smooths more and lags more")
    _add_model_options(p, max_faces=1)
    p.add_argument("--min-tracking-confidence", type=_unit_float, default=0.5, metavar="X",
                   help="face presence below which a tracked face is dropped (default: 0.5)")
    p.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                   help="stop after the first N frames")
    add_engine_options(p, video=True)
    return p


class _VideoRender:
    """``--render OUT.mp4``: H.264 (libx264) when PyAV has it, else MPEG-4 part 2; written to a temporary
    name and renamed by :meth:`commit`."""

    def __init__(self, target: str, width: int, height: int, rate: Any, pose_axes: bool) -> None:
        import av

        from .outputs import temp_path

        self.target, self.pose_axes = target, pose_axes
        self.tmp: str | None = temp_path(target, "--render")
        self.width, self.height = width + width % 2, height + height % 2  # yuv420p needs even sizes
        self.container = av.open(self.tmp, mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "20", "preset": "veryfast"}
        else:
            self.stream.bit_rate = 8_000_000
        self.count = 0

    def write(self, image: Any, faces: Sequence[Any]) -> None:
        import av
        import numpy as np

        from .render import draw_face_mesh

        overlay = draw_face_mesh(image, faces, pose_axes=self.pose_axes)
        if overlay.shape[:2] != (self.height, self.width):
            overlay = np.pad(overlay, ((0, self.height - overlay.shape[0]), (0, self.width - overlay.shape[1]),
                                       (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(overlay, format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def commit(self) -> None:
        from .outputs import replace

        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
        except Exception as e:  # noqa: BLE001
            self.discard()
            raise CliError(f"--render {self.target}: cannot write the video ({e})") from None
        replace(self.tmp, self.target, "--render")  # type: ignore[arg-type]
        self.tmp = None

    def discard(self) -> None:
        from .outputs import remove_quietly

        if self.tmp is None:
            return
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - cleaning up after another error
            pass
        remove_quietly(self.tmp)
        self.tmp = None


def run_video(args: argparse.Namespace) -> int:
    from .video_reader import VideoReader

    on_ray = ray_engine(args, "video")
    if on_ray is not None:
        return on_ray(args)
    if isinstance(args.input, list):
        if len(args.input) > 1:
            raise CliError(f"{len(args.input)} videos given: one at a time, or all with --engine ray", code=2)
        args.input = args.input[0]
    if args.render is not None:
        suffix = Path(args.render).suffix.lower()
        if suffix not in VIDEO_RENDER_EXTENSIONS:
            raise CliError(f"--render {args.render}: give a video file name ending in "
                           + ", ".join(VIDEO_RENDER_EXTENSIONS))
    refuse_same_output(("--out", args.out), ("--render", args.render))
    inputs = InputFiles([args.input])
    inputs.refuse("--out", args.out)
    inputs.refuse("--render", args.render)
    video = VideoReader(args.input)
    out = render = None
    try:
        out = _open_writer(args.out, args)
        from tqdm import tqdm

        from .outputs import face_record, frame_record
        from .pipeline.smoothing import MultiFaceSmoother
        from .pipeline.stabilizer import MultiFaceStabilizer

        if args.smooth_beta is not None and (args.smooth_beta < 0 or args.no_smooth):
            raise CliError("--smooth-beta must be >= 0" if args.smooth_beta < 0 else
                           "--smooth-beta and --no-smooth contradict each other")
        fm = _face_mesh(args, static=False)
        smoother: Any = None if args.no_smooth else MultiFaceStabilizer()
        if args.smooth_beta is not None:
            smoother = MultiFaceSmoother(beta=args.smooth_beta)
        total = video.declared_frames or None
        if total and args.max_frames:
            total = min(total, args.max_frames)
        bar = tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True,
                   disable=not sys.stderr.isatty())
        n_frames = n_faces = n_with_face = 0
        last_time = 0.0
        with bar:
            for index, timestamp, image in video.frames(args.max_frames):
                height, width = image.shape[:2]
                if render is None and args.render is not None:
                    render = _VideoRender(args.render, width, height, video.rate, args.pose_axes)
                faces = fm.process(image)
                smoothed: list[Any] = [None] * len(faces)
                if smoother is not None:
                    keys = [f.track_id if getattr(f, "track_id", None) is not None else i
                            for i, f in enumerate(faces)]
                    result = smoother(dict(zip(keys, (f.landmarks for f in faces))), timestamp)
                    smoothed = [result[k] for k in keys]
                records = [face_record(f, (width, height), lm, video=True) for f, lm in zip(faces, smoothed)]
                out.write(frame_record(args.input, index, timestamp, width, height, records))
                if render is not None:
                    import dataclasses

                    shown = [f if lm is None else dataclasses.replace(f, landmarks=lm)
                             for f, lm in zip(faces, smoothed)]
                    render.write(image, shown)
                n_frames += 1
                n_faces += len(faces)
                n_with_face += bool(faces)
                last_time = timestamp
                bar.update(1)
        problem = video.finish()
        _commit(out, render)
    except BaseException:
        _discard(out, render)
        raise
    finally:
        video.close()
    where = "stdout" if args.out == "-" else args.out
    rendered = f" and {args.render}" if args.render else ""
    say(f"{PROG}: {n_frames} frame{'s' * (n_frames != 1)} ({last_time:.2f} s), {_faces_word(n_faces)} in "
        f"{n_with_face} frame{'s' * (n_with_face != 1)}{', smoothed' if smoother is not None else ''} -> "
        f"{where}{rendered}")
    if problem is not None:
        _error(problem)
        return 1
    return 0


# -- webcam -------------------------------------------------------------------------------------------------


def add_webcam(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "webcam", parents=[common], help="live face mesh overlay from a camera (needs a display)",
        description="Show the camera's picture with the face meshes drawn, in a window (OpenCV highgui). "
                    "Keys: q or Esc quits, m toggles mirroring, a toggles the head-pose axes.")
    p.add_argument("--camera", type=int, default=0, metavar="N", help="camera index (default: 0)")
    p.add_argument("--no-smooth", action="store_true",
                   help="show the raw landmarks (default: stabilised, head pose and expression filtered apart)")
    p.add_argument("--no-mirror", action="store_true", help="show the picture as the camera sees it "
                                                              "(default: mirrored, like a mirror)")
    p.add_argument("--pose-axes", action="store_true", help="draw the head-pose axes")
    _add_model_options(p, max_faces=1)
    return p


def _gui_problem(cv2: Any) -> str | None:
    """Why OpenCV cannot open a window here, or None."""
    gui = "UNKNOWN"
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip().upper()
            break
    if gui == "NONE":
        return ("this OpenCV build has no GUI (opencv-python-headless), so it cannot open a window; "
                "install the GUI build: pip uninstall -y opencv-python-headless && pip install 'opencv-python<5'")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return ("no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set); run it in a "
                "desktop session, or record a clip and use 'attnmesh video CLIP --render OUT.mp4'")
    return None


def run_webcam(args: argparse.Namespace) -> int:
    import cv2

    problem = _gui_problem(cv2)
    if problem:
        raise CliError(f"webcam: {problem}")
    capture = cv2.VideoCapture(args.camera)
    if not capture.isOpened():
        raise CliError(f"webcam: cannot open camera {args.camera} (no camera, no permission, or in use by "
                       "another program; try --camera 1)")
    import time

    from .pipeline.stabilizer import MultiFaceStabilizer
    from .render import draw_face_mesh

    window = f"{PROG} webcam (q to quit)"
    try:
        fm = _face_mesh(args, static=False)
        try:
            cv2.namedWindow(window, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise CliError(f"webcam: cannot open a window ({' '.join(str(e).split())[:200]})") from None
        smoother = None if args.no_smooth else MultiFaceStabilizer()
        mirror, axes = not args.no_mirror, args.pose_axes
        start, shown, fps, last = time.perf_counter(), 0, 0.0, None
        while True:
            ok, bgr = capture.read()
            if not ok:
                if shown == 0:
                    raise CliError(f"webcam: camera {args.camera} gives no pictures")
                break
            if mirror:
                bgr = cv2.flip(bgr, 1)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            now = time.perf_counter() - start
            faces = fm.process(rgb)
            if smoother is not None:
                import dataclasses

                keys = [f.track_id if getattr(f, "track_id", None) is not None else i for i, f in enumerate(faces)]
                result = smoother(dict(zip(keys, (f.landmarks for f in faces))), now)
                faces = [dataclasses.replace(f, landmarks=result[k]) for f, k in zip(faces, keys)]
            view = cv2.cvtColor(draw_face_mesh(rgb, faces, pose_axes=axes), cv2.COLOR_RGB2BGR)
            shown += 1
            if last is not None:
                fps = 0.9 * fps + 0.1 / max(1e-6, now - last) if fps else 1 / max(1e-6, now - last)
            last = now
            cv2.putText(view, f"{fps:4.1f} fps  {len(faces)} face(s)", (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                        (255, 255, 255), 1, cv2.LINE_AA)
            cv2.imshow(window, view)
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                break
            if key == ord("m"):
                mirror = not mirror
                fm.reset()
            if key == ord("a"):
                axes = not axes
            if cv2.getWindowProperty(window, cv2.WND_PROP_VISIBLE) < 1:  # closed with the mouse
                break
    finally:
        capture.release()
        try:
            cv2.destroyAllWindows()
        except cv2.error:
            pass
    return 0


# -- demo ---------------------------------------------------------------------------------------------------

DEMO_PHOTO = "astronaut.png"


def add_demo(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo", parents=[common], help="run on the photo that ships with attnmesh; writes an overlay and landmarks",
        description="Find the face in the NASA astronaut portrait shipped with the package (public domain) and "
                    "write the overlay PNG and the landmarks (JSON lines) into a folder.")
    p.add_argument("--out", "-o", default="attnmesh-demo", metavar="DIR",
                   help="folder for the results, created if needed (default: ./attnmesh-demo)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p


def run_demo(args: argparse.Namespace) -> int:
    from importlib import resources

    folder = Path(args.out)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--out {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"--out {folder}: cannot create the folder ({e.strerror or e})") from None
    with resources.as_file(resources.files("attnmesh").joinpath("assets", DEMO_PHOTO)) as photo:
        landmarks = folder / (Path(DEMO_PHOTO).stem + ".jsonl")
        job = argparse.Namespace(paths=[str(photo)], out=str(landmarks), render=str(folder), pose_axes=True,
                                 max_faces=5, no_refine=False, min_detection_confidence=0.5, device=args.device,
                                 batch_size=1, debug=args.debug)
        code = run_images(job)
    overlay = folder / DEMO_PHOTO
    print(f"{PROG}: demo: overlay  -> {overlay}\n{PROG}: demo: landmarks -> {landmarks}\n"
          f"{PROG}: demo: next: attnmesh images YOUR_PHOTOS --out faces.parquet --render overlays/",
          flush=True)
    return code


def _face_mesh(args: argparse.Namespace, static: bool = True, num_threads: int | None = None) -> Any:
    return face_mesh(args, static_image_mode=static, max_num_faces=args.max_faces,
                     refine_landmarks=not args.no_refine, min_detection_confidence=args.min_detection_confidence,
                     min_tracking_confidence=getattr(args, "min_tracking_confidence", 0.5),
                     backend=getattr(args, "backend", "auto"), model=getattr(args, "model", "attention_mesh"),
                     num_threads=num_threads)


def _image_results(paths: Sequence[Path], args: argparse.Namespace) -> Iterator[tuple[Path, dict, Any, Any]]:
    """:func:`image_records` of every path, in order: ``(path, record, image, faces)`` (``image`` is None
    unless ``--render`` needs it).

    Chunks of ``args.batch_size`` images (default 8: one detector pass, then one mesh pass over all their
    faces) go to ``args.workers`` worker processes (default: the CPUs this process may use; 1 on the torch
    backend), each with its own :class:`FaceMesh` on one CPU thread: the Python around the networks then
    runs in parallel too, which threads in one process could not do (two threads reached about 1.1 cores).
    Each image's faces are what a lone ``FaceMesh`` gives it: no result depends on the number of workers or
    on the batch size."""
    from .runtime import default_threads, device_type

    on_torch = getattr(args, "backend", "auto") == "torch" or device_type(args.device) != "cpu"
    workers = getattr(args, "workers", None) or (1 if on_torch else default_threads())
    batch = args.batch_size or IMAGES_BATCH
    chunks = [list(paths[i:i + batch]) for i in range(0, len(paths), batch)]
    workers = min(workers, len(chunks))
    keep_images = bool(getattr(args, "render", None))
    if workers <= 1:
        fm = _face_mesh(args, num_threads=None if on_torch else default_threads())
        for chunk in chunks:
            yield from _chunk_results(fm, chunk, args, keep_images)
        return
    yield from _pooled_results(chunks, args, workers, 1 if not on_torch else max(1, default_threads() // workers),
                               keep_images)


IMAGES_BATCH = 8
"""Default images per detector/mesh pass of ``attnmesh images`` (OpenVINO's mesh graph costs about 40% less
per face in batches of 4-8 than one by one; results are the same to the bit)."""


def _chunk_results(fm: Any, chunk: Sequence[Path], args: argparse.Namespace,
                   keep_images: bool) -> list[tuple[Path, dict, Any, Any]]:
    from .io import ImageError, load_image

    loaded: list[tuple[Path, Any]] = []
    for path in chunk:
        try:
            loaded.append((path, load_image(path)))
        except ImageError as e:
            loaded.append((path, e))
    return [(path, record, image if keep_images else None, faces)
            for path, record, image, faces in image_records(fm, loaded, args)]


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
    _show_library_notes()  # e.g. a graph being built on first use (each worker builds what it lacks)
    _Worker.args = args
    try:
        _Worker.face_mesh = _face_mesh(args, num_threads=threads)
    except CliError as e:
        _Worker.problem = _SetupProblem(str(e), e.code)
    except Exception as e:  # --debug re-raises inside _face_mesh: keep its traceback in the message
        import traceback

        _Worker.problem = _SetupProblem(traceback.format_exc().rstrip() if args.debug else
                                        f"cannot set up the face mesh: {type(e).__name__}: {e}", 1)


def _worker_chunk(chunk: Sequence[Path], keep_images: bool) -> list[tuple[Path, dict, Any, Any]] | _SetupProblem:
    if _Worker.problem is not None:
        return _Worker.problem
    return _chunk_results(_Worker.face_mesh, chunk, _Worker.args, keep_images)


def _process(fm: Any, images: list[Any], args: argparse.Namespace) -> list[Any]:
    """Faces per image; one batch pass, or image by image if the batch fails (then a failing image gets
    its exception in place of its faces, and the others still get results)."""
    if not images:
        return []
    try:
        return fm.process_batch(images)
    except Exception:
        if args.debug:
            raise
    results: list[Any] = []
    for im in images:
        try:
            results.append(fm.process_batch([im])[0])
        except Exception as e:  # noqa: PERF203 - one bad image must not stop the run
            results.append(e)
    return results


# -- main ---------------------------------------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that the same clean-up runs
    (temporary files removed, previous outputs kept)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not cut the clean-up short
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_raises() -> Any:
    """While a command runs, SIGTERM raises :class:`_Terminated` (the default would kill the process on the
    spot and leave its temporary files behind)."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM on this platform
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

#: subcommand name -> (add_parser, run).

COMMANDS: dict[str, tuple[Callable[..., argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {
    "demo": (add_demo, run_demo),
    "images": (add_images, run_images),
    "video": (add_video, run_video),
    "webcam": (add_webcam, run_webcam),
    "makeup": (add_makeup, run_makeup),
    "puppet": (add_puppet, run_puppet),
    "eval": (add_eval, run_eval),
    "train": (add_train, run_train),
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's absent --debug must not overwrite one given before the subcommand
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks (also: ATTNMESH_DEBUG=1)")
    parser = _Parser(prog=PROG, description="Attention Mesh face landmarks (478 points) in PyTorch.",
                     parents=[common])
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add, run in COMMANDS.values():
        add(sub, common).set_defaults(run=run)
    return parser


def _show_library_notes() -> None:
    """The library's INFO notes (e.g. a model graph being built on first use) as ``attnmesh: ...`` lines on
    stderr, once per process."""
    import logging

    logger = logging.getLogger("attnmesh")
    if not any(getattr(h, "attnmesh_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
        handler.attnmesh_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_env() or "--debug" in argv
    _show_library_notes()
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version
            return e.code if isinstance(e.code, int) else 0
        args.debug = debug or getattr(args, "debug", False)
        if getattr(args, "run", None) is None:
            raise CliError(f"no command given; choose one of: {', '.join(COMMANDS)} (see '{PROG} --help')", 2)
        with _sigterm_raises():
            return int(args.run(args))
    except CliError as e:
        if debug:
            raise
        _error(str(e))
        return e.code
    except KeyboardInterrupt:
        if debug:
            raise
        _error("interrupted")
        return 130
    except _Terminated:
        if debug:
            raise
        _error("terminated (SIGTERM)")
        return 143
    except BrokenPipeError:
        # output piped into a program that stopped reading (e.g. `head`): nothing more to say
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush at exit
        except OSError:
            pass
        return 1
    except MemoryError:
        if debug:
            raise
        _error("out of memory (try a smaller --batch-size)")
        return 1
    except Exception as e:
        if debug:
            raise
        detail = str(e).strip()
        _error(f"{type(e).__name__}{': ' + detail if detail else ''} (run with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
