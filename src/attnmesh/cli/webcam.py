"""``attnmesh webcam [--camera 0]``: a live overlay window."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import CliError
from .common import PROG, add_model_options, command_face_mesh

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
    add_model_options(p, max_faces=1)
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

    from ..pipeline.stabilizer import MultiFaceStabilizer
    from ..render import draw_face_mesh

    window = f"{PROG} webcam (q to quit)"
    try:
        fm = command_face_mesh(args, static=False)
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
