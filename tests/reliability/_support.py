"""What the reliability tests share: running the CLI (in this process through ``attnmesh.cli.main``, or as a
subprocess when a signal has to reach it), fingerprints of folders (to prove that inputs are unchanged and
no temporary file is left), and the odd inputs a hostile user would give."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from reference import PHOTOS, VIDEOS

SMALL_PHOTO = PHOTOS / "face-obama-240p.jpg"  # 427x240, one face: the cheapest real photo
CLIP = VIDEOS / "talking-d11.mp4"  # 512x512, 25 fps, 225 frames, one talking face


def lines(stderr: str) -> list[str]:
    """The non-empty lines of ``stderr``, after checking that there is no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.strip()]


def main(*args: str | os.PathLike) -> tuple[int, list[str], str]:
    """``attnmesh ARGS`` run in this process: (exit code, stderr lines, stdout)."""
    from attnmesh.cli import main as cli_main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = cli_main([os.fspath(a) if not isinstance(a, bytes) else os.fsdecode(a) for a in args])
    return code, lines(err.getvalue()), out.getvalue()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ATTNMESH_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"  # shared 2-core machines
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")  # this checkout's attnmesh
    return env


def spawn(*args: str | os.PathLike, prelude: str = "") -> subprocess.Popen:
    """``attnmesh ARGS`` as a subprocess (``prelude``: Python run before the CLI, e.g. to hide a module)."""
    code = f"{prelude}\nimport sys\nfrom attnmesh.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *map(os.fspath, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def run(*args: str | os.PathLike, prelude: str = "", timeout: float = 300) -> tuple[int, list[str], str]:
    """``attnmesh ARGS`` as a subprocess: (exit code, stderr lines, stdout)."""
    proc = spawn(*args, prelude=prelude)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, lines(err), out


def terminate_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> tuple[int, list[str]]:
    """Send SIGTERM to ``proc`` as soon as ``ready()`` holds; (exit code, stderr lines). Fails if the process
    ends first (then the test would prove nothing)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be terminated: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "never got ready"
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, lines(err)


def fingerprint(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden ones included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def part_files(folder: Path) -> list[Path]:
    """Temporary files (``.NAME.XXXX.part.EXT``) anywhere under ``folder``."""
    return [p for p in folder.rglob("*") if ".part" in p.name]


def truncated_video(path: Path, frames: int | None = 60) -> int:
    """The issue's damaged file: ``CLIP`` remuxed with its index first (``movflags=faststart``), then cut to
    the first half of its bytes. ``frames``: remux only the first packets (a shorter clip, for speed; its
    header lists that many frames). Returns the frame count the header lists."""
    import av

    count = 0
    with av.open(str(CLIP)) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = out
            dst.mux(packet)
            count += 1
            if frames is not None and count == frames:
                break
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return count


def audio_only(path: Path) -> None:
    """An MP4 with one second of a tone and no video stream."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        t = np.arange(16000) / 16000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))
