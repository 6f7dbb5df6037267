"""``attnmesh video IN --out FILE [--render OUT.mp4] [--no-smooth]``: landmarks per frame in tracking mode,
stabilised (``--no-smooth``: raw)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CliError
from .common import (finish, OUT_HELP, PROG, InputFiles, add_model_options, commit_all, discard_all,
                     command_face_mesh, faces_word, nonnegative_float, open_writer_for, positive_int, unit_float,
                     add_engine_options, check_local_engine, refuse_same_output)

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
    p.add_argument("--smooth-beta", type=nonnegative_float, default=None, metavar="B",
                   help="smooth with MediaPipe's one-euro filter instead, with this beta (MediaPipe's: 80); "
                        "lower smooths more and lags more")
    add_model_options(p, max_faces=1)
    p.add_argument("--min-tracking-confidence", type=unit_float, default=0.5, metavar="X",
                   help="face presence below which a tracked face is dropped (default: 0.5)")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                   help="stop after the first N frames")
    add_engine_options(p, video=True)
    return p


class _VideoRender:
    """``--render OUT.mp4``: the frames with their meshes drawn, into a :class:`attnmesh.io.video.VideoFile`
    (H.264 when PyAV has libx264, else MPEG-4 part 2; renamed over the target by :meth:`commit`)."""

    def __init__(self, target: str, width: int, height: int, rate: Any, pose_axes: bool) -> None:
        from ..io.video import VideoFile

        self.pose_axes = pose_axes
        self.video = VideoFile(target, "--render", width, height, rate)

    def write(self, image: Any, faces: Sequence[Any]) -> None:
        from ..render import draw_face_mesh

        self.video.write(draw_face_mesh(image, faces, pose_axes=self.pose_axes))

    def commit(self) -> None:
        self.video.commit()

    def discard(self) -> None:
        self.video.discard()


def run_video(args: argparse.Namespace) -> int:
    from ..io.video import VideoReader

    check_local_engine(args, "video")
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
        out = open_writer_for(args.out, args)
        from tqdm import tqdm

        from ..io.outputs import face_record, frame_record
        from ..pipeline.smoothing import MultiFaceSmoother
        from ..pipeline.stabilizer import MultiFaceStabilizer

        if args.smooth_beta is not None and (args.smooth_beta < 0 or args.no_smooth):
            raise CliError("--smooth-beta must be >= 0" if args.smooth_beta < 0 else
                           "--smooth-beta and --no-smooth contradict each other")
        fm = command_face_mesh(args, static=False)
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
        commit_all(out, render)
    except BaseException:
        discard_all(out, render)
        raise
    finally:
        video.close()
    where = "stdout" if args.out == "-" else args.out
    rendered = f" and {args.render}" if args.render else ""
    return finish(f"{PROG}: {n_frames} frame{'s' * (n_frames != 1)} ({last_time:.2f} s), {faces_word(n_faces)} in "
                  f"{n_with_face} frame{'s' * (n_with_face != 1)}{', smoothed' if smoother is not None else ''} -> "
                  f"{where}{rendered}", problem)
