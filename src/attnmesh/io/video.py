"""Reading a video file for the commands that take one (``attnmesh video``, ``makeup``, ``puppet``): one reader
(PyAV), so that they all refuse the same unusable files and report a damaged or truncated video in the same
words::

    with VideoReader(path) as video:            # VideoError (one line, exit code 1) if unusable
        for index, seconds, rgb in video.frames(max_frames):
            ...
        problem = video.finish()                # VideoError if no frame could be read at all
    ...write the outputs...
    if problem:                                 # decoding stopped early: the outputs hold what was read
        print_error(problem); return 1

Frames are RGB uint8 (H, W, 3), turned upright by the stream's display rotation as players show them.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CliError

#: FFmpeg demuxers of still images: such a file is refused (it is not a video).
IMAGE_DEMUXERS = ("image2", "image2pipe")

#: A video whose header lists more frames than this many beyond those decoded counts as truncated (headers
#: round their counts; a few missing frames at the very end are not worth an error).
TRUNCATION_SLACK = 2

#: Frames decoded ahead of the caller, in a thread of their own (:meth:`VideoReader.frames`).
PREFETCH_FRAMES = 4


class VideoError(CliError):
    """A video file that cannot be used, as one line ``"<path>: <problem>"`` (the CLI exits with 1)."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


class VideoReader:
    """An open video file (its first video stream).

    Attributes: ``path``; ``rate`` the frame rate (frames per second, a Fraction; 30 when the file gives
    none); ``declared_frames`` the frame count in the header (0 when unknown); ``decoded`` the frames given so
    far by :meth:`frames`.

    ``image_hint`` ends the message that refuses a still image (what to do instead).
    """

    def __init__(self, path: str | os.PathLike, image_hint: str = "use 'attnmesh images' for photos") -> None:
        self.path = os.fspath(path)
        p = Path(self.path)
        try:
            st = p.stat()
        except FileNotFoundError:
            raise VideoError(self.path, "no such file or directory") from None
        except OSError as e:
            raise VideoError(self.path, f"cannot access the file ({e.strerror or e})") from None
        if stat.S_ISDIR(st.st_mode):
            raise VideoError(self.path, "is a directory, not a video file")
        if st.st_size == 0:
            raise VideoError(self.path, "empty file (0 bytes), not a video")
        try:
            import av
        except ImportError:
            raise CliError("reading video needs PyAV: pip install av") from None
        try:
            container = av.open(self.path, mode="r")
        except Exception as e:  # av.error.InvalidDataError, PermissionError...
            detail = getattr(e, "strerror", None) or str(e)
            raise VideoError(self.path, f"not a video, or a video that cannot be read ({detail})") from None
        fmt = container.format.name
        if fmt in IMAGE_DEMUXERS or fmt.endswith("_pipe"):
            container.close()
            raise VideoError(self.path, f"an image, not a video ({image_hint})")
        if not container.streams.video:
            container.close()
            raise VideoError(self.path, f"no video stream in this file ({fmt}): an empty video, or audio only")
        self.container: Any = container
        self.stream: Any = container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.rate: Fraction = Fraction(self.stream.average_rate or self.stream.guessed_rate or 30)
        self.declared_frames: int = int(self.stream.frames or 0)
        self.decoded = 0
        self._limit: int | None = None
        self._error: str | None = None

    def frames(self, max_frames: int | None = None, prefetch: int = PREFETCH_FRAMES
               ) -> Iterator[tuple[int, float, np.ndarray]]:
        """(index, timestamp in seconds, RGB uint8 image) of each decoded frame, the first ``max_frames`` (all
        when None). A decoding error ends the iteration; :meth:`finish` reports it.

        ``prefetch`` > 0: frames are demuxed, decoded and converted to RGB in a thread of their own, up to
        ``prefetch`` frames ahead of the caller, so decoding overlaps the caller's work (the same frames, in
        the same order)."""
        if prefetch <= 0:
            yield from self._decode(max_frames)
            return
        items: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()
        end = object()

        def produce() -> None:
            try:
                for item in self._decode(max_frames):
                    while not stop.is_set():
                        try:
                            items.put(item, timeout=0.05)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            except BaseException as e:  # noqa: BLE001 - handed to the consumer and raised there
                items.put(e)
            items.put(end)

        worker = threading.Thread(target=produce, name="attnmesh-decode", daemon=True)
        worker.start()
        try:
            while (item := items.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # let a producer blocked on a full queue finish
                with contextlib.suppress(queue.Empty):
                    items.get(timeout=0.05)
            worker.join()

    def _decode(self, max_frames: int | None) -> Iterator[tuple[int, float, np.ndarray]]:
        self._limit = max_frames
        decoder = self.container.decode(self.stream)
        while max_frames is None or self.decoded < max_frames:
            try:
                frame = next(decoder)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - av.error.*: corrupt or truncated data
                self._error = " ".join((getattr(e, "strerror", None) or str(e) or type(e).__name__).split())
                return
            t = frame.time
            index = self.decoded
            self.decoded += 1
            yield index, float(t) if t is not None else float(index / self.rate), upright(frame)

    def finish(self) -> str | None:
        """After :meth:`frames`: None when the video was read to its end (or to ``max_frames``); else the one
        line saying where decoding stopped and why (a decoding error, or fewer frames than the header lists:
        a truncated file). Raises :class:`VideoError` when not a single frame could be read."""
        n = self.decoded
        if n == 0:
            detail = f" (decoding failed: {self._error})" if self._error else ""
            raise VideoError(self.path, f"no video frames could be read (empty video){detail}")
        problem = self._error
        if (problem is None and n < self.declared_frames - TRUNCATION_SLACK
                and (self._limit is None or n < self._limit)):
            problem = (f"the file is truncated: only {n} of the {self.declared_frames} frames its header lists "
                       "could be decoded")
        if problem is None:
            return None
        return (f"{self.path}: damaged video, decoding stopped after frame {n - 1} ({problem}); the output holds "
                f"frames 0 to {n - 1}")

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def upright(frame: Any) -> np.ndarray:
    """RGB uint8 (H, W, 3) pixels of a decoded PyAV frame as players show them: turned by the stream's display
    matrix (phone videos store landscape pixels with a 90/180/270 degree rotation), as OpenCV and ffmpeg do."""
    image = frame.to_ndarray(format="rgb24")
    turns = round((frame.rotation or 0) / 90) % 4  # counterclockwise quarter turns
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


class VideoWriter:
    """An MP4 written with PyAV: H.264 (libx264, CRF 20) when PyAV has it, else MPEG-4 part 2; frames are RGB
    uint8 (H, W, 3) of one size, padded by edge replication to even sides (yuv420p needs them), shown at
    ``rate`` frames per second. The caller names the file; :class:`VideoFile` writes one to a temporary name
    and renames it when done, as every command that writes a video does."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, rate: Fraction | float) -> None:
        import av

        self.width, self.height = width + width % 2, height + height % 2
        self.container = av.open(os.fspath(path), mode="w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=Fraction(rate).limit_denominator(1_000_000))
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, "yuv420p"
        if codec == "libx264":
            self.stream.options = {"crf": "20", "preset": "veryfast"}
        else:
            self.stream.bit_rate = 8_000_000
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        """Append one frame (RGB uint8, the size given at construction, or one pixel less per odd side)."""
        import av

        if rgb.shape[:2] != (self.height, self.width):
            rgb = np.pad(rgb, ((0, self.height - rgb.shape[0]), (0, self.width - rgb.shape[1]), (0, 0)),
                         mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and close the file."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()

    def abandon(self) -> None:
        """Close without flushing (after another error; the caller removes the file)."""
        with contextlib.suppress(Exception):
            self.container.close()


class VideoFile:
    """A :class:`VideoWriter` into a temporary file beside ``target`` (:class:`attnmesh.io.outputs.TempFile`:
    created with SIGINT/SIGTERM held, removed if this object goes away uncommitted), renamed over ``target`` by
    :meth:`commit`; :meth:`discard` removes it. ``what`` names the option in messages (``"--out"``,
    ``"--render"``). What ``makeup``, ``puppet --render`` and ``video --render`` write."""

    def __init__(self, target: str | os.PathLike, what: str, width: int, height: int,
                 rate: Fraction | float) -> None:
        from .outputs import TempFile

        self.target, self.what = target, what
        self.file = TempFile(target, what)
        try:
            self.writer = VideoWriter(self.file.path, width, height, rate)  # type: ignore[arg-type]
        except BaseException:  # SIGTERM or Ctrl-C while the container opens included
            self.file.discard()
            raise

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(rgb)

    def commit(self) -> None:
        from .outputs import OutputError

        try:
            self.writer.close()
        except Exception as e:  # noqa: BLE001 - any encoder or file error, as one line
            self.discard()
            raise OutputError(f"{self.what} {self.target}: cannot write the video ({e})") from None
        self.file.commit()

    def discard(self) -> None:
        if self.file.path is None:
            return
        self.writer.abandon()
        self.file.discard()
