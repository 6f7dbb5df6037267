"""``attnmesh makeup IN --lipstick COLOR [--opacity 0.6] [--gloss 0] --out OUT``: an image (png/jpg/...) or a
video (mp4/avi/mov/mkv/webm -> mp4) with lipstick on every face. Video uses tracking and landmark
stabilisation (:mod:`attnmesh.pipeline.stabilizer`; ``--no-smooth`` to turn it off). Videos are read with
:class:`attnmesh.io.video.VideoReader`, as ``attnmesh video`` reads them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CliError
from ..io import IMAGE_EXTENSIONS
from .common import (finish, PROG, VIDEO_EXTENSIONS, InputFiles, progress_bar, check_output_target, common_parents,
                     frames_word, positive_int, unit_float, face_mesh, say)


def _color(text: str) -> tuple[int, int, int]:
    from ..apps.lipstick import parse_color  # light: no torch

    try:
        return parse_color(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None



# -- makeup -------------------------------------------------------------------------------------------------


def add_makeup(sub: argparse._SubParsersAction, common: argparse.ArgumentParser | None = None
               ) -> argparse.ArgumentParser:
    from ..apps.lipstick import COLORS

    p = sub.add_parser(
        "makeup", parents=common_parents(common), help="virtual lipstick on a photo or a video",
        description="Paint lipstick on every face of a photo or a video (recoloured in CIELAB, keeping the "
                    "lips' shading; teeth and the open mouth stay untouched).")
    p.add_argument("input", metavar="IN", help="photo (" + "/".join(e[1:] for e in IMAGE_EXTENSIONS)
                   + ") or video (" + "/".join(e[1:] for e in VIDEO_EXTENSIONS) + ")")
    p.add_argument("--lipstick", required=True, type=_color, metavar="COLOR",
                   help="#RRGGBB or one of: " + ", ".join(sorted(COLORS)))
    p.add_argument("--opacity", type=unit_float, default=0.6, metavar="X", help="in [0, 1] (default: 0.6)")
    p.add_argument("--gloss", type=unit_float, default=0.0, metavar="X",
                   help="highlight gloss in [0, 1] (default: 0)")
    p.add_argument("--out", "-o", required=True, metavar="OUT",
                   help="output image (same kinds as IN) or video (.mp4); written to a temporary name, "
                        "renamed when done")
    p.add_argument("--max-faces", type=positive_int, default=5, metavar="N", help="most faces (default: 5)")
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

    from ..apps.lipstick import apply_lipstick
    from ..io import ImageError, load_image
    from ..io.outputs import TempFile

    check_output_target(args.out, "--out", IMAGE_EXTENSIONS)
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
    from ..apps.lipstick import apply_lipstick
    from ..io.video import VideoFile, VideoReader
    from ..pipeline.stabilizer import MultiFaceStabilizer

    check_output_target(args.out, "--out", (".mp4",))
    InputFiles([args.input]).refuse("--out", args.out)
    video = VideoReader(args.input, image_hint="for lipstick on a photo, give it a photo extension such as .jpg")
    out = None
    frames = with_faces = 0
    try:
        smoother = MultiFaceStabilizer()
        with face_mesh(args, static_image_mode=False, max_num_faces=args.max_faces, refine_landmarks=True) as fm, \
                progress_bar(video.declared_frames, "frame") as bar:
            for _, timestamp, frame in video.frames():
                if out is None:  # only once the input is open and its frame size known
                    out = VideoFile(args.out, "--out", frame.shape[1], frame.shape[0], video.rate)
                faces = fm.process(frame)
                landmarks = [f.landmarks for f in faces]
                if not args.no_smooth:
                    smoothed = smoother({f.track_id: f.landmarks for f in faces}, timestamp)
                    landmarks = [smoothed[f.track_id] for f in faces]
                result = apply_lipstick(frame, landmarks, args.lipstick, args.opacity, args.gloss) if landmarks \
                    else frame
                out.write(result)
                frames += 1
                with_faces += bool(faces)
                bar.update(1)
        problem = video.finish()  # raises when not one frame was read: out exists below
        out.commit()
    except BaseException:
        if out is not None:
            out.discard()
        raise
    finally:
        video.close()
    return finish(f"{PROG}: {frames_word(frames)}, {with_faces} with faces -> {args.out}", problem)
