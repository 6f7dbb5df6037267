"""The ``attnmesh`` command line, driven as a subprocess on real photos and on generated bad and odd files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from reference import PHOTOS, interocular

BASE = PHOTOS / "deepface-img20.jpg"  # 900x900, one large face: the source of the odd good files
OTHERS = [PHOTOS / "face-obama-240p.jpg", PHOTOS / "face-two_people.jpg"]
FACES_IN_OTHERS = [1, 2]


def run_cli(*args: str | os.PathLike, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ATTNMESH_DEBUG"}
    return subprocess.run([sys.executable, "-m", "attnmesh", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_clean_stderr(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.strip()]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A folder of odd-but-good files made from BASE, and a folder of bad files."""
    root = tmp_path_factory.mktemp("cli")
    good, bad = root / "odd", root / "bad"
    good.mkdir()
    bad.mkdir()
    bgr = cv2.imread(str(BASE), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    assert cv2.imwrite(str(good / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    alpha = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))  # alpha is dropped, so any alpha works
    assert cv2.imwrite(str(good / "rgba.png"), np.dstack([bgr, alpha]))
    # 16 bits: v * 257 plus low-order noise that rounds away (|noise| <= 128)
    noise = np.random.default_rng(0).integers(-128, 129, bgr.shape)
    sixteen = np.clip(bgr.astype(np.int64) * 257 + noise, 0, 65535).astype(np.uint16)
    assert cv2.imwrite(str(good / "sixteen.png"), sixteen)
    data = BASE.read_bytes()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "half.jpg").write_bytes(data[: len(data) // 2])
    (bad / "notes.png").write_text("this is a text file, not a photo\n")
    return {"root": root, "good": good, "bad": bad, "missing": root / "no-such-photo.jpg"}


@pytest.fixture(scope="module")
def main_run(inputs) -> tuple[subprocess.CompletedProcess, list[dict], Path]:
    out = inputs["root"] / "results.jsonl"
    proc = run_cli("images", BASE, *OTHERS, inputs["good"], inputs["bad"], inputs["missing"],
                   "--out", out, "--batch-size", "3")
    return proc, (read_jsonl(out) if out.exists() else []), out


def test_bad_files_are_reported_and_the_rest_processed(main_run, inputs):
    proc, records, out = main_run
    assert proc.returncode == 1, proc.stderr
    lines = assert_clean_stderr(proc.stderr)
    bad_paths = [str(inputs["bad"] / n) for n in ("empty.jpg", "half.jpg", "notes.png")] + [str(inputs["missing"])]
    errors = [line for line in lines if line.startswith("attnmesh: error: ")]
    assert len(errors) == len(bad_paths), lines
    for path, word in zip(bad_paths, ("empty", "truncated", "not an image", "no such file")):
        hits = [e for e in errors if e.startswith(f"attnmesh: error: {path}: ")]
        assert len(hits) == 1 and word in hits[0].lower(), (path, errors)
    # summary line: images, faces, failures, output path
    summary = lines[-1]
    n_faces = sum(len(r.get("faces", [])) for r in records)
    assert summary == f"attnmesh: 10 images, {n_faces} faces, 4 failed -> {out}", summary

    # one record per input, in order: arguments in order, folders sorted
    expected = ([str(BASE)] + [str(p) for p in OTHERS]
                + [str(inputs["good"] / n) for n in ("gray.png", "rgba.png", "sixteen.png")] + bad_paths)
    assert [r["path"] for r in records] == expected
    by_path = {r["path"]: r for r in records}
    for path in bad_paths:
        assert set(by_path[path]) == {"path", "error"} and by_path[path]["error"], by_path[path]
    assert not list(out.parent.glob(".results.jsonl.*")), "temporary output left behind"


def test_good_files_have_faces_with_478_landmarks(main_run, inputs):
    _, records, _ = main_run
    by_path = {r["path"]: r for r in records}
    for path, count in [(BASE, 1), *zip(OTHERS, FACES_IN_OTHERS)]:
        r = by_path[str(path)]
        h, w = cv2.imread(str(path)).shape[:2]
        assert (r["width"], r["height"]) == (w, h)
        assert len(r["faces"]) == count, (path, len(r["faces"]))
    for r in records:
        for face in r.get("faces", []):
            assert np.array(face["landmarks"]).shape == (478, 3)
            assert 0.5 <= face["score"] <= 1 and 0.5 <= face["detection_score"] <= 1
            x0, y0, x1, y1 = face["box"]
            assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
            assert len(face["roi"]) == 4
            lm = np.array(face["landmarks"])
            # the mesh lies on the face: most points inside the (generous) detection box
            inside = (lm[:, 0] > x0 - (x1 - x0)) & (lm[:, 0] < x1 + (x1 - x0)) & (lm[:, 1] > y0 - (y1 - y0))
            assert inside.mean() > 0.95
            # floats are rounded to 3 decimals
            assert all(round(v, 3) == v for v in lm.ravel()[:300])


def test_odd_formats_give_the_landmarks_of_the_original(main_run, inputs):
    _, records, _ = main_run
    by_path = {r["path"]: r for r in records}
    base = np.array(by_path[str(BASE)]["faces"][0]["landmarks"])
    iod = interocular(base)
    assert iod > 50
    for name, tol in [("rgba.png", 0.02), ("sixteen.png", 0.02), ("gray.png", 0.08)]:
        faces = by_path[str(inputs["good"] / name)]["faces"]
        assert len(faces) == 1, name
        lm = np.array(faces[0]["landmarks"])
        err = np.linalg.norm(lm[:, :2] - base[:, :2], axis=1)
        assert err.mean() / iod < tol / 2 and np.percentile(err, 95) / iod < tol, (name, err.mean() / iod)


def test_no_refine_single_image_to_stdout():
    proc = run_cli("images", OTHERS[0], "--no-refine", "--max-faces", "1", "--out", "-")
    assert proc.returncode == 0, proc.stderr
    lines = assert_clean_stderr(proc.stderr)
    assert lines == ["attnmesh: 1 image, 1 face, 0 failed -> stdout"]
    (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["path"] == str(OTHERS[0])
    assert np.array(record["faces"][0]["landmarks"]).shape == (468, 3)


def test_detection_threshold_is_applied():
    proc = run_cli("images", OTHERS[1], "--min-detection-confidence", "1", "--out", "-")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["faces"] == []


# -- fatal errors: one line, non-zero exit, nothing that looks like a result ---------------------------------


@pytest.mark.parametrize("args,code,words", [
    ([], 2, "no command"),
    (["images", "x.jpg"], 2, "--out"),
    (["images", "x.jpg", "--out", "o.jsonl", "--max-faces", "0"], 2, "--max-faces"),
    (["images", "x.jpg", "--out", "o.jsonl", "--batch-size", "two"], 2, "--batch-size"),
    (["images", "x.jpg", "--out", "o.jsonl", "--min-detection-confidence", "1.5"], 2, "[0, 1]"),
    (["images", "x.jpg", "--bogus", "--out", "o.jsonl"], 2, "--bogus"),
    (["frobnicate"], 2, "frobnicate"),
])
def test_usage_errors_are_one_line(args, code, words):
    proc = run_cli(*args, timeout=60)
    assert proc.returncode == code
    lines = assert_clean_stderr(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("attnmesh: error: ") and words in lines[0], lines
    assert proc.stdout == ""


def test_missing_output_folder_and_unwritable_output(tmp_path):
    proc = run_cli("images", OTHERS[0], "--out", tmp_path / "nope" / "out.jsonl", timeout=60)
    lines = assert_clean_stderr(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1 and "does not exist" in lines[0], lines
    proc = run_cli("images", OTHERS[0], "--out", tmp_path, timeout=60)  # a folder, not a file
    lines = assert_clean_stderr(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1 and "directory" in lines[0], lines
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        proc = run_cli("images", OTHERS[0], "--out", ro / "out.jsonl", timeout=60)
        lines = assert_clean_stderr(proc.stderr)
        assert proc.returncode == 1 and len(lines) == 1 and "cannot write" in lines[0], lines
    assert list(tmp_path.rglob("*.jsonl*")) == []


def test_no_images_found(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    proc = run_cli("images", tmp_path, "--out", tmp_path / "o.jsonl", timeout=60)
    lines = assert_clean_stderr(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1 and "no image files found" in lines[0], lines


def test_failure_after_start_keeps_the_old_output_and_leaves_no_partial_file(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    proc = run_cli("images", OTHERS[0], "--out", out, "--device", "no-such-device", timeout=120)
    lines = assert_clean_stderr(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and "no-such-device" in lines[0], lines  # a bad argument
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_debug_reraises_for_developers(tmp_path):
    proc = run_cli("images", OTHERS[0], "--out", tmp_path / "nope" / "o.jsonl", "--debug", timeout=60)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_version_and_fast_help():
    from attnmesh import __version__

    proc = run_cli("--version", timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"attnmesh {__version__}"
    start = time.perf_counter()
    proc = run_cli("images", "--help", timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and "--max-faces" in proc.stdout and "--batch-size" in proc.stdout
    # the CLI imports torch only inside the command: --help does not load it
    probe = subprocess.run([sys.executable, "-c", "import sys, attnmesh.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False", probe
    assert elapsed < 10  # generous for a loaded 2-core machine; torch alone takes seconds to import


def test_parallel_workers_give_what_a_lone_face_mesh_gives(tmp_path):
    """``images`` in 2 workers, batches of 3 (faces of several images in one mesh pass): every
    image's landmarks equal those of a FaceMesh of this process given that image alone (outputs round to
    1e-3 px)."""
    import attnmesh
    from attnmesh.io import load_image

    photos = sorted(PHOTOS.glob("*.jpg"))[:7]
    out = tmp_path / "faces.jsonl"
    proc = run_cli("images", *photos, "--out", out, "--workers", "2", "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out)
    assert [r["path"] for r in records] == [str(p) for p in photos]
    fm = attnmesh.FaceMesh(static_image_mode=True, max_num_faces=5)
    faces_seen = 0
    for path, record in zip(photos, records):
        alone = fm.process(load_image(path))
        assert len(record["faces"]) == len(alone), path
        for face, ref in zip(record["faces"], alone):
            np.testing.assert_allclose(np.array(face["landmarks"]), ref.landmarks, rtol=0, atol=6e-4)
            faces_seen += 1
    assert faces_seen >= 7


def test_a_worker_that_cannot_set_up_fails_the_run_with_one_line(tmp_path):
    """A failure to build the networks for the workers (here: the graph cache is a file,
    not a folder) is the run's one-line error, exit 1, and no output file."""
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder\n")
    out = tmp_path / "faces.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "ATTNMESH_DEBUG"} | {"ATTNMESH_CACHE": str(blocker)}
    proc = subprocess.run([sys.executable, "-m", "attnmesh", "images", *map(str, OTHERS), "--out", str(out),
                           "--workers", "2", "--batch-size", "1"], capture_output=True, text=True, timeout=300,
                          env=env)
    lines = assert_clean_stderr(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("attnmesh: error: cannot set up the face mesh:") and "Not a directory" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".faces.jsonl*"))


@pytest.mark.parametrize("n, batch", [(0, 8), (1, 8), (9, 8), (2012, 8), (17, 3), (100, 32)])
def test_images_are_split_into_even_chunks(n, batch):
    """attnmesh images splits its inputs into the fewest chunks of at most --batch-size, in order, with sizes
    differing by at most one (no short last chunk)."""
    from attnmesh.cli.images import even_chunks

    chunks = even_chunks([Path(str(i)) for i in range(n)], batch)
    assert [p for c in chunks for p in c] == [Path(str(i)) for i in range(n)]
    assert len(chunks) == -(-n // batch)
    sizes = [len(c) for c in chunks]
    assert all(0 < s <= batch for s in sizes) and (not sizes or max(sizes) - min(sizes) <= 1)
