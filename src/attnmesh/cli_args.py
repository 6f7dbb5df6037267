"""What every ``attnmesh`` subcommand shares: the one-line error type and its printing, the argument types, the
check that no output overwrites an input, and setting up the face mesh (kept apart from :mod:`attnmesh.cli`
so that command modules elsewhere in the package can use them without an import cycle; light: no torch)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable
from typing import Any


class CliError(Exception):
    """A failure reported as one line, ``attnmesh: error: <message>``, with exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


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


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


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
