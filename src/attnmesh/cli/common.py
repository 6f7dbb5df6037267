"""What every ``attnmesh`` subcommand shares: the one-line error and its printing, the argument types and
shared options, the check that no output overwrites an input, output files, and setting up the face mesh
(light: no torch)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ..errors import CliError
from ..options import BACKENDS
from ..registry import get_model_spec, list_models, model_names
from ..topology import NUM_MESH_LANDMARKS


def _number(text: str, kind: type, ok: Callable[[Any], bool], expected: str, must: str) -> Any:
    """``kind(text)`` if ``ok`` of it, else argparse's one-line error (``expected ...``, ``must be ...``)."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {must}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, lambda v: v >= 1, "a whole number", "at least 1")


def unit_float(text: str) -> float:
    return _number(text, float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]", "in [0, 1]")


def nonnegative_float(text: str) -> float:
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0.0, "a number >= 0", "a finite number >= 0")


# -- messages -------------------------------------------------------------------------------------------------

PROG = "attnmesh"


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of file names (Python keeps them as lone surrogates) written ``\\xNN``,
    so that it can be printed whatever the terminal's encoding."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def say(message: str, bar: Any = None) -> None:
    """One line on stderr (through the tqdm bar ``bar`` when one is showing, so that it is not garbled)."""
    message = printable(message)
    if bar is None or getattr(bar, "disable", True):
        print(message, file=sys.stderr, flush=True)
    else:
        bar.write(message, file=sys.stderr)


def print_error(message: str, bar: Any = None) -> None:
    """``attnmesh: error: <message>`` as one line on stderr."""
    say(f"{PROG}: error: {' '.join(str(message).split())}", bar)


# -- never overwrite an input -----------------------------------------------------------------------------------


class _Identity:
    """What a path names on disk: its real path (symbolic links resolved), and its (device, inode) when it
    exists (so that a hard link to an input is recognised too)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.real = os.path.normcase(os.path.realpath(path))
        try:
            st = os.stat(path)
            self.inode: tuple[int, int] | None = (st.st_dev, st.st_ino) if st.st_ino else None
        except OSError:
            self.inode = None


class InputFiles:
    """The files a command reads, to refuse any output that would overwrite one of them (exit code 2, before
    any work: an input is never destroyed)."""

    def __init__(self, paths: Iterable[str | os.PathLike]) -> None:
        self.by_real: dict[str, str | os.PathLike] = {}
        self.by_inode: dict[tuple[int, int], str | os.PathLike] = {}
        for p in paths:
            ident = _Identity(p)
            self.by_real.setdefault(ident.real, p)
            if ident.inode is not None:
                self.by_inode.setdefault(ident.inode, p)

    def find(self, target: str | os.PathLike) -> str | os.PathLike | None:
        """The input that ``target`` names (the same path, a symbolic or hard link to it), or None."""
        ident = _Identity(target)
        hit = self.by_real.get(ident.real)
        if hit is None and ident.inode is not None:
            hit = self.by_inode.get(ident.inode)
        return hit

    def refuse(self, what: str, target: str | os.PathLike | None, hint: str = "give another file name") -> None:
        """Raise a CliError (exit code 2) if ``target`` (given as option ``what``) names an input."""
        if target is None or os.fspath(target) == "-":
            return
        hit = self.find(target)
        if hit is not None:
            same = "" if os.path.normpath(hit) == os.path.normpath(target) else f" ({hit})"
            raise CliError(f"{what} {os.fspath(target)}: is an input{same} and would be overwritten; {hint}", 2)


def refuse_same_output(*named: tuple[str, str | None]) -> None:
    """CliError (exit code 2) if two of the ``(option, path)`` outputs name the same file."""
    seen: dict[str, str] = {}
    for what, target in named:
        if target is None or target == "-":
            continue
        key = _Identity(target).real
        if key in seen:
            raise CliError(f"{seen[key]} and {what} name the same file ({target}); give two names", 2)
        seen[key] = what


# -- the face mesh of a command ---------------------------------------------------------------------------------


def face_mesh(args: argparse.Namespace, **options: Any) -> Any:
    """``attnmesh.FaceMesh(device=args.device, **options)`` for a command: a device or backend that is not
    usable here, or an argument FaceMesh refuses, is a usage error (one line, exit code 2); any other failure
    to set it up (e.g. corrupt weights) one line with exit code 1. ``--debug`` re-raises."""
    import attnmesh
    from attnmesh.options import check_backend, check_device

    device = getattr(args, "device", "cpu")
    debug = getattr(args, "debug", False)
    for option, value, check in (("--device", device, check_device),
                                 ("--backend", options.get("backend", "auto"), check_backend)):
        try:
            check(value)
        except (TypeError, ValueError, RuntimeError) as e:
            if debug:
                raise
            raise CliError(f"{option} {value}: {e}", 2) from None
    try:
        return attnmesh.FaceMesh(device=device, **options)
    except (TypeError, ValueError) as e:
        if debug:
            raise
        raise CliError(f"cannot set up the face mesh: {e}", 2) from None
    except (RuntimeError, AssertionError, ImportError) as e:
        if debug:
            raise
        raise CliError(f"cannot set up the face mesh on device '{device}': {e}") from None


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: usage problems raise :class:`CliError` (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{message} (see '{self.prog} --help')", code=2)


def debug_from_env() -> bool:
    return os.environ.get("ATTNMESH_DEBUG", "") not in ("", "0")


# -- argument types -----------------------------------------------------------------------------------------


# -- shared options -----------------------------------------------------------------------------------------

OUT_HELP = ("output file; the format follows the extension: .jsonl (JSON lines), .parquet, .npz, .csv "
            "(see docs/outputs.md); written to a temporary name and renamed when done")


def add_model_options(p: argparse.ArgumentParser, max_faces: int) -> None:
    p.add_argument("--max-faces", type=positive_int, default=max_faces, metavar="N",
                   help=f"most faces per image (default: {max_faces})")
    p.add_argument("--no-refine", action="store_true",
                   help="468 landmarks from the base mesh model instead of 478 from the Attention Mesh")
    p.add_argument("--min-detection-confidence", type=unit_float, default=0.5, metavar="X",
                   help="face detector score threshold in [0, 1] (default: 0.5)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps... (default: cpu)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="inference backend (default: auto = OpenVINO on CPU, torch on other devices)")
    p.add_argument("--model", choices=model_names(), default="attention_mesh", metavar="MODEL",
                   help="landmark model, a registered name (default: attention_mesh): "
                        + "; ".join(f"{name}: {get_model_spec(name).summary}" for name in list_models())
                        + " (aliases: attention, transformer)")


def open_writer_for(target: str, args: argparse.Namespace) -> Any:
    from ..io.outputs import open_writer

    return open_writer(target, num_landmarks(args))  # OutputError: one line, exit code 1


def num_landmarks(args: argparse.Namespace) -> int:
    """Landmarks per face that the command's options give (468 with --no-refine or the base mesh)."""
    spec = get_model_spec(getattr(args, "model", "attention_mesh"))
    return NUM_MESH_LANDMARKS if args.no_refine and spec.name == "attention_mesh" else spec.num_landmarks


def commit_all(*writers: Any) -> None:
    for w in writers:
        if w is not None:
            w.commit()


def discard_all(*writers: Any) -> None:
    for w in writers:
        if w is not None:
            w.discard()


def faces_word(n: int) -> str:
    return f"{n} face{'s' * (n != 1)}"


def command_face_mesh(args: argparse.Namespace, static: bool = True, num_threads: int | None = None) -> Any:
    return face_mesh(args, static_image_mode=static, max_num_faces=args.max_faces,
                     refine_landmarks=not args.no_refine, min_detection_confidence=args.min_detection_confidence,
                     min_tracking_confidence=getattr(args, "min_tracking_confidence", 0.5),
                     backend=getattr(args, "backend", "auto"), model=getattr(args, "model", "attention_mesh"),
                     num_threads=num_threads)


# -- output files and progress of the commands -------------------------------------------------------------

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def common_parents(common: argparse.ArgumentParser | None) -> list[argparse.ArgumentParser]:
    return [common] if common is not None else []


def frames_word(n: int) -> str:
    return f"{n} frame{'s' * (n != 1)}"


def progress_bar(total: int, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total or None, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not sys.stderr.isatty())




def check_output_target(target: str, what: str, suffixes: tuple[str, ...]) -> Path:
    from ..io.outputs import check_target

    path = Path(target)
    if path.suffix.lower() not in suffixes:
        raise CliError(f"{what} {target}: the file name must end in {' or '.join(suffixes)}", 2)
    return check_target(path, what)


def write_atomic(path: Path, writer: Any, what: str) -> None:
    """``writer(tmp_path)`` writes a temporary file beside ``path``, renamed over it when complete."""
    from ..io.outputs import TempFile

    with TempFile(path, what) as tmp:
        writer(tmp.path)


def show_library_notes() -> None:
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


# -- --engine (the Ray engine itself is attnmesh.cli.ray) ---------------------------------------------------

#: Images per shard (one Ray Data task, one Parquet file) by default.
SHARD_SIZE = 256


def add_engine_options(p: argparse.ArgumentParser, video: bool = False, workers: bool = True) -> None:
    """``--engine``, ``--address``, ``--workers`` (unless ``workers`` is False: the subcommand has its own, which
    then also counts the Ray workers) and, for images, ``--shard-size`` on a subcommand."""
    what = "video" if video else "image"
    g = p.add_argument_group("cluster (--engine ray; docs/cluster.md)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help=f"local: this process; ray: Ray Data tasks on a local or existing Ray cluster, --out is "
                        f"then a folder of Parquet shards, resumable (one task per {what}"
                        f"{'' if video else ' shard'}; needs pip install 'attnmesh[ray]')")
    g.add_argument("--address", metavar="ADDR",
                   help="join this Ray cluster (e.g. 10.0.0.1:6379, or 'auto' on a cluster node) instead of "
                        "starting a local one")
    if workers:
        g.add_argument("--workers", type=positive_int, metavar="N", help=RAY_WORKERS_HELP)
    if not video:
        g.add_argument("--shard-size", type=positive_int, default=None, metavar="N",
                       help=f"images per Ray task and output file (default: {SHARD_SIZE})")


#: Help of ``--workers`` with ``--engine ray``.
RAY_WORKERS_HELP = "Ray workers, one CPU each (default: every CPU of the cluster)"

#: Options that mean something only with ``--engine ray``, per subcommand (``images`` has a local --workers).
_RAY_ONLY = {"images": ("address", "shard_size"), "video": ("address", "workers")}

def check_local_engine(args: argparse.Namespace, command: str) -> None:
    """Refuse (exit code 2) the options that mean something only with ``--engine ray`` when ``command``
    (``images`` or ``video``) runs locally: nothing a user asks for is silently ignored."""
    given = [f"--{name.replace('_', '-')}" for name in _RAY_ONLY[command] if getattr(args, name, None) is not None]
    if given:
        raise CliError(f"{', '.join(given)}: only with --engine ray", code=2)


def finish(summary: str, problem: str | None) -> int:
    """The exit code of a command that read a video: its summary line, then the reading problem (a damaged or
    truncated file: the outputs hold the frames read) as an error line and 1, else 0."""
    say(summary)
    if problem is not None:
        print_error(problem)
        return 1
    return 0
