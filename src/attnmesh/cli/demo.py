"""``attnmesh demo [--out DIR]``: the shipped astronaut photo -> overlay PNG and landmarks in DIR."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CliError
from .common import PROG
from .images import run_images

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
