"""Photos and folders of photos, as a careless or hostile user gives them: outputs aimed at the inputs, a file
name that is not UTF-8, a run killed with SIGTERM. Each test is named after what the user did."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ._support import SMALL_PHOTO, fingerprint, main, part_files, spawn, terminate_when


@pytest.fixture()
def photo_folder(tmp_path) -> Path:
    """A folder of three real photos: two PNGs and a JPEG that shares a PNG's stem (a.jpg, a.png)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    bgr = cv2.imread(str(SMALL_PHOTO))
    assert cv2.imwrite(str(folder / "a.png"), bgr)
    assert cv2.imwrite(str(folder / "b.png"), cv2.flip(bgr, 1))
    shutil.copy(SMALL_PHOTO, folder / "a.jpg")
    return folder


def test_render_into_the_input_folder_is_refused(photo_folder, tmp_path):
    before = fingerprint(photo_folder)
    out = tmp_path / "faces.jsonl"
    code, err, _ = main("images", photo_folder, "--out", out, "--render", photo_folder)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"attnmesh: error: --render {photo_folder}: is the input folder"), err
    assert fingerprint(photo_folder) == before  # every photo as it was, nothing added
    assert not out.exists() and part_files(tmp_path) == []


def test_render_into_a_folder_inside_the_input_folder_is_refused(photo_folder, tmp_path):
    before = fingerprint(photo_folder)
    code, err, _ = main("images", photo_folder, "--out", tmp_path / "faces.jsonl",
                        "--render", photo_folder / "overlays")
    assert code == 2 and len(err) == 1 and "inside the input folder" in err[0], err
    assert fingerprint(photo_folder) == before and not (photo_folder / "overlays").exists()


def test_render_where_an_overlay_would_replace_a_photo_given_by_name_is_refused(photo_folder, tmp_path):
    """a.jpg's overlay is a.png: next to the photos it would replace the input a.png."""
    before = fingerprint(photo_folder)
    code, err, _ = main("images", photo_folder / "a.jpg", photo_folder / "a.png", "--out", tmp_path / "f.jsonl",
                        "--render", photo_folder)
    assert code == 2 and len(err) == 1, err
    assert "would overwrite the input" in err[0] and str(photo_folder / "a.png") in err[0], err
    assert fingerprint(photo_folder) == before


def test_makeup_written_over_its_own_photo_is_refused(photo_folder, tmp_path):
    photo = photo_folder / "a.png"
    before = fingerprint(photo_folder)
    code, err, _ = main("makeup", photo, "--lipstick", "red", "--out", photo)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"attnmesh: error: --out {photo}: is an input"), err
    # the same file under another name: a hard link and a symbolic link
    os.link(photo, tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(photo)
    for alias in (tmp_path / "hard.png", tmp_path / "soft.png"):
        code, err, _ = main("makeup", photo, "--lipstick", "red", "--out", alias)
        assert code == 2 and len(err) == 1 and "is an input" in err[0], (alias, err)
    assert fingerprint(photo_folder) == before and part_files(tmp_path) == []


def test_images_out_naming_one_of_the_inputs_is_refused(photo_folder, tmp_path):
    results = tmp_path / "results.csv"
    results.write_text("my own table\n")
    code, err, _ = main("images", photo_folder, results, "--out", results)
    assert code == 2 and len(err) == 1 and "is an input" in err[0], err
    assert results.read_text() == "my own table\n"


@pytest.fixture(scope="module")
def non_utf8_folder(tmp_path_factory) -> Path:
    """The issue's folder: a.jpg, b_<0xff>.jpg, c.jpg, three copies of one real photo; the middle name is not
    UTF-8 (made with bytes paths, as a Latin-1 file system or archive would)."""
    folder = tmp_path_factory.mktemp("names") / "photos"
    folder.mkdir()
    data = SMALL_PHOTO.read_bytes()
    for name in (b"a.jpg", b"b_\xff.jpg", b"c.jpg"):
        with open(os.path.join(os.fsencode(folder), name), "wb") as f:
            f.write(data)
    return folder


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_folder_with_a_non_utf8_file_name_gives_all_three_images(non_utf8_folder, tmp_path, fmt):
    out = tmp_path / f"faces.{fmt}"
    code, err, _ = main("images", non_utf8_folder, "--out", out)
    assert code == 0 and err == [f"attnmesh: 3 images, 3 faces, 0 failed -> {out}"], err
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
        raw = [r["path_bytes"] for r in rows]
    else:
        import csv

        with open(out, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        raw = [bytes.fromhex(r["path_bytes"]) if r["path_bytes"] else None for r in rows]
        for r in rows:
            r["landmarks"] = [float(r[f"{c}{k}"]) for k in range(478) for c in "xyz"]
    folder = os.fsencode(non_utf8_folder)
    assert [r["path"] for r in rows] == [f"{non_utf8_folder}/a.jpg", f"{non_utf8_folder}/b_\\xff.jpg",
                                         f"{non_utf8_folder}/c.jpg"]
    # the exact name is kept: it opens the very file again
    assert raw == [None, os.path.join(folder, b"b_\xff.jpg"), None]
    assert open(os.fsdecode(raw[1]), "rb").read() == SMALL_PHOTO.read_bytes()
    # the same photo under three names: the same face
    landmarks = np.array([r["landmarks"] for r in rows], np.float64)
    assert np.abs(landmarks - landmarks[0]).max() < 1e-3


def test_images_killed_with_sigterm_leave_no_temporary_file_and_keep_the_old_output(tmp_path):
    photos, out, overlays = tmp_path / "photos", tmp_path / "out", tmp_path / "out" / "overlays"
    photos.mkdir()
    out.mkdir()
    for i in range(40):
        shutil.copy(SMALL_PHOTO, photos / f"{i:02d}.jpg")
    target = out / "faces.parquet"
    target.write_bytes(b"yesterday's results")
    proc = spawn("images", photos, "--out", target, "--render", overlays, "--batch-size", "1")
    code, err = terminate_when(proc, lambda: overlays.is_dir() and any(overlays.glob("*.png")))
    assert code == 143 and err == ["attnmesh: error: terminated (SIGTERM)"], (code, err)
    assert part_files(tmp_path) == [], part_files(tmp_path)
    assert target.read_bytes() == b"yesterday's results"
    for png in overlays.glob("*.png"):  # overlays written before the signal are whole files
        assert cv2.imread(str(png)) is not None


def test_jsonl_of_a_non_utf8_name_round_trips_through_json(non_utf8_folder):
    """JSON lines on stdout: valid UTF-8 text, 'path_bytes' only on the odd name."""
    code, err, stdout = main("images", non_utf8_folder, "--out", "-", "--max-faces", "1")
    assert code == 0, err
    stdout.encode("utf-8")  # no lone surrogates anywhere
    records = [json.loads(line) for line in stdout.splitlines()]
    assert ["path_bytes" in r for r in records] == [False, True, False]
    assert os.fsdecode(bytes.fromhex(records[1]["path_bytes"])) == os.path.join(str(non_utf8_folder),
                                                                                   os.fsdecode(b"b_\xff.jpg"))


def test_unreadable_photo_with_a_non_utf8_name_is_named_in_its_error_line(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SMALL_PHOTO, folder / "good.jpg")
    with open(os.path.join(os.fsencode(folder), b"bad_\xff.jpg"), "wb") as f:
        f.write(b"not a photo at all\n")
    out = tmp_path / "faces.jsonl"
    code, err, _ = main("images", folder, "--out", out, "--max-faces", "1")
    assert code == 1 and len(err) == 2, err
    assert err[0] == f"attnmesh: error: {folder}/bad_\\xff.jpg: not an image: the file contains text", err
    failure, good = [json.loads(line) for line in out.read_text().splitlines()]
    assert failure["path"] == f"{folder}/bad_\\xff.jpg" and failure["error"] and len(good["faces"]) == 1
    assert bytes.fromhex(failure["path_bytes"]) == os.path.join(os.fsencode(folder), b"bad_\xff.jpg")
