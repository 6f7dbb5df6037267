"""Command-line entry points of the applications, in the conventions of :mod:`attnmesh.cli` (register them
in its ``COMMANDS`` table)::

    "makeup": (add_makeup, run_makeup),
    "puppet": (add_puppet, run_puppet),

``attnmesh makeup IN --lipstick COLOR [--opacity 0.6] [--gloss 0] --out OUT``: an image (png/jpg/...) or a
video (mp4/avi/mov/mkv/webm -> mp4) with lipstick on every face. Video uses tracking and landmark
stabilisation (:mod:`attnmesh.pipeline.stabilizer`; ``--no-smooth`` to turn it off).

``attnmesh puppet VIDEO --out coeffs.(jsonl|parquet) [--render avatar.mp4] [--method lsq|net] [--no-smooth]``:
per-frame blendshape coefficients of the (first) face (stabilised landmarks unless ``--no-smooth``), with the
head pose; ``--render`` writes the canonical face
deformed by the coefficients (and turned by the head pose) as a shaded, wireframe mesh. One JSON line per
frame: ``{"frame", "timestamp", "face", "pitch", "yaw", "roll", "coefficients": {name: value}}`` (``face``
false and the rest null where no face was found); Parquet: the same with one float32 column per coefficient.

Videos are read with :class:`attnmesh.video_reader.VideoReader`, as ``attnmesh video`` reads them: the same
one-line refusals of unusable files, and a damaged or truncated video is reported in the same words (the
outputs then hold the frames that could be read, and the exit code is 1). An output that would overwrite the
input is refused before any work. Outputs are written under a temporary name in the target's folder (created
once the input is open) and renamed when complete; failures are one line ``attnmesh: error: ...`` (exit code
1; 2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cli_args import PROG, CliError, InputFiles, _positive_int, _unit_float, face_mesh, print_error, say

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _color(text: str) -> tuple[int, int, int]:
    from .lipstick import parse_color  # light: no torch

    try:
        return parse_color(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _common(common: argparse.ArgumentParser | None) -> list[argparse.ArgumentParser]:
    return [common] if common is not None else []


# -- output files ---------------------------------------------------------------------------------------------


def _check_target(target: str, what: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output name with the wrong extension (exit code 2) or that cannot be written (exit code 1),
    without creating anything yet."""
    from ..outputs import check_target

    if Path(target).suffix.lower() not in suffixes:
        raise CliError(f"{what} {target}: the file name must end in one of {', '.join(suffixes)}", 2)
    check_target(target, what)


def _frames_word(n: int) -> str:
    return f"{n} frame{'s' * (n != 1)}"


def _bar(total: int, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total or None, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not sys.stderr.isatty())


def _video_writer(path: str | None, fps: float, size: tuple[int, int]) -> Any:
    import cv2

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise CliError(f"cannot open a video writer for {path}")
    return writer


# -- makeup -------------------------------------------------------------------------------------------------


def add_makeup(sub: argparse._SubParsersAction, common: argparse.ArgumentParser | None = None
               ) -> argparse.ArgumentParser:
    from .lipstick import COLORS

    p = sub.add_parser(
        "makeup", parents=_common(common), help="virtual lipstick on a photo or a video",
        description="Paint lipstick on every face of a photo or a video (recoloured in CIELAB, keeping the "
                    "lips' shading; teeth and the open mouth stay untouched).")
    p.add_argument("input", metavar="IN", help="photo (" + "/".join(e[1:] for e in IMAGE_EXTENSIONS)
                   + ") or video (" + "/".join(e[1:] for e in VIDEO_EXTENSIONS) + ")")
    p.add_argument("--lipstick", required=True, type=_color, metavar="COLOR",
                   help="#RRGGBB or one of: " + ", ".join(sorted(COLORS)))
    p.add_argument("--opacity", type=_unit_float, default=0.6, metavar="X", help="in [0, 1] (default: 0.6)")
    p.add_argument("--gloss", type=_unit_float, default=0.0, metavar="X",
                   help="highlight gloss in [0, 1] (default: 0)")
    p.add_argument("--out", "-o", required=True, metavar="OUT",
                   help="output image (same kinds as IN) or video (.mp4); written to a temporary name, "
                        "renamed when done")
    p.add_argument("--max-faces", type=_positive_int, default=5, metavar="N", help="most faces (default: 5)")
    p.add_argument("--no-smooth", action="store_true",
                   help="video: raw landmarks (default: stabilised, head pose and expression filtered apart)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p


def run_makeup(args: argparse.Namespace) -> int:
    suffix = Path(args.input).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return _makeup_video(args)
    if suffix not in IMAGE_EXTENSIONS:
        raise CliError(f"{args.input}: not a photo or video file name (expected one of "
                       f"{', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})", 2)
    import cv2

    from ..io import ImageError, load_image
    from ..outputs import TempFile
    from .lipstick import apply_lipstick

    _check_target(args.out, "--out", IMAGE_EXTENSIONS)
    InputFiles([args.input]).refuse("--out", args.out)
    try:
        image = load_image(args.input)
    except ImageError as e:
        raise CliError(f"{args.input}: {e.problem}") from None
    with face_mesh(args, static_image_mode=True, max_num_faces=args.max_faces, refine_landmarks=True) as fm:
        faces = fm.process(image)
    result = apply_lipstick(image, faces, args.lipstick, args.opacity, args.gloss)
    with TempFile(args.out, "--out") as out:
        if not cv2.imwrite(out.path, cv2.cvtColor(result, cv2.COLOR_RGB2BGR)):
            raise CliError(f"--out {args.out}: cannot encode the image")
    say(f"{PROG}: {len(faces)} face{'s' * (len(faces) != 1)} -> {args.out}")
    return 0


def _makeup_video(args: argparse.Namespace) -> int:
    import cv2

    from ..outputs import TempFile
    from ..pipeline.stabilizer import MultiFaceStabilizer
    from ..video_reader import VideoReader
    from .lipstick import apply_lipstick

    _check_target(args.out, "--out", (".mp4",))
    InputFiles([args.input]).refuse("--out", args.out)
    video = VideoReader(args.input, image_hint="for lipstick on a photo, give it a photo extension such as .jpg")
    out = writer = None
    frames = with_faces = 0
    try:
        out = TempFile(args.out, "--out")  # only once the input is open
        fps = float(video.rate)
        smoother = MultiFaceStabilizer()
        with face_mesh(args, static_image_mode=False, max_num_faces=args.max_faces, refine_landmarks=True) as fm, \
                _bar(video.declared_frames, "frame") as bar:
            for i, _, frame in video.frames():
                if writer is None:
                    writer = _video_writer(out.path, fps, (frame.shape[1], frame.shape[0]))
                faces = fm.process(frame)
                landmarks = [f.landmarks for f in faces]
                if not args.no_smooth:
                    smoothed = smoother({f.track_id: f.landmarks for f in faces}, i / fps)
                    landmarks = [smoothed[f.track_id] for f in faces]
                result = apply_lipstick(frame, landmarks, args.lipstick, args.opacity, args.gloss) if landmarks \
                    else frame
                writer.write(cv2.cvtColor(result, cv2.COLOR_RGB2BGR))
                frames += 1
                with_faces += bool(faces)
                bar.update(1)
        problem = video.finish()
        writer.release()
        writer = None
        out.commit()
    except BaseException:
        if writer is not None:
            writer.release()
        if out is not None:
            out.discard()
        raise
    finally:
        video.close()
    say(f"{PROG}: {_frames_word(frames)}, {with_faces} with faces -> {args.out}")
    if problem is not None:
        print_error(problem)
        return 1
    return 0


# -- puppet -------------------------------------------------------------------------------------------------


def add_puppet(sub: argparse._SubParsersAction, common: argparse.ArgumentParser | None = None
               ) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "puppet", parents=_common(common), help="blendshape coefficients (and an avatar) from a face video",
        description="Per-frame blendshape coefficients (10 mouth, 7 per eye) of the first face of a video, "
                    "with the head pose, and optionally an avatar video driven by them.")
    p.add_argument("video", metavar="VIDEO", help="input video")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="coefficients: .jsonl or .parquet")
    p.add_argument("--render", metavar="AVATAR.mp4", help="also render the canonical face driven by them")
    p.add_argument("--method", choices=("lsq", "net"), default="lsq",
                   help="bounded least squares (default) or the distilled network")
    p.add_argument("--device", default="cpu", help="torch device for the face mesh (default: cpu)")
    p.add_argument("--no-smooth", action="store_true",
                   help="raw landmarks (default: stabilised, head pose and expression filtered apart)")
    return p


def run_puppet(args: argparse.Namespace) -> int:
    import numpy as np

    from ..cli_args import refuse_same_output
    from ..geometry.face_geometry import estimate_face_geometry
    from ..outputs import TempFile
    from ..pipeline.stabilizer import LandmarkStabilizer
    from ..video_reader import VideoReader
    from .blendshapes import BLENDSHAPE_NAMES, BlendshapeSolver, deform, estimate_neutral, metric_landmarks

    _check_target(args.out, "--out", (".jsonl", ".parquet"))
    if args.render:
        _check_target(args.render, "--render", (".mp4",))
    refuse_same_output(("--out", args.out), ("--render", args.render))
    inputs = InputFiles([args.video])
    inputs.refuse("--out", args.out)
    inputs.refuse("--render", args.render)
    video = VideoReader(args.video, image_hint="puppet needs a video of a face")
    out = render = None
    try:
        out = TempFile(args.out, "--out")  # only once the input is open
        render = TempFile(args.render, "--render") if args.render else None
        fps = float(video.rate)
        metrics: list[Any] = []
        poses: list[Any] = []
        smoother = None if args.no_smooth else LandmarkStabilizer()
        with face_mesh(args, static_image_mode=False, max_num_faces=1, refine_landmarks=True) as fm, \
                _bar(video.declared_frames, "frame") as bar:
            for i, _, frame in video.frames():
                size = (frame.shape[1], frame.shape[0])
                faces = fm.process(frame)
                lm = faces[0].landmarks if faces else None
                if smoother is not None:
                    lm = smoother(lm, i / fps)
                m = pose = None
                if lm is not None:
                    try:
                        m = metric_landmarks(lm, size)
                        pose = estimate_face_geometry(lm, size)
                    except ValueError:
                        m = pose = None
                metrics.append(m)
                poses.append(pose)
                bar.update(1)
        problem = video.finish()
        good = [m for m in metrics if m is not None]
        if not good:
            raise CliError(f"{args.video}: no face found in any frame")
        neutral = estimate_neutral(np.stack(good))
        if args.method == "net":
            from .blendshape_net import BlendshapeNetPredictor

            solver: Any = BlendshapeNetPredictor(neutral)
        else:
            solver = BlendshapeSolver(neutral)
        records = []
        for i, (m, pose) in enumerate(zip(metrics, poses)):
            rec: dict[str, Any] = {"frame": i, "timestamp": round(i / fps, 6), "face": m is not None,
                                   "pitch": None, "yaw": None, "roll": None, "coefficients": None}
            if m is not None:
                c = solver.solve(m)
                rec["coefficients"] = {k: round(float(v), 4) for k, v in zip(BLENDSHAPE_NAMES, c)}
                rec["pitch"], rec["yaw"], rec["roll"] = (round(float(a), 3) for a in pose.euler_angles)
            records.append(rec)
        _write_coefficients(out, records)
        if render is not None:
            from .render_avatar import render_mesh

            writer = _video_writer(render.path, fps, (480, 480))
            last = np.zeros(len(BLENDSHAPE_NAMES))
            for rec, pose in zip(records, poses):
                if rec["coefficients"] is not None:
                    last = np.array([rec["coefficients"][k] for k in BLENDSHAPE_NAMES])
                rotation = pose.rotation if pose is not None else None
                img = render_mesh(deform(last), rotation=rotation)
                import cv2

                writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            writer.release()
        out.commit()
        if render is not None:
            render.commit()
    except BaseException:
        if out is not None:
            out.discard()
        if render is not None:
            render.discard()
        raise
    finally:
        video.close()
    say(f"{PROG}: {_frames_word(len(records))}, {len(good)} with a face -> {args.out}"
        + (f", {args.render}" if args.render else ""))
    if problem is not None:
        print_error(problem)
        return 1
    return 0


def _write_coefficients(out: Any, records: list[dict[str, Any]]) -> None:
    """The records into ``out.path`` (an :class:`attnmesh.outputs.TempFile`), JSON lines or Parquet by the
    target's extension."""
    from .blendshapes import BLENDSHAPE_NAMES

    if str(out.target).lower().endswith(".jsonl"):
        with open(out.path, "w", encoding="utf-8", newline="\n") as f:
            for rec in records:
                f.write(json.dumps(rec, separators=(",", ":"), allow_nan=False) + "\n")
        return
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CliError("--out .parquet needs pyarrow (pip install pyarrow); or use .jsonl") from None
    cols: dict[str, Any] = {"frame": pa.array([r["frame"] for r in records], pa.int32()),
                            "timestamp": pa.array([r["timestamp"] for r in records], pa.float64()),
                            "face": pa.array([r["face"] for r in records], pa.bool_())}
    for k in ("pitch", "yaw", "roll"):
        cols[k] = pa.array([r[k] for r in records], pa.float32())
    for name in BLENDSHAPE_NAMES:
        cols[name] = pa.array([None if r["coefficients"] is None else r["coefficients"][name] for r in records],
                              pa.float32())
    pq.write_table(pa.table(cols), out.path)


def main(argv: list[str] | None = None) -> int:
    """``python -m attnmesh.apps.commands makeup|puppet ...``: the same as ``attnmesh makeup|puppet ...``."""
    from .. import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
