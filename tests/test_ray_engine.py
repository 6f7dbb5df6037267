"""The parts of attnmesh.ray that need no Ray cluster (none is started here): FaceMeshPredictor called as
map_batches calls it, in each of Ray's batch formats; the rows of one video task; the inputs a SRC list
names; the command line's refusals before Ray would start. Compared with the local commands' outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from raytools import compare_rows
from reference import PHOTOS, VIDEOS
from test_cli_video import _truncated_mp4

from attnmesh.errors import CliError
from attnmesh.io import iter_image_paths
from attnmesh.io.outputs import parquet_schema
from attnmesh.cli import build_parser
from attnmesh.cli.ray import command_options, expand_sources, video_table
from attnmesh.ray import FaceMeshPredictor

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

GOOD = [PHOTOS / "face-obama-240p.jpg", PHOTOS / "face-two_people.jpg"]
CLIP = VIDEOS / "talking-d11.mp4"


def run_cli(*args: str | os.PathLike, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ATTNMESH_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "attnmesh", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("predictor")
    bad = root / "broken.jpg"
    bad.write_text("not a photo")
    paths = [*GOOD, bad]
    local = root / "local.parquet"
    proc = run_cli("images", *paths, "--out", local)
    assert proc.returncode == 1, proc.stderr
    return {"paths": [str(p) for p in paths], "local": pq.read_table(local), "root": root}


@pytest.fixture(scope="module")
def predictor() -> FaceMeshPredictor:
    return FaceMeshPredictor(batch_size=2)


def test_predictor_batches_of_every_format_give_the_local_rows(photos, predictor):
    import pandas as pd

    paths = photos["paths"]
    blobs = [Path(p).read_bytes() for p in paths]
    batches = {
        "numpy": {"path": np.array(paths, dtype=object)},
        "pandas": pd.DataFrame({"path": paths, "bytes": blobs}),
        "pyarrow": pa.table({"path": paths, "bytes": pa.array(blobs, pa.binary())}),
    }
    for kind, batch in batches.items():
        out = predictor(batch)
        assert out.schema.equals(parquet_schema(478)), kind
        result = compare_rows(photos["local"], out)
        assert result["mismatches"] == [] and result["faces"] == (3, 3), (kind, result)
        assert result["max_landmark_diff"] <= 1e-3, (kind, result)


def test_predictor_reads_relative_paths_from_root_and_keeps_them_as_given(photos, predictor):
    rel = os.path.relpath(GOOD[1], PHOTOS)
    predictor.root = str(PHOTOS)
    try:
        out = predictor({"path": [rel, "missing.jpg"]})
    finally:
        predictor.root = None
    rows = out.to_pylist()
    assert [r["path"] for r in rows] == [rel, rel, "missing.jpg"]
    assert rows[2]["error"] == "no such file or directory" and rows[2]["landmarks"] is None


def test_predictor_needs_a_path_or_bytes_column(predictor):
    with pytest.raises(ValueError, match="needs a 'path' or a 'bytes' column; the batch has: image"):
        predictor({"image": np.zeros(1)})


def test_video_table_is_the_local_video_output(tmp_path):
    local = tmp_path / "local.parquet"
    proc = run_cli("video", CLIP, "--out", local, "--max-frames", "5", "--smooth")
    assert proc.returncode == 0, proc.stderr
    options = command_options(build_parser().parse_args(["video", str(CLIP), "--out", "x", "--max-frames", "5",
                                                         "--smooth"]))
    got = video_table(str(CLIP), options)
    assert got.schema.equals(parquet_schema(478), check_metadata=False)
    result = compare_rows(pq.read_table(local), got)
    assert result["mismatches"] == [] and result["rows"] == (5, 5) and result["max_landmark_diff"] <= 1e-3, result

    cut = tmp_path / "cut.mp4"
    _truncated_mp4(cut)
    rows = video_table(str(cut), {**options, "max_frames": None}).to_pylist()
    frames, errors = [r for r in rows if r["error"] is None], [r for r in rows if r["error"] is not None]
    assert len(frames) > 0 and len(errors) == 1 and errors[0]["frame"] is None, len(rows)
    assert errors[0]["error"].startswith("damaged video") and "truncated" in errors[0]["error"], errors
    assert f"frames 0 to {len(frames) - 1}" in errors[0]["error"]

    (tmp_path / "notes.mp4").write_text("no video here")
    rows = video_table("notes.mp4", options, root=str(tmp_path)).to_pylist()
    assert len(rows) == 1 and rows[0]["path"] == "notes.mp4" and "not a video" in rows[0]["error"], rows


def test_expand_sources_reads_lists_and_uris_like_the_local_command_reads_folders(tmp_path, photos):
    folder = [str(p) for p in iter_image_paths([PHOTOS])]
    assert expand_sources([str(PHOTOS)]) == folder
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# photos\n{GOOD[0]}\n\n  {GOOD[1]}  \n{GOOD[0]}\n{PHOTOS}\n")
    assert expand_sources([str(listing)]) == [str(GOOD[0]), str(GOOD[1])] + [p for p in folder
                                                                              if p not in map(str, GOOD)]
    # a Parquet list, e.g. an earlier output (several rows per path): each path once
    assert expand_sources([str(photos["root"] / "local.parquet")]) == photos["paths"]
    uri = PHOTOS.resolve().as_uri()
    assert expand_sources([uri]) == [f"{uri}/{Path(p).name}" for p in folder]
    with pytest.raises(CliError, match="no such file"):
        expand_sources([str(tmp_path / "missing.txt")])
    pq.write_table(pa.table({"file": ["a.jpg"]}), tmp_path / "wrong.parquet")
    with pytest.raises(CliError, match="needs a 'path' column"):
        expand_sources([str(tmp_path / "wrong.parquet")])


@pytest.mark.parametrize("args,code,words", [
    (["images", "PHOTO", "--out", "o.parquet", "--address", "127.0.0.1:1"], 2, "--address: only with --engine ray"),
    (["images", "PHOTO", "--out", "o.parquet", "--shard-size", "2"], 2, "--shard-size: only with --engine ray"),
    (["video", "CLIP", "--out", "v.parquet", "--workers", "2"], 2, "--workers: only with --engine ray"),
    (["images", "PHOTO", "--out", "DIR", "--engine", "ray", "--render", "r"], 2, "--render: not available"),
    (["images", "PHOTO", "--out", "faces.csv", "--engine", "ray"], 2, "folder of Parquet shards"),
    (["images", "PHOTO", "--out", "-", "--engine", "ray"], 2, "give --out DIR"),
    (["images", "PHOTO", "--out", "FILE", "--engine", "ray"], 1, "exists and is not a folder"),
    (["video", "CLIP", "CLIP", "--out", "v.parquet"], 2, "2 videos given: one at a time, or all with --engine ray"),
])
def test_usage_errors_come_before_ray_starts(tmp_path, args, code, words):
    (tmp_path / "FILE").write_text("x")
    subs = {"PHOTO": str(GOOD[0]), "CLIP": str(CLIP), "DIR": str(tmp_path / "out"), "FILE": str(tmp_path / "FILE")}
    proc = run_cli(*[subs.get(a, a) for a in args], timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code and len(lines) == 1 and words in lines[0], proc.stderr
