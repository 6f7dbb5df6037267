"""Reading images for the face pipelines: files on disk and in-memory arrays, as RGB uint8 HxWx3.

* :func:`load_image` decodes a file with Pillow (colour JPEGs with libjpeg-turbo through simplejpeg: the same
  pixels, faster; OpenCV for the pixel values of 16-bit PNG/TIFF files), applies the EXIF orientation as a
  photo viewer does, and converts whatever it finds to RGB uint8. Every failure is an :class:`ImageError` whose
  message is one line naming the file and the problem.
* :func:`decode_image` does the same for the bytes of a file read elsewhere (object storage, a Parquet column).
* :func:`as_rgb_uint8` does the same conversions for a NumPy array (what ``FaceMesh.process`` calls).
* :func:`iter_image_paths` expands files and folders (recursively) into the image files to process.

Conversions, the same for files and arrays:

* grayscale (HxW or HxWx1) is replicated to three channels;
* an alpha channel is **dropped**, not composited: the colour channels are used as stored, which is what
  ``cv2.imread(path, cv2.IMREAD_COLOR)`` and MediaPipe do with RGBA input;
* 16-bit values are scaled to 8 bits with rounding (``round(v / 257)``, so 65535 -> 255), never clipped;
* float arrays must lie in [0, 1] and are scaled by 255 with rounding;
* palette, CMYK, YCbCr, 1-bit and other Pillow modes are converted to RGB by Pillow.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import numpy as np

__all__ = ["ImageError", "load_image", "decode_image", "as_rgb_uint8", "iter_image_paths", "IMAGE_EXTENSIONS",
           "MAX_PIXELS"]

#: File extensions (lower case, with the dot) that :func:`iter_image_paths` picks up in folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

#: Largest image :func:`load_image` decodes (width x height): 2**29 pixels, 1.5 GiB as RGB uint8.
#: Pillow's own decompression-bomb limit (about 179 megapixels) is raised to this while loading.
MAX_PIXELS = 1 << 29

_EXIF_ORIENTATION = 0x0112
_PILLOW_LIMIT_LOCK = threading.Lock()


class ImageError(ValueError):
    """An image file that cannot be used. ``str(error)`` is one user-facing line, ``"<path>: <problem>"``;
    the parts are in ``path`` and ``problem``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(f"{self.path}: {self.problem}")


# -- arrays -------------------------------------------------------------------------------------------------


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` as a C-contiguous RGB uint8 HxWx3 array (the input itself when it already is one).

    Accepts HxW, HxWx1 (grayscale), HxWx3 (RGB) and HxWx4 (RGBA: alpha dropped), with dtype uint8, uint16
    (scaled by ``round(v / 257)``) or floating point in [0, 1] (scaled by 255, rounded). Channel order is
    taken to be RGB; convert OpenCV's BGR first. Anything else raises ValueError with a clear message.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected an image as a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels (gray, RGB, RGBA), got an array of shape {image.shape}")
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC image array, got {image.ndim} dimensions (shape {image.shape})")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image array (shape {image.shape})")
    image = _to_uint8(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    dtype = image.dtype
    if dtype == np.uint8:
        return image
    if dtype == np.uint16:
        # round(v / 257): 0 -> 0, 65535 -> 255, exact for 8-bit values stored as v * 257
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if dtype.kind == "f":
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("float image array contains NaN or infinity")
        tol = 1e-6
        if lo < -tol or hi > 1 + tol:
            hint = " (divide a 0-255 image by 255)" if hi <= 255 + tol and lo >= -tol else ""
            raise ValueError(f"float image values must be in [0, 1], got range [{lo:g}, {hi:g}]{hint}")
        return np.rint(np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported image dtype {dtype}; expected uint8, uint16 or float in [0, 1]")


# -- files --------------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 HxWx3, upright (the EXIF orientation applied).

    Grayscale, grayscale+alpha, RGBA, palette, CMYK and 16-bit images are converted (see the module
    docstring; alpha is dropped). Multi-frame files (GIF, TIFF pages) give their first frame. Raises
    :class:`ImageError` for a missing file, a folder, an empty, truncated or corrupt file, a file that is
    not an image, an image format that cannot be decoded, or an image over :data:`MAX_PIXELS`.
    """
    name = os.fspath(path)
    return decode_image(_read_bytes(Path(name), name), name)


def decode_image(data: bytes, name: str | os.PathLike) -> np.ndarray:
    """Decode the bytes of an image file (read from anywhere: object storage, an archive, a Parquet column)
    as :func:`load_image` does a file: RGB uint8 HxWx3, upright. ``name`` is the file's name or path, used in
    the messages and, by its extension, to tell a wrong file type from a corrupt image; nothing is read
    from it. Raises :class:`ImageError`, with the same messages as :func:`load_image`, for empty, truncated,
    corrupt, non-image and too large data."""
    name = os.fspath(name)
    p = Path(name)
    if not data:
        raise ImageError(name, "empty file (0 bytes)")

    from PIL import Image, UnidentifiedImageError

    fmt = "image"
    try:
        with _pillow_pixel_limit(Image):  # only the header is read here: threads decode side by side below
            im = Image.open(BytesIO(data))
        fmt = im.format or "image"
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise ImageError(name, f"image too large ({width}x{height} pixels, more than {MAX_PIXELS})")
        array = _turbo_jpeg(data) if fmt == "JPEG" and im.mode == "RGB" else None
        if array is None:
            im.load()  # full decode: this is where truncated and corrupt data are found
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(name, _unidentified_problem(p, data)) from None
    except Image.DecompressionBombError as e:
        raise ImageError(name, f"image too large ({e})") from None
    except MemoryError:
        raise ImageError(name, "not enough memory to decode this image") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, struct.error...
        raise ImageError(name, _decode_problem(fmt, e)) from None

    try:
        if array is None:
            array = _pixels(im, fmt, data)
        orientation = _orientation(im)
    except _UnsupportedPixels as e:
        raise ImageError(name, f"unsupported {fmt} pixel format ({e})") from None
    except MemoryError:
        raise ImageError(name, "not enough memory to decode this image") from None
    except Exception as e:
        raise ImageError(name, _decode_problem(fmt, e)) from None
    finally:
        im.close()
    try:
        rgb = as_rgb_uint8(array)
    except ValueError as e:
        raise ImageError(name, f"unsupported {fmt} pixel format ({e})") from None
    return np.ascontiguousarray(_apply_orientation(rgb, orientation))


class _UnsupportedPixels(Exception):
    pass


def _turbo_jpeg(data: bytes) -> np.ndarray | None:
    """The RGB pixels (HxWx3 uint8, not yet oriented) of a colour JPEG decoded by libjpeg-turbo through
    simplejpeg: the pixels Pillow gives (both use libjpeg-turbo's accurate DCT and smooth upsampling; equal on all
    4,529 colour JPEGs of our test data) in about 0.5 ms instead of 1.4 ms for a 384 px photo. ``None`` when
    simplejpeg is not installed or does not take the file: it refuses truncated or corrupt data (strict mode)
    and some unusual chroma subsamplings, and Pillow then decodes the file or reports its problem."""
    try:
        import simplejpeg
    except ImportError:
        return None
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError:
        return None


def _read_bytes(p: Path, name: str) -> bytes:
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageError(name, "no such file or directory") from None
    except OSError as e:
        raise ImageError(name, f"cannot access the file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(name, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(name, "not a regular file")
    if st.st_size == 0:
        raise ImageError(name, "empty file (0 bytes)")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(name, f"cannot read the file ({e.strerror or e})") from None
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return data


@contextmanager
def _pillow_pixel_limit(Image):  # noqa: N803 - the PIL.Image module
    """Let Pillow open images up to :data:`MAX_PIXELS` (its default refuses ~179 MP as a decompression
    bomb), restoring its limit afterwards."""
    with _PILLOW_LIMIT_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        if old is not None and old < MAX_PIXELS:
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _unidentified_problem(p: Path, data: bytes) -> str:
    suffix = p.suffix.lower()
    head = data[:1024]
    looks_text = b"\x00" not in head and _is_text(head)
    if suffix and suffix not in IMAGE_EXTENSIONS and suffix not in (".gif", ".ppm", ".pgm", ".pbm", ".ico"):
        kind = "a text file" if looks_text else "not a recognised image"
        return (f"unsupported file format '{suffix}' ({kind}; supported: "
                f"{', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
    if looks_text:
        return "not an image: the file contains text"
    return "not an image, or an image format that cannot be read (unrecognised file contents)"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sample is still text
        try:
            head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _decode_problem(fmt: str, e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    low = msg.lower()
    if "truncated" in low or "broken data stream" in low or isinstance(e, EOFError) or "premature" in low:
        return f"truncated or incomplete {fmt} file ({msg})"
    if "decoder" in low and ("not available" in low or "unknown" in low):
        return f"unsupported {fmt} variant: cannot decode it ({msg})"
    return f"corrupt or unreadable {fmt} data ({msg})"


def _bits_per_sample(im, fmt: str, data: bytes) -> int:
    """Bits per channel where Pillow would silently reduce them to 8 (16-bit colour PNG and TIFF)."""
    if fmt == "PNG" and data[12:16] == b"IHDR" and len(data) > 24:
        return data[24]
    if fmt == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        if bits is not None:
            try:
                return max(int(b) for b in (bits if isinstance(bits, tuple) else (bits,)))
            except (TypeError, ValueError):
                return 8
    return 8


def _pixels(im, fmt: str, data: bytes) -> np.ndarray:
    """The decoded pixels as uint8/uint16/float32 HxW[xC] in RGB(A) order (not yet oriented)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16, copy=False)
    if mode == "I":  # 32-bit integer gray: Pillow's mode for most 16-bit grayscale sources
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise _UnsupportedPixels("32-bit integer values outside 0..65535")
        return a.astype(np.uint16)
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode in ("RGB", "RGBA", "LA") and _bits_per_sample(im, fmt, data) > 8:
        # Pillow keeps only the high byte of 16-bit colour; OpenCV gives the full values (BGR[A] order)
        import cv2

        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if a is not None and a.dtype == np.uint16 and a.ndim in (2, 3):
            if a.ndim == 3 and a.shape[2] == 2:
                return a[:, :, 0]
            if a.ndim == 3 and a.shape[2] >= 3:
                return a[:, :, [2, 1, 0]] if a.shape[2] == 3 else a[:, :, [2, 1, 0, 3]]
            return a
        # otherwise fall through to Pillow's 8-bit values
    if mode in ("RGB", "RGBA", "L"):
        return np.asarray(im)
    if mode == "LA":
        return np.asarray(im)[:, :, 0]
    if mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"):
        return np.asarray(im.convert("RGB"))
    return np.asarray(im.convert("RGB"))  # any other mode Pillow knows how to convert


def _orientation(im) -> int:
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # unreadable EXIF: show the image as stored, as viewers do
        return 1
    return value if 1 <= value <= 8 else 1


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation ``orientation`` (1-8) to an HxWxC array (as ``PIL.ImageOps.exif_transpose``)."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(a, 1)
    return a


# -- paths --------------------------------------------------------------------------------------------------


def iter_image_paths(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """The image files named by ``paths``, in order: a file is yielded as given (whatever its extension,
    so that :func:`load_image` can say what is wrong with it); a folder is searched recursively for files
    with an extension in :data:`IMAGE_EXTENSIONS` (any case), yielded sorted, skipping hidden files and
    folders (names starting with ``.``) and not following symbolic links to folders. A path that does not
    exist is yielded too, so that loading it reports it instead of it being skipped silently. A file
    reached twice is yielded once.
    """
    seen: set[str] = set()
    for item in paths:
        p = Path(item)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for f in files:
                    if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                        found.append(Path(root, f))
            found.sort(key=lambda q: q.relative_to(p).parts)
            candidates: Iterable[Path] = found
        else:
            candidates = (p,)
        for q in candidates:
            key = os.path.normcase(os.path.abspath(q))
            if key in seen:
                continue
            seen.add(key)
            yield q
