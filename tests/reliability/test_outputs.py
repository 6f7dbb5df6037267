"""Output paths and files, as a careless user names them: a file where a folder should be, two options naming
the same file, names that are not UTF-8 in every format. Each test is named after what the user did."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from attnmesh.io.outputs import (csv_columns, error_record, image_record, jsonl_schema, npz_layout, open_writer,
                              parquet_schema)

from ._support import CLIP, SMALL_PHOTO, main, part_files


def test_out_inside_a_file_instead_of_a_folder_names_the_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    for out in (afile / "x.jsonl", afile / "deeper" / "x.jsonl"):
        code, err, _ = main("images", SMALL_PHOTO, "--out", out)
        assert code == 1 and err == [f"attnmesh: error: --out {out}: '{afile}' is a file, not a folder"], err
    code, err, _ = main("makeup", SMALL_PHOTO, "--lipstick", "red", "--out", afile / "x.png")
    assert code == 1 and len(err) == 1 and "'afile' is a file, not a folder" in err[0].replace(str(tmp_path) + "/", "")
    code, err, _ = main("images", SMALL_PHOTO, "--out", tmp_path / "nope" / "x.jsonl")  # still said as before
    assert code == 1 and len(err) == 1 and "does not exist" in err[0], err
    assert afile.read_text() == "not a folder\n" and part_files(tmp_path) == []


@pytest.mark.parametrize("command", ["video", "puppet"])
def test_out_that_is_a_link_to_the_render_file_is_refused(tmp_path, command):
    """--out and --render cannot share a name (their extensions differ), but a link makes them one file."""
    render = tmp_path / "overlay.mp4"
    out = tmp_path / "frames.jsonl"
    out.symlink_to(render)
    code, err, _ = main(command, CLIP, "--out", out, "--render", render)
    assert code == 2 and len(err) == 1 and "name the same file" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.jsonl"] and not render.exists()


ODD = os.fsdecode(b"photos/b_\xff\xfe.jpg")  # what os.listdir gives for a name that is not UTF-8
ODD_BYTES = b"photos/b_\xff\xfe.jpg"


def _records() -> list[dict]:
    face = {"score": 1.0, "detection_score": 0.9, "box": [1.0, 2.0, 3.0, 4.0], "roi": [2.0, 3.0, 2.0, 0.0],
            "landmarks": np.arange(478 * 3, dtype=np.float64).reshape(478, 3).tolist(), "pose": None}
    return [image_record("photos/a.jpg", 10, 20, [face]), image_record(ODD, 10, 20, [face]),
            error_record(os.fsdecode(b"photos/c\xe9.png"), "truncated")]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "npz"])
def test_every_format_keeps_a_non_utf8_name_losslessly(tmp_path, fmt):
    """Written through the real writers, read back with the format's own reader: 'path' is valid text and
    'path_bytes' gives back the exact bytes; a UTF-8 name has no 'path_bytes'."""
    target = tmp_path / f"faces.{fmt}"
    writer = open_writer(str(target))
    for record in _records():
        writer.write(record)
    writer.commit()
    if fmt == "jsonl":
        text = target.read_bytes().decode("utf-8")  # strict: valid UTF-8
        rows = [json.loads(line) for line in text.splitlines()]
        import jsonschema

        validator = jsonschema.Draft202012Validator(jsonl_schema())
        for row in rows:
            validator.validate(row)
        paths = [r["path"] for r in rows]
        raw = [bytes.fromhex(r["path_bytes"]) if "path_bytes" in r else None for r in rows]
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(target)
        assert table.schema.equals(parquet_schema(478), check_metadata=False)
        paths, raw = table.column("path").to_pylist(), table.column("path_bytes").to_pylist()
    elif fmt == "csv":
        with open(target, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            assert next(reader) == csv_columns(478)
            rows = [dict(zip(csv_columns(478), line)) for line in reader]
        paths = [r["path"] for r in rows]
        raw = [bytes.fromhex(r["path_bytes"]) if r["path_bytes"] else None for r in rows]
    else:
        data = np.load(target)
        assert set(data.files) == set(npz_layout(3, 1))
        paths = data["path"].tolist()
        raw = [bytes.fromhex(h) if h else None for h in data["path_bytes"].tolist()]
    assert paths == ["photos/a.jpg", "photos/b_\\xff\\xfe.jpg", "photos/c\\xe9.png"]
    assert raw == [None, ODD_BYTES, b"photos/c\xe9.png"]
    assert os.fsdecode(raw[1]) == ODD  # the name os.listdir gave, to open the file again


def test_a_name_with_a_surrogate_no_file_system_gives_is_still_written(tmp_path):
    """An API caller passing a str with a lone high surrogate: kept (surrogatepass bytes), never a crash."""
    target = tmp_path / "faces.parquet"
    writer = open_writer(str(target))
    writer.write(error_record("weird\ud800.jpg", "no such file"))
    writer.commit()
    import pyarrow.parquet as pq

    row = pq.read_table(target).to_pylist()[0]
    assert row["path_bytes"] == "weird\ud800.jpg".encode("utf-8", "surrogatepass")
    assert row["path"].encode("utf-8")  # valid text


def test_failed_run_leaves_the_previous_output_and_no_temporary_file(tmp_path):
    out = tmp_path / "faces.jsonl"
    out.write_text("previous\n")
    code, err, _ = main("images", SMALL_PHOTO, "--out", out, "--model", "transformer", "--no-refine")
    assert code == 2 and len(err) == 1 and "refine" in err[0], err
    assert out.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["faces.jsonl"]


def test_output_file_is_whole_and_readable_after_success(tmp_path):
    """The control case for the refusals above: a normal run still writes its output (atomically)."""
    out = tmp_path / "o.jsonl"
    code, err, _ = main("images", SMALL_PHOTO, "--out", out, "--max-faces", "1")
    assert code == 0 and err == [f"attnmesh: 1 image, 1 face, 0 failed -> {out}"], err
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["path"] == str(SMALL_PHOTO) and "path_bytes" not in record
    assert Path(out).stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert part_files(tmp_path) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
