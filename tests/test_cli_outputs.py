"""``attnmesh images`` in every output format, checked against the documented schemas and against each other;
the overlays of ``--render``; ``attnmesh demo``; ``attnmesh webcam`` without a display. Driven as a subprocess
on ../shared/data photos."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from reference import PHOTOS

from attnmesh.io.outputs import csv_columns, jsonl_schema, npz_layout, parquet_schema

ONE = PHOTOS / "deepface-img20.jpg"  # one large face
TWO = PHOTOS / "face-two_people.jpg"  # two faces
FORMATS = ("jsonl", "parquet", "npz", "csv")


def run_cli(*args: str | os.PathLike, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "ATTNMESH_DEBUG"}
    base["OMP_NUM_THREADS"] = "1"  # shared 2-core machines: one torch thread per test process
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "attnmesh", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=base)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One `images` run per format on: one face, two faces, a photo without a face, a bad file."""
    root = tmp_path_factory.mktemp("formats")
    blank = root / "inputs" / "blank.png"
    blank.parent.mkdir()
    cv2.imwrite(str(blank), np.full((120, 160, 3), 90, np.uint8))
    bad = root / "inputs" / "broken.jpg"
    bad.write_text("not a photo")
    inputs = [ONE, TWO, blank, bad]
    out: dict = {"root": root, "inputs": inputs, "render": root / "overlays"}
    for fmt in FORMATS:
        target = root / f"faces.{fmt}"
        extra = ["--render", out["render"]] if fmt == "jsonl" else []
        proc = run_cli("images", *inputs, "--out", target, "--batch-size", "2", *extra)
        out[fmt] = (proc, target)
    return out


EXPECTED_FACES = [1, 2, 0, None]  # None: the bad file


def test_every_format_exits_1_for_the_bad_file_and_leaves_no_temporary(runs):
    for fmt in FORMATS:
        proc, target = runs[fmt]
        assert proc.returncode == 1, (fmt, proc.stderr)
        lines = stderr_lines(proc)
        assert len(lines) == 2 and "broken.jpg" in lines[0], lines
        assert lines[1].startswith("attnmesh: 4 images, 3 faces, 1 failed -> "), lines
        assert target.exists()
    assert not list(runs["root"].glob(".*part*")), "temporary file left behind"


def test_jsonl_matches_its_json_schema(runs):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(jsonschema_schema := jsonl_schema())
    jsonschema.Draft202012Validator.check_schema(jsonschema_schema)
    records = [json.loads(line) for line in runs["jsonl"][1].read_text().splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in runs["inputs"]]
    for record, count in zip(records, EXPECTED_FACES):
        errors = list(validator.iter_errors(record))
        assert not errors, errors[0].message
        if count is None:
            assert set(record) == {"path", "error"}
        else:
            assert len(record["faces"]) == count
    # the schema rejects what it should
    face = records[0]["faces"][0]
    assert not validator.is_valid({**records[0], "faces": [{**face, "landmarks": face["landmarks"][:10]}]})
    assert not validator.is_valid({**records[0], "extra": 1})
    assert not validator.is_valid({"path": "x"})


def test_parquet_matches_its_pyarrow_schema(runs):
    pq = pytest.importorskip("pyarrow.parquet")
    path = runs["parquet"][1]
    schema = pq.read_schema(path)
    assert schema.equals(parquet_schema(478), check_metadata=False), schema
    assert schema.metadata[b"attnmesh.num_landmarks"] == b"478"
    table = pq.read_table(path)
    rows = table.to_pylist()
    # one row per image x face; the face-less photo and the bad file keep a row each
    assert [r["path"] for r in rows] == [str(ONE), str(TWO), str(TWO), *map(str, runs["inputs"][2:])]
    assert [r["face"] for r in rows] == [0, 0, 1, None, None]
    blank, bad = rows[3], rows[4]
    assert blank["error"] is None and blank["width"] == 160 and blank["landmarks"] is None
    assert bad["error"] and bad["width"] is None and bad["landmarks"] is None
    assert all(r["error"] is None and len(r["landmarks"]) == 478 * 3 for r in rows[:3])
    # the documented recipe for a (faces, 478, 3) array
    lm = table.column("landmarks").combine_chunks().flatten().to_numpy().reshape(-1, 478, 3)
    assert lm.shape == (3, 478, 3)


def test_npz_has_the_documented_keys_dtypes_and_shapes(runs):
    with np.load(runs["npz"][1], allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    layout = npz_layout(4, 2, 478)
    assert set(arrays) == set(layout)
    for key, (kind, shape) in layout.items():
        assert arrays[key].dtype.kind == kind and arrays[key].shape == shape, (key, arrays[key].dtype, arrays[key].shape)
    assert arrays["num_faces"].tolist() == [1, 2, 0, 0]
    assert [bool(e) for e in arrays["error"]] == [False, False, False, True]
    # padding: NaN landmarks where there is no face
    assert np.isnan(arrays["landmarks"][0, 1]).all() and np.isnan(arrays["landmarks"][2]).all()
    assert np.isfinite(arrays["landmarks"][1]).all()


def test_csv_has_the_documented_header(runs):
    with open(runs["csv"][1], newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == csv_columns(478)
    assert len(table) == 1 + 5 and all(len(row) == len(table[0]) for row in table)


def _faces_from_each_format(runs) -> dict[str, dict[str, np.ndarray]]:
    """landmarks (3, 478, 3) and pose (3, 6: pitch yaw roll tx ty tz) of the 3 faces, per format."""
    import pyarrow.parquet as pq

    out = {}
    records = [json.loads(line) for line in runs["jsonl"][1].read_text().splitlines()]
    faces = [f for r in records for f in r.get("faces", [])]
    out["jsonl"] = {"landmarks": np.array([f["landmarks"] for f in faces]),
                    "pose": np.array([[f["pose"][k] for k in ("pitch", "yaw", "roll")] + f["pose"]["translation"]
                                      for f in faces]),
                    "transform": np.array([f["pose"]["transform"] for f in faces])}
    rows = [r for r in pq.read_table(runs["parquet"][1]).to_pylist() if r["landmarks"] is not None]
    out["parquet"] = {"landmarks": np.array([r["landmarks"] for r in rows]).reshape(-1, 478, 3),
                      "pose": np.array([[r["pose_pitch"], r["pose_yaw"], r["pose_roll"], *r["pose_translation"]]
                                        for r in rows]),
                      "transform": np.array([r["pose_transform"] for r in rows]).reshape(-1, 4, 4)}
    with np.load(runs["npz"][1]) as d:
        valid = np.isfinite(d["score"])
        out["npz"] = {"landmarks": d["landmarks"][valid],
                      "pose": np.column_stack([d["pose_pitch"][valid], d["pose_yaw"][valid], d["pose_roll"][valid],
                                               d["pose_translation"][valid]]),
                      "transform": d["pose_transform"][valid]}
    with open(runs["csv"][1], newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["x0"]]
    out["csv"] = {"landmarks": np.array([[float(r[f"{c}{k}"]) for k in range(478) for c in "xyz"]
                                         for r in rows]).reshape(-1, 478, 3),
                  "pose": np.array([[float(r[k]) for k in ("pose_pitch", "pose_yaw", "pose_roll", "pose_tx",
                                                           "pose_ty", "pose_tz")] for r in rows]),
                  "transform": np.array([[float(r[f"pose_m{i}{j}"]) for i in range(4) for j in range(4)]
                                         for r in rows]).reshape(-1, 4, 4)}
    return out


def test_all_formats_hold_the_same_faces(runs):
    pytest.importorskip("pyarrow")
    faces = _faces_from_each_format(runs)
    ref = faces["jsonl"]
    assert ref["landmarks"].shape == (3, 478, 3)
    for fmt in ("parquet", "npz", "csv"):
        for key in ("landmarks", "pose", "transform"):
            # landmarks are float32 in parquet and npz: 3 decimals survive to ~1e-4 px
            np.testing.assert_allclose(faces[fmt][key], ref[key], rtol=0, atol=2e-4, err_msg=f"{fmt} {key}")


def test_head_pose_is_plausible(runs):
    records = [json.loads(line) for line in runs["jsonl"][1].read_text().splitlines()]
    for record in records[:2]:
        for face in record["faces"]:
            pose = face["pose"]
            assert abs(pose["pitch"]) < 45 and abs(pose["yaw"]) < 60 and abs(pose["roll"]) < 45, pose
            assert pose["translation"][2] < 0  # in front of the camera
            m = np.array(pose["transform"])
            assert m[3].tolist() == [0, 0, 0, 1]
            r = m[:3, :3] / np.linalg.norm(m[:3, 0])
            np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-4)


def test_overlays_change_pixels_at_the_landmarks_and_only_near_the_faces(runs):
    records = [json.loads(line) for line in runs["jsonl"][1].read_text().splitlines()]
    folder = runs["render"]
    # same names, relative to the folder argument or the file's own name, as PNG
    assert sorted(p.name for p in folder.iterdir()) == sorted([ONE.stem + ".png", TWO.stem + ".png", "blank.png"])
    for record in records[:3]:
        src = cv2.imread(record["path"], cv2.IMREAD_COLOR)
        overlay = cv2.imread(str(folder / (Path(record["path"]).stem + ".png")), cv2.IMREAD_COLOR)
        assert overlay.shape == src.shape
        changed = (np.abs(overlay.astype(int) - src.astype(int)).max(2) > 24)
        if not record["faces"]:
            assert not changed.any()
            continue
        near = np.zeros_like(changed)
        hit = []
        for face in record["faces"]:
            lm = np.array(face["landmarks"])
            # pixels change at the landmarks (3x3 neighbourhood, the mesh lines pass through them)
            xy = np.round(lm[:, :2]).astype(int)
            xy = xy[(xy[:, 0] > 0) & (xy[:, 1] > 0) & (xy[:, 0] < src.shape[1] - 1) & (xy[:, 1] < src.shape[0] - 1)]
            hood = np.stack([changed[xy[:, 1] + dy, xy[:, 0] + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
            hit.append(hood.any(0).mean())
            (x0, y0), (x1, y1) = lm[:, :2].min(0), lm[:, :2].max(0)
            pad = 0.15 * max(x1 - x0, y1 - y0)
            near[max(0, int(y0 - pad)):int(y1 + pad) + 1, max(0, int(x0 - pad)):int(x1 + pad) + 1] = True
        assert min(hit) > 0.9, hit
        assert changed.sum() > 500
        assert not (changed & ~near).any(), "pixels changed far from every face"


def test_no_refine_parquet_has_468_landmarks(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "small.parquet"
    proc = run_cli("images", PHOTOS / "face-obama-240p.jpg", "--no-refine", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert pq.read_schema(out).equals(parquet_schema(468), check_metadata=False)
    assert len(pq.read_table(out).column("landmarks")[0]) == 468 * 3


@pytest.mark.parametrize("name", ["faces.txt", "faces", "faces.json"])
def test_unknown_output_extension_is_one_line(tmp_path, name):
    proc = run_cli("images", ONE, "--out", tmp_path / name, timeout=60)
    lines = stderr_lines(proc)
    assert proc.returncode != 0 and len(lines) == 1, lines
    assert lines[0].startswith("attnmesh: error: --out ") and ".parquet" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_demo_writes_overlay_and_landmarks(tmp_path):
    folder = tmp_path / "demo"
    proc = run_cli("demo", "--out", folder)
    assert proc.returncode == 0, proc.stderr
    stderr_lines(proc)
    overlay, landmarks = folder / "astronaut.png", folder / "astronaut.jsonl"
    assert str(overlay) in proc.stdout and str(landmarks) in proc.stdout
    image = cv2.imread(str(overlay))
    assert image is not None and image.shape == (512, 512, 3)
    (record,) = [json.loads(line) for line in landmarks.read_text().splitlines()]
    assert len(record["faces"]) == 1 and len(record["faces"][0]["landmarks"]) == 478
    assert record["faces"][0]["pose"] is not None


def test_webcam_without_a_display_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "ATTNMESH_DEBUG")}
    proc = subprocess.run([sys.executable, "-m", "attnmesh", "webcam"], capture_output=True, text=True,
                          timeout=60, env=env)
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("attnmesh: error: webcam: ")
    assert "display" in lines[0] or "opencv-python" in lines[0], lines


def test_webcam_names_the_headless_opencv_build():
    from attnmesh.cli.webcam import _gui_problem

    class Headless:
        @staticmethod
        def getBuildInformation() -> str:  # noqa: N802 - cv2's name
            return "General configuration\n  GUI:                           NONE\n  Media I/O:\n"

    problem = _gui_problem(Headless)
    assert "opencv-python-headless" in problem and "pip install" in problem


def test_arrow_table_equals_pyarrows_own_conversion_without_importing_pandas():
    """outputs.arrow_table (NumPy buffers) builds the same table as pyarrow's from_pylist on every kind of row:
    faces with and without a pose, a face-less image, a failure, a non-UTF-8 file name, video frames with track
    ids; and, run in a fresh interpreter, it leaves pandas unimported."""
    import pyarrow as pa

    from attnmesh.io.outputs import arrow_table, error_record, face_record, frame_record, image_record, rows
    from attnmesh.pipeline.face_mesh import FaceMesh

    image = cv2.cvtColor(cv2.imread(str(PHOTOS / sorted(os.listdir(PHOTOS))[0])), cv2.COLOR_BGR2RGB)
    faces = FaceMesh(static_image_mode=True, max_num_faces=3).process(image)
    assert faces
    size = (image.shape[1], image.shape[0])
    face = face_record(faces[0], size)
    no_pose = dict(face, pose=None)
    records = [image_record("a.jpg", *size, [face, no_pose]), image_record("empty.png", 10, 20, []),
               error_record("bad.jpg", "not an image"), image_record(os.fsdecode(b"caf\xe9.jpg"), *size, [face]),
               frame_record("clip.mp4", 3, 0.1, *size, [dict(face, track_id=7), dict(face, track_id=None)])]
    table_rows = [row for record in records for row in rows(record)]
    schema = parquet_schema(478)
    got = arrow_table(table_rows, schema)
    assert got.equals(pa.Table.from_pylist(table_rows, schema=schema))
    assert got.num_rows == 7 and got.column("path_bytes").null_count == 6
    code = ("import sys, numpy as np; from attnmesh.io.outputs import arrow_table, parquet_schema, rows, "
            "image_record; t = arrow_table(list(rows(image_record('x.jpg', 4, 4, []))), parquet_schema()); "
            "print(t.num_rows, 'pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.split() == ["1", "False"], out
