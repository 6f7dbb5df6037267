"""The ``attnmesh`` command line.

``attnmesh images PATH... --out results.jsonl`` writes one JSON line per image with the faces' landmarks.

Each subcommand is a pair of small functions registered in :data:`COMMANDS`: ``add_<name>(subparsers)``
declares its arguments, ``run_<name>(args) -> int`` does the work and returns the exit code. Heavy imports
(torch, the pipeline, tqdm) happen inside the ``run_`` functions, so ``attnmesh --help`` is instant.

Errors: every failure is one line on stderr, ``attnmesh: error: ...``, and a non-zero exit code (2 for bad
arguments, 1 otherwise, 130 when interrupted); never a traceback, unless ``--debug`` is given or the
``ATTNMESH_DEBUG`` environment variable is set (to anything but ``0``), which re-raises for developers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__

PROG = "attnmesh"


class CliError(Exception):
    """A failure reported as one line, ``attnmesh: error: <message>``, with exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: usage problems raise :class:`CliError` (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{message} (see '{self.prog} --help')", code=2)


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _debug_env() -> bool:
    return os.environ.get("ATTNMESH_DEBUG", "") not in ("", "0")


# -- argument types -----------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


# -- images -------------------------------------------------------------------------------------------------


def add_images(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "images", parents=[common], help="face landmarks for photos and folders of photos -> JSON lines",
        description="Find faces and their 478 (or 468) landmarks in images, one JSON line per image. "
                    "Folders are searched recursively for " + _extensions() + " files.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    p.add_argument("--out", "-o", required=True, metavar="FILE",
                   help="output JSON-lines file (written to a temporary name, renamed when done); '-' for stdout")
    p.add_argument("--max-faces", type=_positive_int, default=5, metavar="N",
                   help="most faces per image (default: 5)")
    p.add_argument("--no-refine", action="store_true",
                   help="468 landmarks from the base mesh model instead of 478 from the Attention Mesh")
    p.add_argument("--min-detection-confidence", type=_unit_float, default=0.5, metavar="X",
                   help="face detector score threshold in [0, 1] (default: 0.5)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps... (default: cpu)")
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="N",
                   help="images per detector/mesh pass (default: 8)")
    return p


def _extensions() -> str:
    return "jpg/jpeg/png/bmp/webp/tif/tiff"  # kept in step with attnmesh.io.IMAGE_EXTENSIONS (not imported: fast --help)


def _r(x: Any) -> Any:
    """Round floats (scalars or arrays) to 3 decimals as plain Python values."""
    import numpy as np

    a = np.asarray(x, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("non-finite value in the results")
    return np.round(a, 3).tolist()


def face_record(face: Any) -> dict[str, Any]:
    """The JSON object of one :class:`attnmesh.Face` (pixels, floats rounded to 3 decimals)."""
    det = face.detection
    return {
        "score": _r(face.score),
        "detection_score": None if det is None else _r(det.score),
        "box": _r(face.box),
        "roi": _r(face.roi.as_tuple()),
        "landmarks": _r(face.landmarks),
    }


class _Output:
    """The output file, written under a temporary name in its folder and renamed by :meth:`commit`, so a
    crash never leaves a file that looks complete. ``'-'`` writes to stdout."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.tmp: str | None = None
        if target == "-":
            self.file: TextIO = sys.stdout
            return
        path = Path(target)
        folder = path.parent
        if path.is_dir():
            raise CliError(f"--out {target}: is a directory; give a file name, e.g. {path / 'results.jsonl'}")
        if not folder.is_dir():
            raise CliError(f"--out {target}: the folder '{folder}' does not exist")
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
        except OSError as e:
            raise CliError(f"--out {target}: cannot write in '{folder}' ({e.strerror or e})") from None
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")

    def commit(self) -> None:
        if self.tmp is None:
            self.file.flush()
            return
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it a normal file's mode
            os.replace(self.tmp, self.target)
        except OSError as e:
            self.discard()
            raise CliError(f"--out {self.target}: cannot write the output ({e.strerror or e})") from None
        self.tmp = None

    def discard(self) -> None:
        if self.tmp is None:
            return
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass
        self.tmp = None


def run_images(args: argparse.Namespace) -> int:
    from .io import ImageError, iter_image_paths, load_image

    paths = list(iter_image_paths(args.paths))
    if not paths:
        raise CliError("no image files found in " + ", ".join(args.paths)
                       + f" (looked for {_extensions()})")
    out = _Output(args.out)  # before loading the models: a bad --out fails at once
    try:
        from tqdm import tqdm

        fm = _face_mesh(args)
        bar = tqdm(total=len(paths), unit="img", file=sys.stderr, dynamic_ncols=True,
                   disable=len(paths) < 2 or not sys.stderr.isatty())
        n_faces = n_failed = 0

        def report(path: Path, problem: str) -> None:
            nonlocal n_failed
            n_failed += 1
            msg = f"{PROG}: error: {path}: {' '.join(problem.split())}"
            if bar.disable:
                print(msg, file=sys.stderr, flush=True)
            else:
                bar.write(msg, file=sys.stderr)
            out.write({"path": str(path), "error": problem})

        with bar:
            for start in range(0, len(paths), args.batch_size):
                chunk = paths[start:start + args.batch_size]
                loaded: list[tuple[Path, Any]] = []
                for path in chunk:
                    try:
                        loaded.append((path, load_image(path)))
                    except ImageError as e:
                        loaded.append((path, e))
                good = [(p, im) for p, im in loaded if not isinstance(im, ImageError)]
                results = dict(zip((id(im) for _, im in good), _process(fm, [im for _, im in good], args)))
                for path, im in loaded:
                    if isinstance(im, ImageError):
                        report(path, im.problem)
                        continue
                    faces = results[id(im)]
                    if isinstance(faces, BaseException):
                        report(path, f"internal error: {type(faces).__name__}: {faces}")
                        continue
                    try:
                        record = {"path": str(path), "width": int(im.shape[1]), "height": int(im.shape[0]),
                                  "faces": [face_record(f) for f in faces]}
                    except ValueError as e:
                        if args.debug:
                            raise
                        report(path, f"internal error: {e}")
                        continue
                    out.write(record)
                    n_faces += len(faces)
                bar.update(len(chunk))
        out.commit()
    except BaseException:
        out.discard()
        raise
    where = "stdout" if args.out == "-" else args.out
    print(f"{PROG}: {len(paths)} image{'s' * (len(paths) != 1)}, {n_faces} face{'s' * (n_faces != 1)}, "
          f"{n_failed} failed -> {where}", file=sys.stderr, flush=True)
    return 1 if n_failed else 0


def _face_mesh(args: argparse.Namespace) -> Any:
    import attnmesh

    try:
        return attnmesh.FaceMesh(static_image_mode=True, max_num_faces=args.max_faces,
                                 refine_landmarks=not args.no_refine,
                                 min_detection_confidence=args.min_detection_confidence, device=args.device)
    except (RuntimeError, ValueError, AssertionError) as e:
        if args.debug:
            raise
        raise CliError(f"cannot set up the face mesh on device '{args.device}': {e}") from None


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

#: subcommand name -> (add_parser, run). Add ``demo``, ``video``, ``webcam``... here.
COMMANDS: dict[str, tuple[Callable[..., argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {
    "images": (add_images, run_images),
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_env() or "--debug" in argv
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version
            return e.code if isinstance(e.code, int) else 0
        args.debug = debug or getattr(args, "debug", False)
        if getattr(args, "run", None) is None:
            raise CliError(f"no command given; choose one of: {', '.join(COMMANDS)} (see '{PROG} --help')", 2)
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
