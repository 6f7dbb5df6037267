"""Video files, as a careless or hostile user gives them to ``video``, ``makeup`` and ``puppet``: truncated,
missing, empty, text, audio only, a still photo, the output aimed at the input, a non-UTF-8 name, a run killed
with SIGTERM. Each test is named after what the user did."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ._support import (CLIP, SMALL_PHOTO, audio_only, count_frames, fingerprint, main, part_files, spawn,
                       terminate_when, truncated_video)

av = pytest.importorskip("av")

HEADER_FRAMES = 60  # the truncated clip: the first 60 frames of CLIP remuxed with faststart, half its bytes kept


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cut") / "cut.mp4"
    assert truncated_video(path, HEADER_FRAMES) == HEADER_FRAMES
    return path


@pytest.fixture(scope="module")
def truncated_runs(truncated, tmp_path_factory) -> dict[str, tuple[int, list[str], Path]]:
    """The three commands that read video, on the same truncated file."""
    out = tmp_path_factory.mktemp("cut-out")
    runs = {}
    for command, args, target in [
        ("video", ["--out", out / "frames.jsonl"], out / "frames.jsonl"),
        ("makeup", ["--lipstick", "red", "--out", out / "lips.mp4"], out / "lips.mp4"),
        ("puppet", ["--out", out / "coeffs.jsonl"], out / "coeffs.jsonl"),
    ]:
        code, err, _ = main(command, truncated, *args)
        runs[command] = (code, err, target)
    return runs


@pytest.mark.parametrize("command", ["video", "makeup", "puppet"])
def test_truncated_video_given_to_each_command_is_reported_with_exit_1(truncated_runs, truncated, command):
    code, err, target = truncated_runs[command]
    assert code == 1, err
    assert err[-1].startswith(f"attnmesh: error: {truncated}: damaged video, decoding stopped after frame "), err
    assert f"of the {HEADER_FRAMES} frames its header lists" in err[-1], err
    assert len(err) == 2, err  # the summary line and the error: no FFmpeg log lines
    decoded = int(err[-1].split("the output holds frames 0 to ")[1]) + 1
    assert 0 < decoded < HEADER_FRAMES
    # the output holds exactly the frames the message names
    if target.suffix == ".mp4":
        assert count_frames(target) == decoded
    else:
        assert len(target.read_text().splitlines()) == decoded


def test_truncated_video_is_reported_in_the_same_words_by_every_command(truncated_runs):
    messages = {command: err[-1] for command, (_, err, _) in truncated_runs.items()}
    assert len(set(messages.values())) == 1, messages


def test_the_issue_recipe_half_of_the_whole_clip_is_seen_as_truncated(tmp_path):
    """The full clip remuxed with faststart and cut in half, read by the shared reader (no model: fast)."""
    from attnmesh.io.video import VideoReader

    path = tmp_path / "half.mp4"
    frames = truncated_video(path, None)
    with VideoReader(path) as video:
        decoded = sum(1 for _ in video.frames())
        problem = video.finish()
    assert 0 < decoded < frames
    assert problem is not None and f"only {decoded} of the {frames} frames" in problem


@pytest.mark.parametrize("kind,words", [
    ("missing", "no such file"),
    ("empty", "empty file"),
    ("text", "not a video"),
    ("audio", "no video stream"),
])
@pytest.mark.parametrize("command", ["makeup", "puppet"])
def test_unusable_video_given_to_makeup_or_puppet_leaves_no_temporary_file(tmp_path, command, kind, words):
    src = tmp_path / "in.mp4"
    if kind == "empty":
        src.write_bytes(b"")
    elif kind == "text":
        src.write_text("this is not a video\n" * 50)
    elif kind == "audio":
        audio_only(src)
    out = tmp_path / "out"
    out.mkdir()
    if command == "makeup":
        args = ["makeup", src, "--lipstick", "red", "--out", out / "lips.mp4"]
    else:
        args = ["puppet", src, "--out", out / "coeffs.jsonl", "--render", out / "avatar.mp4"]
    code, err, _ = main(*args)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"attnmesh: error: {src}: ") and words in err[0], err
    assert list(out.iterdir()) == []  # not even a hidden .part file


@pytest.mark.parametrize("command", ["makeup", "puppet"])
def test_still_photo_given_as_a_video_is_refused_not_called_one_frame(tmp_path, command):
    still = tmp_path / "still.mp4"  # a JPEG under a video name
    shutil.copy(SMALL_PHOTO, still)
    args = (["--lipstick", "red", "--out", tmp_path / "o.mp4"] if command == "makeup"
            else ["--out", tmp_path / "o.jsonl"])
    code, err, _ = main(command, still, *args)
    assert code == 1 and len(err) == 1 and "an image, not a video" in err[0], err
    assert "1 frames" not in " ".join(err)
    code, err, _ = main("puppet", SMALL_PHOTO, "--out", tmp_path / "o.jsonl")  # a photo under its own name
    assert code == 1 and len(err) == 1 and "an image, not a video" in err[0], err
    assert part_files(tmp_path) == [] and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("args", [
    ["video", "{clip}", "--out", "{clip}"],
    ["video", "{clip}", "--out", "{dir}/f.jsonl", "--render", "{clip}"],
    ["makeup", "{clip}", "--lipstick", "red", "--out", "{clip}"],
    ["puppet", "{clip}", "--out", "{dir}/c.jsonl", "--render", "{clip}"],
], ids=["video-out", "video-render", "makeup-out", "puppet-render"])
def test_video_output_written_over_its_own_input_is_refused(tmp_path, args):
    clip = tmp_path / "clip.mp4"
    shutil.copy(CLIP, clip)
    before = fingerprint(tmp_path)
    code, err, _ = main(*[a.format(clip=clip, dir=tmp_path) for a in args])
    assert code == 2 and len(err) == 1 and f"{clip}: is an input and would be overwritten" in err[0], err
    assert fingerprint(tmp_path) == before


def test_video_with_a_non_utf8_file_name_writes_parquet(tmp_path):
    import pyarrow.parquet as pq

    name = os.path.join(os.fsencode(tmp_path), b"clip_\xe9.mp4")  # Latin-1 'é'
    shutil.copy(CLIP, os.fsdecode(name))
    out = tmp_path / "frames.parquet"
    code, err, _ = main("video", name, "--out", out, "--max-frames", "2")
    assert code == 0 and len(err) == 1 and err[0].startswith("attnmesh: 2 frames"), err
    table = pq.read_table(out)
    assert table.column("path").to_pylist() == [f"{tmp_path}/clip_\\xe9.mp4"] * 2
    assert table.column("path_bytes").to_pylist() == [name] * 2


@pytest.mark.parametrize("command", ["video", "makeup", "puppet"])
def test_video_command_killed_with_sigterm_leaves_no_temporary_file(tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    if command == "video":  # the --render temporary file appears with the first processed frame
        args = ["video", CLIP, "--out", out / "frames.parquet", "--render", out / "overlay.mp4"]
        ready = lambda: len(part_files(out)) == 2  # noqa: E731
    elif command == "makeup":  # its temporary video grows as frames are written
        args = ["makeup", CLIP, "--lipstick", "red", "--out", out / "lips.mp4"]
        ready = lambda: any(p.stat().st_size > 0 for p in part_files(out))  # noqa: E731
    else:  # puppet writes at the end: wait for its temporary files and some frames
        args = ["puppet", CLIP, "--out", out / "coeffs.jsonl", "--render", out / "avatar.mp4"]
        seen: list[float] = []

        def ready() -> bool:
            import time

            if len(part_files(out)) == 2 and not seen:
                seen.append(time.monotonic())
            return bool(seen) and time.monotonic() - seen[0] > 2.0
    code, err = terminate_when(spawn(*args), ready)
    assert code == 143 and err[-1] == "attnmesh: error: terminated (SIGTERM)", (code, err)
    assert list(out.iterdir()) == []


def test_puppet_summary_says_frame_not_frames_for_a_single_frame(tmp_path):
    """A one-frame video (not a photo) still gets a grammatical summary."""
    one = tmp_path / "one.mp4"
    with av.open(str(CLIP)) as src, av.open(str(one), "w") as dst:
        stream = dst.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 512, 512, "yuv420p"
        frame = next(src.decode(video=0))
        for packet in stream.encode(frame.reformat(format="yuv420p")):
            dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    out = tmp_path / "c.jsonl"
    code, err, _ = main("puppet", one, "--out", out)
    assert code == 0 and err == [f"attnmesh: 1 frame, 1 with a face -> {out}"], err
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 1
