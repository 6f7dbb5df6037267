"""``attnmesh puppet VIDEO --out coeffs.(jsonl|parquet) [--render avatar.mp4] [--method lsq|net] [--no-smooth]``:
per-frame blendshape coefficients of the (first) face (stabilised landmarks unless ``--no-smooth``), with the
head pose; ``--render`` writes the canonical face deformed by the coefficients (and turned by the head pose) as a
shaded, wireframe mesh. One JSON line per frame: ``{"frame", "timestamp", "face", "pitch", "yaw", "roll",
"coefficients": {name: value}}`` (``face`` false and the rest null where no face was found); Parquet: the same
with one float32 column per coefficient."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import CliError
from .common import (finish, PROG, InputFiles, progress_bar, check_output_target, common_parents, frames_word,
                     face_mesh)

# -- puppet -------------------------------------------------------------------------------------------------


def add_puppet(sub: argparse._SubParsersAction, common: argparse.ArgumentParser | None = None
               ) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "puppet", parents=common_parents(common), help="blendshape coefficients (and an avatar) from a face video",
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

    from ..apps.blendshapes import (
        BLENDSHAPE_NAMES,
        BlendshapeSolver,
        deform,
        estimate_neutral,
        metric_landmarks,
    )
    from ..geometry.face_geometry import estimate_face_geometry
    from ..io.outputs import TempFile
    from ..apps.render_avatar import AVATAR_SIZE
    from ..io.video import VideoFile, VideoReader
    from ..pipeline.stabilizer import LandmarkStabilizer
    from .common import refuse_same_output

    check_output_target(args.out, "--out", (".jsonl", ".parquet"))
    if args.render:
        check_output_target(args.render, "--render", (".mp4",))
    refuse_same_output(("--out", args.out), ("--render", args.render))
    inputs = InputFiles([args.video])
    inputs.refuse("--out", args.out)
    inputs.refuse("--render", args.render)
    video = VideoReader(args.video, image_hint="puppet needs a video of a face")
    out = render = None
    try:
        out = TempFile(args.out, "--out")  # only once the input is open
        render = (VideoFile(args.render, "--render", AVATAR_SIZE, AVATAR_SIZE, video.rate) if args.render
                  else None)
        metrics: list[Any] = []
        neutral_metrics: list[Any] = []  # the unsmoothed face of each frame, for the neutral (see below)
        times: list[float] = []
        poses: list[Any] = []
        smoother = None if args.no_smooth else LandmarkStabilizer()
        with face_mesh(args, static_image_mode=False, max_num_faces=1, refine_landmarks=True) as fm, \
                progress_bar(video.declared_frames, "frame") as bar:
            for _, timestamp, frame in video.frames():
                times.append(timestamp)
                size = (frame.shape[1], frame.shape[0])
                faces = fm.process(frame)
                lm = faces[0].landmarks if faces else None
                if smoother is not None:
                    if lm is not None:
                        try:
                            neutral_metrics.append(metric_landmarks(lm, size))
                        except ValueError:
                            pass
                    lm = smoother(lm, timestamp)
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
        # The neutral face is a per-point median over many frames (a denoiser of its own), taken from the
        # unsmoothed landmarks: the stabiliser holds lids and brows at earlier positions while they move little,
        # which shifts the frames and values the median sees (talking-d6's left eye: eyeBlink vs the eye's
        # aspect ratio 0.894 with a neutral from the stabilised landmarks, 0.902 with this one).
        neutral = estimate_neutral(np.stack(neutral_metrics or good))  # filled only when smoothing
        if args.method == "net":
            from ..apps.blendshape_net import BlendshapeNetPredictor

            solver: Any = BlendshapeNetPredictor(neutral)
        else:
            solver = BlendshapeSolver(neutral)
        records = []
        for i, (m, pose) in enumerate(zip(metrics, poses)):
            rec: dict[str, Any] = {"frame": i, "timestamp": round(times[i], 6), "face": m is not None,
                                   "pitch": None, "yaw": None, "roll": None, "coefficients": None}
            if m is not None:
                c = solver.solve(m)
                rec["coefficients"] = {k: round(float(v), 4) for k, v in zip(BLENDSHAPE_NAMES, c)}
                rec["pitch"], rec["yaw"], rec["roll"] = (round(float(a), 3) for a in pose.euler_angles)
            records.append(rec)
        _write_coefficients(out, records)
        if render is not None:
            from ..apps.render_avatar import render_mesh

            last = np.zeros(len(BLENDSHAPE_NAMES))
            for rec, pose in zip(records, poses):
                if rec["coefficients"] is not None:
                    last = np.array([rec["coefficients"][k] for k in BLENDSHAPE_NAMES])
                rotation = pose.rotation if pose is not None else None
                img = render_mesh(deform(last), rotation=rotation)
                render.write(img)
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
    return finish(f"{PROG}: {frames_word(len(records))}, {len(good)} with a face -> {args.out}"
                  + (f", {args.render}" if args.render else ""), problem)


def _write_coefficients(out: Any, records: list[dict[str, Any]]) -> None:
    """The records into ``out.path`` (an :class:`attnmesh.io.outputs.TempFile`), JSON lines or Parquet by the
    target's extension."""
    from ..apps.blendshapes import BLENDSHAPE_NAMES

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
