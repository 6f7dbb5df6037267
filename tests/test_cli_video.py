"""``attnmesh video``, driven as a subprocess on a real talking-head clip from ../shared/data: frame records
(schema, monotonic indices and container timestamps), ``--no-smooth`` landmarks equal to the Python API in
video mode, the default stabilisation (less jitter, lag <= 2 frames, measured as benchmarks/smoothing_jitter.py
does; the same as LandmarkStabilizer on the raw output; ``--smooth`` a no-op alias), ``--render``,
and one-line errors for files that are not usable videos."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import VIDEOS
from test_cli_outputs import run_cli, stderr_lines

from attnmesh.io.outputs import jsonl_schema, parquet_schema

av = pytest.importorskip("av")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from smoothing_jitter import measure  # noqa: E402

CLIP = VIDEOS / "talking-d3.mp4"  # 512x512, 30 fps, one face; a talking head with quiet stretches
FRAMES = 90  # 3 s
API_FRAMES = 30  # frames compared with the Python API


def decode(path: Path, count: int, pixels: bool = True) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        images, stamps = [], []
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="rgb24") if pixels else None)
            stamps.append(float(frame.time))
            if len(images) == count:
                break
    return images, stamps


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("video")
    raw, smooth, render = root / "raw.jsonl", root / "smooth.parquet", root / "overlay.mp4"
    procs = {
        "raw": run_cli("video", CLIP, "--out", raw, "--no-smooth", "--max-frames", FRAMES, timeout=200),
        "smooth": run_cli("video", CLIP, "--out", smooth, "--render", render, "--max-frames", FRAMES, timeout=200),
    }
    return {"root": root, "raw": raw, "smooth": smooth, "render": render, "procs": procs}


def raw_records(runs) -> list[dict]:
    return [json.loads(line) for line in runs["raw"].read_text().splitlines()]


def landmarks_from_records(records: list[dict]) -> np.ndarray:
    """(T, 478, 3), NaN on frames without a face (the first face of each frame)."""
    out = np.full((len(records), 478, 3), np.nan)
    for i, r in enumerate(records):
        if r["faces"]:
            out[i] = r["faces"][0]["landmarks"]
    return out


def test_runs_succeed_with_a_summary_line(runs):
    for name, proc in runs["procs"].items():
        assert proc.returncode == 0, (name, proc.stderr)
        lines = stderr_lines(proc)
        assert len(lines) == 1 and lines[0].startswith(f"attnmesh: {FRAMES} frames ("), lines
    assert "smoothed" in stderr_lines(runs["procs"]["smooth"])[0]
    assert sorted(p.name for p in runs["root"].iterdir()) == ["overlay.mp4", "raw.jsonl", "smooth.parquet"]


def test_frame_records_match_the_schema_with_monotonic_indices_and_timestamps(runs):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(jsonl_schema())
    records = raw_records(runs)
    assert len(records) == FRAMES
    for r in records:
        errors = list(validator.iter_errors(r))
        assert not errors, errors[0].message
        assert r["path"] == str(CLIP) and (r["width"], r["height"]) == (512, 512)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    stamps = np.array([r["timestamp"] for r in records])
    assert (np.diff(stamps) > 0).all()
    _, container_stamps = decode(CLIP, FRAMES, pixels=False)
    np.testing.assert_allclose(stamps, container_stamps, atol=1e-6)  # the container's presentation times
    np.testing.assert_allclose(np.diff(stamps), 1 / 30, atol=1e-3)
    # one tracked face all along: the same track id, detected once and then tracked
    assert all(len(r["faces"]) == 1 for r in records)
    assert {r["faces"][0]["track_id"] for r in records} == {0}
    assert records[0]["faces"][0]["detection_score"] is not None
    assert sum(r["faces"][0]["detection_score"] is None for r in records) > FRAMES * 0.9


def test_landmarks_equal_the_python_api_in_video_mode(runs):
    import torch

    import attnmesh

    torch.set_num_threads(1)
    records = raw_records(runs)[:API_FRAMES]
    images, _ = decode(CLIP, API_FRAMES)
    with attnmesh.FaceMesh(static_image_mode=False, max_num_faces=1) as fm:
        api = [fm.process(im) for im in images]
    for r, faces in zip(records, api):
        assert len(r["faces"]) == len(faces)
        for got, face in zip(r["faces"], faces):
            np.testing.assert_allclose(got["landmarks"], face.landmarks, rtol=0, atol=5e-4 + 1e-4)
            assert got["track_id"] == face.track_id


def test_smooth_reduces_jitter_with_at_most_two_frames_of_lag(runs):
    pq = pytest.importorskip("pyarrow.parquet")
    schema = pq.read_schema(runs["smooth"])
    assert schema.equals(parquet_schema(478), check_metadata=False)
    table = pq.read_table(runs["smooth"]).to_pylist()
    assert [r["frame"] for r in table] == list(range(FRAMES))  # one face per frame: one row per frame
    smooth = np.array([r["landmarks"] for r in table], np.float64).reshape(FRAMES, 478, 3)
    raw_recs = raw_records(runs)
    raw = landmarks_from_records(raw_recs)
    # the same frames and timestamps; the first sample passes through the filter unchanged
    assert [r["timestamp"] for r in table] == [r["timestamp"] for r in raw_recs]
    np.testing.assert_allclose(smooth[0], raw[0], atol=2e-4)
    m = measure(raw, smooth)
    print(f"\n{CLIP.name} {FRAMES} frames: jitter {m['jitter_raw']:.3f} -> {m['jitter']:.3f} px "
          f"({m['jitter_raw'] / m['jitter']:.2f}x), still {m['still_raw']:.3f} -> {m['still']:.3f} px "
          f"({m['still_raw'] / m['still']:.2f}x), lag {m['lag']:.2f} frames")
    assert m["frames"] == FRAMES
    assert m["jitter"] < m["jitter_raw"] / 1.2
    assert m["still"] < m["still_raw"] / 1.5
    assert 0 <= m["lag"] <= 2


def test_default_is_the_stabiliser_on_the_raw_output_and_smooth_is_an_alias(runs, tmp_path):
    from attnmesh.pipeline.stabilizer import LandmarkStabilizer

    pq = pytest.importorskip("pyarrow.parquet")
    table = pq.read_table(runs["smooth"]).to_pylist()
    default = np.array([r["landmarks"] for r in table], np.float64).reshape(FRAMES, 478, 3)
    raw_recs = raw_records(runs)
    stabilizer = LandmarkStabilizer()
    expected = np.stack([stabilizer(lm, r["timestamp"]) for lm, r in
                         zip(landmarks_from_records(raw_recs), raw_recs)]).astype(np.float64)
    # the raw landmarks were rounded to 1e-3 px in the file: the refiltered ones agree to a few 1e-3 px
    assert np.abs(default - expected).max() < 0.02
    assert np.abs(default - landmarks_from_records(raw_recs)).max() > 0.1  # and it does filter
    alias = tmp_path / "alias.jsonl"
    proc = run_cli("video", CLIP, "--out", alias, "--smooth", "--max-frames", 10, timeout=200)
    assert proc.returncode == 0, proc.stderr
    got = landmarks_from_records([json.loads(line) for line in alias.read_text().splitlines()])
    np.testing.assert_allclose(got, default[:10], atol=1e-3 + 1e-9)


def test_render_writes_every_frame_with_the_mesh(runs):
    records = raw_records(runs)
    images, _ = decode(CLIP, 5)
    rendered, _ = decode(runs["render"], FRAMES + 10)
    assert len(rendered) == FRAMES and rendered[0].shape == images[0].shape
    for i in (0, 4):
        diff = np.abs(rendered[i].astype(int) - images[i].astype(int)).max(2)
        lm = np.array(records[i]["faces"][0]["landmarks"])  # raw landmarks: the smoothed ones are within a px
        (x0, y0), (x1, y1) = lm[:, :2].min(0).astype(int), lm[:, :2].max(0).astype(int)
        inside = diff[y0:y1, x0:x1]
        outside = diff.copy()
        outside[max(0, y0 - 20):y1 + 20, max(0, x0 - 20):x1 + 20] = 0
        # the mesh changes many pixels on the face; elsewhere only compression noise
        assert (inside > 40).mean() > 0.05 and np.percentile(outside, 99) < 20, i


def _zero_frame_mp4(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()


def _truncated_mp4(path: Path) -> None:
    """The clip remuxed with its index first (faststart), then cut to a tenth: FFmpeg decodes what is there
    and stops without an error."""
    with av.open(str(CLIP)) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 10])


@pytest.mark.parametrize("kind,words", [
    ("missing", "no such file"),
    ("zero-bytes", "empty file"),
    ("zero-frames", "empty"),
    ("text", "not a video"),
    ("image", "not a video"),
    ("folder", "directory"),
])
def test_unusable_videos_are_one_line_and_write_nothing(tmp_path, kind, words):
    src = tmp_path / "in" / f"{kind}.mp4"
    src.parent.mkdir()
    if kind == "zero-bytes":
        src.write_bytes(b"")
    elif kind == "zero-frames":
        _zero_frame_mp4(src)
    elif kind == "text":
        src.write_text("this is not a video\n" * 50)
    elif kind == "image":
        src = Path(__file__).resolve().parents[1] / "src" / "attnmesh" / "assets" / "astronaut.png"
    elif kind == "folder":
        src.mkdir()
    out = tmp_path / "out" / "frames.jsonl"
    out.parent.mkdir()
    proc = run_cli("video", src, "--out", out, "--render", tmp_path / "out" / "r.mp4", timeout=60)
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"attnmesh: error: {src}: ") and words in lines[0], lines
    assert list(out.parent.iterdir()) == []


def test_truncated_video_keeps_what_was_decoded_and_exits_1(tmp_path):
    src = tmp_path / "cut.mp4"
    _truncated_mp4(src)
    out = tmp_path / "frames.jsonl"
    proc = run_cli("video", src, "--out", out, timeout=120)
    lines = stderr_lines(proc)
    assert proc.returncode == 1, proc.stderr
    assert lines[-1].startswith(f"attnmesh: error: {src}: damaged video") and "truncated" in lines[-1], lines
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert 0 < len(records) < 354 and f"frames 0 to {len(records) - 1}" in lines[-1]


def write_rotated_mp4(path: Path, frames: list[np.ndarray], degrees_clockwise: int) -> None:
    """An H.264 MP4 of ``frames`` whose track header carries a display rotation, as phones write them: the
    stored pixels are shown turned by ``degrees_clockwise``. (PyAV cannot set the matrix, so the 'tkhd' box
    is patched: 16.16 fixed-point a, b, c, d of the rotation, 2.30 w = 1.)"""
    import struct

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd")
    matrix = box + 8 + (32 if data[box + 4] == 1 else 20) + 16  # after the times, track id, duration, layers
    one = 1 << 16
    a, b, c, d = {90: (0, one, -one, 0), 180: (-one, 0, 0, -one), 270: (0, -one, one, 0)}[degrees_clockwise]
    data[matrix:matrix + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


def test_rotated_phone_video_is_read_upright(tmp_path):
    """A portrait clip stored as landscape pixels plus a 90-degree display rotation: frames come out as OpenCV
    (an independent reader that applies the rotation) shows them, with the face found upright."""
    import cv2

    from attnmesh.io.video import VideoReader

    upright = [np.ascontiguousarray(f[:, 64:448]) for f in decode(CLIP, 6)[0]]  # 512 tall, 384 wide
    path = tmp_path / "portrait.mp4"
    write_rotated_mp4(path, [np.ascontiguousarray(np.rot90(f, 1)) for f in upright], 90)
    with VideoReader(path) as video:
        ours = [image for _, _, image in video.frames()]
    cap = cv2.VideoCapture(str(path))
    theirs = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        theirs.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(ours) == len(theirs) == 6 and ours[0].shape == theirs[0].shape == (512, 384, 3)
    for a, b, c in zip(ours, theirs, upright):
        assert np.abs(a.astype(int) - b).mean() < 1.0  # the same decoder, maybe another YUV -> RGB rounding
        assert np.abs(a.astype(int) - c).mean() < 4.0  # H.264 loss only

    out = tmp_path / "portrait.jsonl"
    r = run_cli("video", path, "--out", out, timeout=120)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(rec["width"], rec["height"]) for rec in records] == [(384, 512)] * 6
    assert all(len(rec["faces"]) == 1 for rec in records)


def test_makeup_and_puppet_read_and_write_videos_as_video_does(tmp_path):
    """makeup and puppet use the reader and writer of ``attnmesh video`` (PyAV): a phone's rotated clip comes
    out of makeup upright (the 384x512 frames ``video`` reports) at the input's frame rate, and puppet's
    timestamps are the container's, the ones ``video`` writes."""
    import av

    upright = [np.ascontiguousarray(f[:, 64:448]) for f in decode(CLIP, 6)[0]]
    path = tmp_path / "portrait.mp4"
    write_rotated_mp4(path, [np.ascontiguousarray(np.rot90(f, 1)) for f in upright], 90)
    lips = tmp_path / "lips.mp4"
    r = run_cli("makeup", path, "--lipstick", "red", "--out", lips, timeout=120)
    assert r.returncode == 0, r.stderr
    with av.open(str(path)) as src, av.open(str(lips)) as out:
        rate_in, rate_out = src.streams.video[0].average_rate, out.streams.video[0].average_rate
        frames = [f.to_ndarray(format="rgb24") for f in out.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (512, 384, 3) and rate_out == rate_in
    assert np.abs(frames[0].astype(int) - upright[0]).mean() < 6.0  # upright, lipstick and H.264 aside
    coeffs, per_frame = tmp_path / "coeffs.jsonl", tmp_path / "frames.jsonl"
    assert run_cli("puppet", path, "--out", coeffs, timeout=120).returncode == 0
    assert run_cli("video", path, "--out", per_frame, timeout=120).returncode == 0
    ours = [json.loads(line)["timestamp"] for line in coeffs.read_text().splitlines()]
    theirs = [json.loads(line)["timestamp"] for line in per_frame.read_text().splitlines()]
    assert len(ours) == 6 and ours == pytest.approx(theirs, abs=1e-6)
