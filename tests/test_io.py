"""attnmesh.io: image files and arrays to RGB uint8, checked against independent encoders/computations."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from reference import PHOTOS

from attnmesh.io import images as io_images
from attnmesh.io import ImageError, as_rgb_uint8, iter_image_paths, load_image

PHOTO = PHOTOS / "face-obama-240p.jpg"  # 427x240, small and real


@pytest.fixture(scope="module")
def photo_rgb() -> np.ndarray:
    bgr = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)
    assert bgr is not None
    return np.ascontiguousarray(bgr[:, :, ::-1])


# -- good files -------------------------------------------------------------------------------------------


def test_jpeg_matches_opencv(photo_rgb):
    out = load_image(PHOTO)
    assert out.dtype == np.uint8 and out.shape == photo_rgb.shape and out.flags.c_contiguous
    # both use libjpeg(-turbo); allow a little for IDCT/upsampling differences between builds
    assert np.abs(out.astype(int) - photo_rgb).mean() < 1.0


def _pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def test_colour_jpegs_are_pillows_pixels_with_or_without_simplejpeg(monkeypatch):
    """Colour JPEGs go through libjpeg-turbo by simplejpeg when it takes them: the pixels must be Pillow's, for
    the photos it decodes and for the one whose chroma subsampling it refuses (deepface-img47.jpg: Pillow
    decodes it), and the same again with simplejpeg missing."""
    import simplejpeg

    photos = sorted(PHOTOS.glob("*.jpg"))
    refused = PHOTOS / "deepface-img47.jpg"
    with pytest.raises(ValueError):
        simplejpeg.decode_jpeg(refused.read_bytes(), colorspace="RGB")
    taken = [p for p in photos if p != refused]
    assert len(taken) >= 10
    for p in taken + [refused]:
        np.testing.assert_array_equal(load_image(p), _pillow_rgb(p), err_msg=p.name)
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import fails: Pillow decodes
    for p in taken[:3]:
        np.testing.assert_array_equal(load_image(p), _pillow_rgb(p), err_msg=p.name)


def test_16bit_png_from_8bit_image_decodes_back(tmp_path, photo_rgb):
    f = tmp_path / "sixteen.png"
    assert cv2.imwrite(str(f), photo_rgb[:, :, ::-1].astype(np.uint16) * 257)
    assert cv2.imread(str(f), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really 16-bit on disk
    out = load_image(f)
    assert out.shape == photo_rgb.shape
    assert np.abs(out.astype(int) - photo_rgb).max() <= 1


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_colour_is_rounded_not_truncated_or_clipped(tmp_path, ext):
    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, (37, 53, 3), dtype=np.uint16)
    rgb16[0, 0] = 65535
    rgb16[0, 1] = 128  # round(128/257) = 0
    rgb16[0, 2] = 129  # round(129/257) = 1, where >> 8 gives 0
    f = tmp_path / f"rand16{ext}"
    assert cv2.imwrite(str(f), rgb16[:, :, ::-1])
    expected = np.floor(rgb16.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    out = load_image(f)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1, 0] == 0 and out[0, 2, 0] == 1


def test_16bit_grayscale_png(tmp_path, photo_rgb):
    gray = cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2GRAY)
    f = tmp_path / "gray16.png"
    assert cv2.imwrite(str(f), gray.astype(np.uint16) * 257)
    out = load_image(f)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def test_grayscale_png(tmp_path, photo_rgb):
    gray = cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2GRAY)
    f = tmp_path / "gray.png"
    assert cv2.imwrite(str(f), gray)
    np.testing.assert_array_equal(load_image(f), np.stack([gray] * 3, axis=2))


def test_rgba_png_drops_alpha(tmp_path, photo_rgb):
    h, w = photo_rgb.shape[:2]
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))  # transparent to opaque
    f = tmp_path / "rgba.png"
    assert cv2.imwrite(str(f), np.dstack([photo_rgb[:, :, ::-1], alpha]))
    np.testing.assert_array_equal(load_image(f), photo_rgb)


def test_gray_alpha_and_palette_png(tmp_path, photo_rgb):
    gray = cv2.cvtColor(photo_rgb, cv2.COLOR_RGB2GRAY)
    la = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, np.full_like(gray, 40)]), "LA").save(la)
    np.testing.assert_array_equal(load_image(la), np.stack([gray] * 3, axis=2))

    pal = Image.fromarray(photo_rgb).quantize(64)
    f = tmp_path / "palette.png"
    pal.save(f)
    assert Image.open(f).mode == "P"
    lut = np.array(pal.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(load_image(f), lut[np.asarray(pal)])


def test_lossless_bmp_and_webp(tmp_path, photo_rgb):
    Image.fromarray(photo_rgb).save(tmp_path / "a.bmp")
    Image.fromarray(photo_rgb).save(tmp_path / "a.webp", lossless=True)
    np.testing.assert_array_equal(load_image(tmp_path / "a.bmp"), photo_rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "a.webp"), photo_rgb)


@pytest.mark.parametrize("orientation,k", [(6, 1), (8, -1)])
def test_exif_rotated_jpeg_is_shown_upright(tmp_path, photo_rgb, orientation, k):
    # a camera held sideways stores the pixels rotated and says how to turn them: 6 = turn 90 degrees
    # clockwise to display, 8 = 90 degrees counter-clockwise
    stored = np.ascontiguousarray(np.rot90(photo_rgb, k))
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    f = tmp_path / f"rotated{orientation}.jpg"
    im.save(f, quality=95, exif=exif.tobytes())
    assert Image.open(f).size == (stored.shape[1], stored.shape[0])  # really stored sideways
    out = load_image(f)
    assert out.shape == photo_rgb.shape
    assert np.abs(out.astype(int) - photo_rgb).mean() < 3.0
    # and not upside down: the 180-degree turn of the photo is far from it
    assert np.abs(out.astype(int) - photo_rgb[::-1, ::-1]).mean() > 20.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow_exif_transpose(tmp_path, photo_rgb, orientation):
    im = Image.fromarray(photo_rgb[:60, :100].copy())
    exif = im.getexif()
    exif[0x0112] = orientation
    f = tmp_path / f"o{orientation}.png"  # lossless, so the comparison is exact
    im.save(f, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(f)).convert("RGB"))
    np.testing.assert_array_equal(load_image(f), expected)


def test_pillow_decompression_bomb_limit_is_lifted_and_restored(tmp_path, monkeypatch, photo_rgb):
    f = tmp_path / "big.png"
    Image.fromarray(photo_rgb).save(f)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses > 2 x 1000 pixels
    with pytest.raises(Image.DecompressionBombError):
        Image.open(f)
    np.testing.assert_array_equal(load_image(f), photo_rgb)
    assert Image.MAX_IMAGE_PIXELS == 1000
    monkeypatch.setattr(io_images, "MAX_PIXELS", 5000)
    with pytest.raises(ImageError, match="too large"):
        load_image(f)


# -- bad files --------------------------------------------------------------------------------------------


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, a word the message must contain)."""
    data = PHOTO.read_bytes()
    png = cv2.imencode(".png", cv2.imread(str(PHOTO)))[1].tobytes()
    files = {
        "missing": (tmp / "missing.jpg", "no such file"),
        "directory": (tmp / "folder.jpg", "directory"),
        "empty": (tmp / "empty.jpg", "empty"),
        "truncated_jpeg": (tmp / "half.jpg", "truncated"),
        "truncated_png": (tmp / "half.png", "truncated"),
        "text_as_jpg": (tmp / "notes.jpg", "not an image"),
        "text_as_png": (tmp / "notes.png", "not an image"),
        "garbage": (tmp / "noise.png", "not an image"),
        "jpeg_header_only": (tmp / "header.jpg", "truncated"),
        "unsupported": (tmp / "photo.heic", "unsupported"),
    }
    files["directory"][0].mkdir()
    files["empty"][0].write_bytes(b"")
    files["truncated_jpeg"][0].write_bytes(data[: len(data) // 2])
    files["truncated_png"][0].write_bytes(png[: len(png) // 2])
    files["text_as_jpg"][0].write_text("this is not a photo\n")
    files["text_as_png"][0].write_text("name,score\nalice,1\n")
    files["garbage"][0].write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    # the start of a real JPEG: cut inside its header segments
    files["jpeg_header_only"][0].write_bytes(data[:2000])
    files["unsupported"][0].write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(200))
    return files


BAD = ["missing", "directory", "empty", "truncated_jpeg", "truncated_png", "text_as_jpg", "text_as_png",
       "garbage", "jpeg_header_only", "unsupported"]


@pytest.mark.parametrize("case", BAD)
def test_bad_file_raises_one_line_image_error_naming_the_file(tmp_path, case):
    path, word = _bad_files(tmp_path)[case]
    with pytest.raises(ImageError) as info:
        load_image(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert word.lower() in msg.lower(), msg
    assert info.value.path == str(path) and info.value.problem in msg
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", [c for c in BAD if c not in ("missing", "directory")])
def test_decode_image_gives_the_messages_of_load_image(tmp_path, case, photo_rgb):
    """decode_image (bytes read elsewhere, e.g. by a cluster worker) fails exactly as load_image on the file."""
    path, _ = _bad_files(tmp_path)[case]
    with pytest.raises(ImageError) as from_file:
        load_image(path)
    with pytest.raises(ImageError) as from_bytes:
        io_images.decode_image(path.read_bytes(), path)
    assert str(from_bytes.value) == str(from_file.value)
    np.testing.assert_array_equal(io_images.decode_image(PHOTO.read_bytes(), "any.jpg"), photo_rgb)


def test_truncated_jpeg_is_an_error_although_opencv_decodes_it(tmp_path):
    """The case this module exists for: OpenCV returns a half-grey image for a JPEG cut in half."""
    data = PHOTO.read_bytes()
    half = tmp_path / "half.jpg"
    half.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(half)) is not None
    with pytest.raises(ImageError, match="truncated"):
        load_image(half)


# -- arrays -----------------------------------------------------------------------------------------------


def test_as_rgb_uint8_conversions():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert as_rgb_uint8(rgb) is rgb  # already fine: no copy
    gray = rgb[:, :, 0].copy()
    expected_gray = np.stack([gray] * 3, axis=2)
    np.testing.assert_array_equal(as_rgb_uint8(gray), expected_gray)
    np.testing.assert_array_equal(as_rgb_uint8(gray[:, :, None]), expected_gray)
    np.testing.assert_array_equal(as_rgb_uint8(np.dstack([rgb, gray])), rgb)
    v16 = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    np.testing.assert_array_equal(as_rgb_uint8(v16), np.floor(v16 / 257.0 + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(as_rgb_uint8(rgb.astype(np.uint16) * 257), rgb)
    for dtype in (np.float16, np.float32, np.float64):
        np.testing.assert_array_equal(as_rgb_uint8((rgb / 255.0).astype(dtype)), rgb)
    flipped = rgb[:, ::-1]
    out = as_rgb_uint8(flipped)
    assert out.flags.c_contiguous and np.array_equal(out, flipped)
    out = as_rgb_uint8(np.dstack([rgb, gray])[:, :, :4])
    assert out.flags.c_contiguous and out.shape == (5, 7, 3)


@pytest.mark.parametrize("bad,word", [
    (np.zeros((4,), np.uint8), "dimensions"),
    (np.zeros((2, 4, 4, 3), np.uint8), "dimensions"),
    (np.zeros((4, 4, 2), np.uint8), "channels"),
    (np.zeros((4, 4, 5), np.uint8), "channels"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.zeros((4, 0), np.uint8), "empty"),
    (np.zeros((4, 4, 3), bool), "dtype"),
    (np.zeros((4, 4, 3), np.int64), "dtype"),
    (np.zeros((4, 4, 3), np.complex64), "dtype"),
    (np.full((4, 4, 3), 200.0, np.float32), "[0, 1]"),
    (np.full((4, 4, 3), -0.5), "[0, 1]"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    ([[1, 2], [3, 4]], "numpy array"),
])
def test_as_rgb_uint8_rejects(bad, word):
    with pytest.raises(ValueError) as info:
        as_rgb_uint8(bad)
    assert word in str(info.value)


# -- paths ------------------------------------------------------------------------------------------------


def test_iter_image_paths(tmp_path):
    root = tmp_path / "photos"
    for rel in ["b.jpg", "a.PNG", "notes.txt", "sub/c.jpeg", "sub/deeper/d.TIFF", "sub/e.webp", "z.bmp",
                ".hidden.jpg", ".cache/f.jpg", "x.tif", "y.gif"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    explicit = tmp_path / "listed.txt"
    explicit.write_text("x")
    missing = tmp_path / "nope.jpg"
    got = list(iter_image_paths([str(missing), root, explicit, root / "b.jpg"]))
    rel = [p.relative_to(root).as_posix() for p in got[1:-1]]
    assert got[0] == missing  # reported (by load_image), not skipped
    assert rel == ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.TIFF", "sub/e.webp", "x.tif", "z.bmp"]
    assert got[-1] == explicit  # a file named explicitly is kept whatever its extension
    (tmp_path / "empty_dir").mkdir()
    assert list(iter_image_paths([tmp_path / "empty_dir"])) == []  # the CLI says "no image files found"


def test_atomic_path_keeps_the_old_file_on_error_and_leaves_nothing_behind(tmp_path):
    """attnmesh.io.atomic: the target is the old file until the block completes, then the whole new one; a
    failing block leaves the old file and no temporary file; the new file gets a normal mode (not mkstemp's)."""
    import os

    from attnmesh.io.atomic import atomic_path, write_text_atomic

    target = tmp_path / "graph.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".onnx" and tmp != target
            tmp.write_text("half")
            assert target.read_text() == "old"
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["graph.onnx"]
    write_text_atomic(target, "new")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["graph.onnx"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_temporary_output_dropped_before_its_block_is_removed(tmp_path):
    """An exception (Ctrl-C, SIGTERM turned into one) between creating a TempFile and entering its 'with' block
    must not leave the hidden temporary file behind: it goes with the object."""
    import gc
    import os

    from attnmesh.io.outputs import TempFile

    target = tmp_path / "faces.parquet"
    tmp = TempFile(target, "--out")
    assert os.path.exists(tmp.path)
    del tmp
    gc.collect()
    assert os.listdir(tmp_path) == []
    with TempFile(target, "--out") as tmp:
        open(tmp.path, "w").write("rows")
    assert os.listdir(tmp_path) == ["faces.parquet"] and target.read_text() == "rows"


def test_a_signal_delivered_to_another_thread_waits_until_the_temporary_file_is_owned(tmp_path):
    """The operating system may deliver SIGINT/SIGTERM to any thread of the process (a process pool's manager
    thread, a runtime's workers); Python then runs the handler in the main thread at once. Creating a
    TempFile must still not be interrupted: the signal takes effect when the creation is done. Here a thread
    sends SIGINT to itself while the main thread is inside the guarded step (in a fresh interpreter: signals
    sent to a thread of the test process itself upset its other tests' native modules)."""
    import subprocess
    import sys

    code = """if True:
        import signal, threading, time
        from attnmesh.io import outputs
        # Python's own SIGINT handler, whatever this process inherited: a shell starts background jobs with
        # SIGINT ignored, and Python then keeps it ignored (the held signal, re-raised, would do nothing)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        steps = []
        try:
            with outputs._signals_held():
                worker = threading.Thread(target=lambda: signal.pthread_kill(threading.get_ident(), signal.SIGINT))
                worker.start()
                worker.join()
                deadline = time.monotonic() + 0.2
                while time.monotonic() < deadline:  # bytecodes run: the handler would have run here
                    steps.append(1)
                steps.append("done")
        except KeyboardInterrupt:
            print("interrupted after", steps[-1], signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.split() == ["interrupted", "after", "done", "True"], (out.stdout, out.stderr)
