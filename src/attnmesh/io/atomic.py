"""Writing a file so that readers see the old one or the complete new one, never a part: the one helper every
writer of the package uses (model graphs, weights, manifests, checkpoints; the command line's outputs add
their one-line errors on top, :class:`attnmesh.io.outputs.TempFile`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new empty temporary file beside ``path`` (same folder, hidden name ``.NAME.XXXX.part.EXT``: the same
    extension, for writers that go by it), renamed over ``path`` when the block ends normally and removed when
    it raises. The folder must exist. The file gets a normal file's mode (``0666`` less the umask)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path.write_text(text)``, atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
