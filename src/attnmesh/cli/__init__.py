"""The ``attnmesh`` command line.

* ``attnmesh demo [--out DIR]``: the shipped astronaut photo -> overlay PNG and landmarks in DIR.
* ``attnmesh images PATH... --out FILE [--render DIR]``: landmarks and head pose of photos and folders.
* ``attnmesh video IN --out FILE [--render OUT.mp4] [--no-smooth]``: the same per frame, in tracking mode,
  stabilised (``--no-smooth``: raw).
* ``attnmesh webcam [--camera 0]``: a live overlay window.

``--out`` takes .jsonl, .parquet, .npz or .csv (:mod:`attnmesh.io.outputs`, docs/outputs.md).

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
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import CliError
from ..version import __version__
from .common import PROG, debug_from_env, print_error, Parser, show_library_notes
from .demo import add_demo, run_demo
from .eval import add_eval, run_eval
from .images import add_images, run_images
from .makeup import add_makeup, run_makeup
from .puppet import add_puppet, run_puppet
from .train import add_train, run_train
from .video import add_video, run_video
from .webcam import add_webcam, run_webcam

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
    parser = Parser(prog=PROG, description="Attention Mesh face landmarks (478 points) in PyTorch.",
                     parents=[common])
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add, run in COMMANDS.values():
        add(sub, common).set_defaults(run=run)
    return parser



def _runner(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The command's run function, or the Ray driver of ``images`` / ``video`` with ``--engine ray``."""
    if getattr(args, "engine", "local") == "ray":
        from .ray import run_images_ray, run_video_ray

        return run_images_ray if args.command == "images" else run_video_ray
    return args.run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_from_env() or "--debug" in argv
    show_library_notes()
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
            return int(_runner(args)(args))
    except CliError as e:
        if debug:
            raise
        print_error(str(e))
        return e.code
    except KeyboardInterrupt:
        if debug:
            raise
        print_error("interrupted")
        return 130
    except _Terminated:
        if debug:
            raise
        print_error("terminated (SIGTERM)")
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
        print_error("out of memory (try a smaller --batch-size)")
        return 1
    except Exception as e:
        if debug:
            raise
        detail = str(e).strip()
        print_error(f"{type(e).__name__}{': ' + detail if detail else ''} (run with --debug for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
