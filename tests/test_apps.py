"""The applications (attnmesh.apps): lip mask and lipstick, Laplacian mesh editing, blendshapes (solver and
distilled network), gaze, and the makeup/puppet commands as subprocesses on shared data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from reference import PHOTOS, VIDEOS, read_rgb

from attnmesh.apps import blendshapes as bs
from attnmesh.apps.laplacian import canonical_editing_mesh, differential_change, edges_of, laplacian_morph
from attnmesh.apps.lipstick import INNER_LOOP, apply_lipstick, lip_mask, lip_polygons, polygon_mask

ASTRONAUT = Path(__file__).resolve().parents[1] / "src/attnmesh/assets/astronaut.png"
SIZE = (640, 480)


@pytest.fixture(scope="module")
def astronaut():
    import attnmesh

    torch.set_num_threads(1)
    image = attnmesh.load_image(ASTRONAUT)
    with attnmesh.FaceMesh(static_image_mode=True) as fm:
        faces = fm.process(image)
    assert len(faces) == 1
    return image, faces


def open_mouth_landmarks() -> np.ndarray:
    """A synthetic face with the jaw open, projected to pixels."""
    c = np.zeros(len(bs.BLENDSHAPE_NAMES))
    c[bs.BLENDSHAPE_NAMES.index("jawOpen")] = 1.0
    rot, _ = bs.random_pose(np.random.default_rng(3), 10, 10, 5)
    return bs.project_face(bs.deform(c), rot, np.array([0.0, 0.0, -30.0]), SIZE)


# ---------------------------------------------------------------------------------------------------- lips


def test_contour_loops_derived_from_edges_match_the_fixed_loops():
    loops = bs.contour_loops()
    assert loops["lips_outer_upper"] == bs.LIPS_OUTER_UPPER and loops["lips_outer_lower"] == bs.LIPS_OUTER_LOWER
    assert loops["lips_inner_upper"] == bs.LIPS_INNER_UPPER and loops["lips_inner_lower"] == bs.LIPS_INNER_LOWER
    assert loops["right_eye_upper"] == bs.RIGHT_EYE_UPPER and loops["left_eye_lower"] == bs.LEFT_EYE_LOWER


@pytest.mark.parametrize("source", ["synthetic", "astronaut"])
def test_lip_mask_excludes_the_inner_mouth(source, astronaut):
    if source == "synthetic":
        lm, shape = open_mouth_landmarks(), (SIZE[1], SIZE[0])
    else:
        lm, shape = astronaut[1][0].landmarks, astronaut[0].shape  # smiling with the teeth showing
    inner = polygon_mask(lip_polygons(lm)[1], None, shape)
    assert inner.sum() > 40  # the mouth is open
    for feather in (None, 0.0, 2.0):
        mask = lip_mask(lm, shape, feather_px=feather)
        assert mask.dtype == np.float32 and mask.min() >= 0 and mask.max() <= 1
        assert (mask[inner] == 0).all()
        assert mask.max() > 0.5 and (mask > 0.25).sum() > 0.4 * inner.sum()
    # feathering scales with the face: the soft band is wider on a larger face
    big = lm.copy()
    big[:, :2] = big[:, :2] * 2
    soft = lambda m: ((m > 0.05) & (m < 0.95)).sum()  # noqa: E731
    assert soft(lip_mask(big, (shape[0] * 2, shape[1] * 2))) > 1.5 * soft(lip_mask(lm, shape))


def test_lipstick_changes_only_pixels_inside_the_mask(astronaut):
    image, faces = astronaut
    mask = lip_mask(faces[0].landmarks, image.shape)
    out = apply_lipstick(image, faces, "#C01030", opacity=0.8, gloss=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    outside = mask == 0
    np.testing.assert_array_equal(out[outside], image[outside])
    changed = np.any(out != image, axis=2)
    assert changed[mask > 0.5].mean() > 0.9
    # the lips got redder (CIELAB a*), and the teeth (inside the inner loop) are untouched
    lab = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2LAB).astype(float)  # noqa: E731
    assert lab(out)[mask > 0.9, 1].mean() > lab(image)[mask > 0.9, 1].mean() + 5
    inner = polygon_mask(faces[0].landmarks[list(INNER_LOOP), :2], None, image.shape)
    np.testing.assert_array_equal(out[inner], image[inner])
    # the lips' own texture is kept: lightness detail correlates with the original
    sel = mask > 0.9
    assert np.corrcoef(lab(out)[sel, 0], lab(image)[sel, 0])[0, 1] > 0.8
    np.testing.assert_array_equal(apply_lipstick(image, faces, "red", opacity=0.0), image)


# ----------------------------------------------------------------------------------------------- laplacian


def test_laplacian_morph_hits_anchors_and_keeps_local_shape():
    v, tri = canonical_editing_mesh()
    rng = np.random.default_rng(0)
    anchors = rng.choice(len(v), 25, replace=False)
    target = v[anchors] + rng.normal(0, 0.4, (25, 3))
    out = laplacian_morph(v, tri, anchors, target)
    np.testing.assert_allclose(out[anchors], target, atol=1e-3)
    assert np.abs(laplacian_morph(v, tri, anchors, v[anchors]) - v).max() < 1e-8  # no edit, no change
    # the naive alternative: every vertex takes the displacement of its nearest anchor
    nearest = np.argmin(np.linalg.norm(v[:, None] - v[anchors][None], axis=2), axis=1)
    naive = v + (target - v[anchors])[nearest]
    away = np.setdiff1d(np.arange(len(v)), anchors)
    e = edges_of(tri)
    length = lambda x: np.linalg.norm(x[e[:, 0]] - x[e[:, 1]], axis=1)  # noqa: E731
    ratio_dev = lambda x: np.percentile(np.abs(np.log(length(x) / length(v))), 90)  # noqa: E731
    d_lap = differential_change(v, out, tri)[away].mean()
    d_naive = differential_change(v, naive, tri)[away].mean()
    assert d_lap < 0.5 * d_naive, (d_lap, d_naive)
    assert ratio_dev(out) < 0.6 * ratio_dev(naive), (ratio_dev(out), ratio_dev(naive))
    for kind in ("uniform", "cotangent"):
        np.testing.assert_allclose(laplacian_morph(v, tri, anchors, target, kind=kind)[anchors], target, atol=1e-3)


# --------------------------------------------------------------------------------------------- blendshapes


def test_blendshape_basis_is_well_formed():
    names, deltas = bs.blendshape_basis()
    assert len(names) == 24 and deltas.shape == (24, 478, 3) and len(set(names)) == 24
    assert np.linalg.matrix_rank(deltas[:, bs.feature_ids()].reshape(24, -1)) == 24
    # the Procrustes basis of the pose estimate is not moved by any shape
    from attnmesh.geometry.face_geometry import load_canonical_face

    basis = np.nonzero(load_canonical_face().procrustes_weights)[0]
    assert np.abs(deltas[:, basis]).max() < 1e-6


def test_solver_and_network_recover_synthetic_coefficients():
    from attnmesh.apps.blendshape_net import BlendshapeNetPredictor

    rng = np.random.default_rng(2024)
    err_s, err_n = [], []
    for _ in range(30):
        face = bs.synthetic_face(rng, SIZE)
        neutral = bs.neutral_from_landmarks(bs.metric_landmarks(face["neutral_landmarks"], SIZE))
        metric = bs.metric_landmarks(face["landmarks"], SIZE)
        err_s.append(np.abs(bs.BlendshapeSolver(neutral).solve(metric) - face["coefficients"]))
        err_n.append(np.abs(BlendshapeNetPredictor(neutral).solve(metric) - face["coefficients"]))
    assert np.mean(err_s) <= 0.05, np.mean(err_s)
    assert np.mean(err_n) <= 0.05, np.mean(err_n)



def test_solver_ignores_rigid_shifts_of_the_eyes_lips_and_chin():
    """What pose removal leaves on real video (a region shifted as a block) must not become an expression."""
    rng = np.random.default_rng(7)
    _, shifts = bs.nuisance_basis()
    moved = []
    for _ in range(10):
        face = bs.synthetic_face(rng, SIZE)
        solver = bs.BlendshapeSolver(bs.neutral_from_landmarks(bs.metric_landmarks(face["neutral_landmarks"], SIZE)))
        metric = bs.metric_landmarks(face["landmarks"], SIZE)
        shifted = metric + np.tensordot(rng.normal(0.0, 0.2, len(shifts)), shifts, axes=1)  # 2 mm sigma
        moved.append(np.abs(solver.solve(shifted) - solver.solve(metric)))
    assert np.mean(moved) < 0.01 and np.max(moved) < 0.1, (np.mean(moved), np.max(moved))


def eye_aspect_ratio(lm: np.ndarray, ids: tuple[int, int, int, int, int, int]) -> float:
    """(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) in image pixels (Soukupova & Cech, 2016)."""
    p = lm[list(ids), :2]
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * np.linalg.norm(p[0] - p[3])))


def test_blink_and_jaw_follow_eye_and_mouth_opening_on_real_video():
    """talking-d3 (blinks, speech): eyeBlink against the image-space eye aspect ratio and jawOpen
    against the inner-lip gap over the mouth width, both measured independently of the solver."""
    import attnmesh

    from reference import video_frames

    metrics, ear_r, ear_l, mouth = [], [], [], []
    with attnmesh.FaceMesh(static_image_mode=False) as fm:
        for frame in video_frames(VIDEOS / "talking-d3.mp4", 400):
            faces = fm.process(frame)
            if not faces:
                continue
            lm = faces[0].landmarks
            metrics.append(bs.metric_landmarks(lm, (frame.shape[1], frame.shape[0])))
            ear_r.append(eye_aspect_ratio(lm, (33, 160, 158, 133, 153, 144)))
            ear_l.append(eye_aspect_ratio(lm, (263, 387, 385, 362, 380, 373)))
            mouth.append(np.linalg.norm(lm[13, :2] - lm[14, :2]) / np.linalg.norm(lm[61, :2] - lm[291, :2]))
    assert len(metrics) > 340
    metrics = np.stack(metrics)
    solver = bs.BlendshapeSolver(bs.estimate_neutral(metrics))
    c = np.stack([solver.solve(m) for m in metrics])
    name = bs.BLENDSHAPE_NAMES.index
    assert np.corrcoef(c[:, name("eyeBlinkRight")], ear_r)[0, 1] <= -0.9
    assert np.corrcoef(c[:, name("eyeBlinkLeft")], ear_l)[0, 1] <= -0.9
    assert np.corrcoef(c[:, name("jawOpen")], mouth)[0, 1] >= 0.9

def test_gaze_on_the_astronaut(astronaut):
    from attnmesh.apps.gaze import estimate_gaze

    image, faces = astronaut
    gaze = estimate_gaze(faces[0].landmarks, (image.shape[1], image.shape[0]))
    for side in ("right", "left"):
        g = gaze[side]
        assert 4 < g.diameter_px < 15 and g.diameter_mm == 11.7 and 30 < g.distance_cm < 150
        assert abs(np.linalg.norm(g.direction_camera) - 1) < 1e-9
        assert abs(g.yaw) < 10 and abs(g.pitch) < 10  # she looks into the camera
    assert gaze["right"].center_px[0] < gaze["left"].center_px[0]  # subject's right eye is on the image left


# ------------------------------------------------------------------------------------------------------ CLI


def run_apps(*args: str | os.PathLike) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ATTNMESH_DEBUG"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "attnmesh", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """The first 30 frames of a talking-head clip (blinks and an open mouth come later; this is for schemas)."""
    path = tmp_path_factory.mktemp("apps") / "clip.mp4"
    cap = cv2.VideoCapture(str(VIDEOS / "talking-d11.mp4"))
    writer = None
    for _ in range(30):
        ok, frame = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, frame.shape[1::-1])
        writer.write(frame)
    writer.release()
    cap.release()
    return path


def test_makeup_command_on_a_photo_and_a_video(tmp_path, short_clip):
    src = PHOTOS / "face-obama-240p.jpg"
    out = tmp_path / "obama.png"
    r = run_apps("makeup", src, "--lipstick", "#B0183C", "--gloss", "0.3", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    before, after = read_rgb(src), read_rgb(out)
    assert after.shape == before.shape
    changed = np.any(after.astype(int) != before, axis=2)  # (PNG out, JPEG in: compare decoded pixels)
    assert 0 < changed.mean() < 0.05
    assert not list(tmp_path.glob(".*part*"))
    video = tmp_path / "lips.mp4"
    r = run_apps("makeup", short_clip, "--lipstick", "berry", "--out", video)
    assert r.returncode == 0, r.stderr
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    cap.release()
    # one-line errors
    r = run_apps("makeup", src, "--lipstick", "not-a-colour", "--out", tmp_path / "x.png")
    assert r.returncode == 2 and r.stderr.startswith("attnmesh: error:") and len(r.stderr.splitlines()) == 1
    r = run_apps("makeup", tmp_path / "missing.jpg", "--lipstick", "red", "--out", tmp_path / "x.png")
    assert r.returncode == 1 and r.stderr.startswith("attnmesh: error:") and "Traceback" not in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_puppet_command_writes_coefficients_and_avatar(tmp_path, short_clip):
    out, avatar = tmp_path / "coeffs.jsonl", tmp_path / "avatar.mp4"
    r = run_apps("puppet", short_clip, "--out", out, "--render", avatar)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 30
    for i, rec in enumerate(records):
        assert set(rec) == {"frame", "timestamp", "face", "pitch", "yaw", "roll", "coefficients"}
        assert rec["frame"] == i and rec["face"] is True
        assert list(rec["coefficients"]) == list(bs.BLENDSHAPE_NAMES)
        assert all(0.0 <= v <= 1.0 for v in rec["coefficients"].values())
        assert all(isinstance(rec[k], float) for k in ("pitch", "yaw", "roll"))
    cap = cv2.VideoCapture(str(avatar))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 480
    cap.release()
    pq = pytest.importorskip("pyarrow.parquet")
    parquet = tmp_path / "coeffs.parquet"
    r = run_apps("puppet", short_clip, "--out", parquet, "--method", "net")
    assert r.returncode == 0, r.stderr
    table = pq.read_table(parquet)
    assert table.num_rows == 30
    assert table.column_names == ["frame", "timestamp", "face", "pitch", "yaw", "roll", *bs.BLENDSHAPE_NAMES]
    assert str(table.schema.field("jawOpen").type) == "float"
    r = run_apps("puppet", short_clip, "--out", tmp_path / "coeffs.txt")
    assert r.returncode == 2 and r.stderr.startswith("attnmesh: error: --out")


def test_puppet_solves_the_stabilised_face_against_a_neutral_from_the_unsmoothed_one(tmp_path, short_clip):
    """'attnmesh puppet' recomputed from 'attnmesh video --no-smooth' (the same tracking): each frame's landmarks
    through the stabiliser, the neutral face from the unsmoothed landmarks, the solver on the stabilised ones."""
    from attnmesh.pipeline.stabilizer import LandmarkStabilizer

    out, raw = tmp_path / "coeffs.jsonl", tmp_path / "raw.jsonl"
    assert run_apps("puppet", short_clip, "--out", out).returncode == 0
    assert run_apps("video", short_clip, "--no-smooth", "--max-faces", "1", "--out", raw).returncode == 0
    frames = [json.loads(line) for line in raw.read_text().splitlines()]
    size = (frames[0]["width"], frames[0]["height"])
    stabilizer = LandmarkStabilizer()
    unsmoothed, stabilised = [], []
    for f in frames:
        lm = np.array(f["faces"][0]["landmarks"], np.float32)
        unsmoothed.append(bs.metric_landmarks(lm, size))
        stabilised.append(bs.metric_landmarks(stabilizer(lm, f["timestamp"]), size))
    solver = bs.BlendshapeSolver(bs.estimate_neutral(np.stack(unsmoothed)))
    expected = np.stack([solver.solve(m) for m in stabilised])
    got = np.array([[rec["coefficients"][k] for k in bs.BLENDSHAPE_NAMES]
                    for rec in map(json.loads, out.read_text().splitlines())])
    # the JSON lines round the landmarks (video) and the coefficients (puppet) to a few decimals
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_blendshape_net_training_writes_what_the_shipped_loader_reads(tmp_path):
    """research/blendshape_net/train.py (outside the wheel), a tiny run: weights and manifest in the shipped
    format (same keys, inputs, outputs and sizes as the shipped manifest, sha256 of the written file) that load
    strictly into the shipped network class."""
    import hashlib

    from safetensors.torch import load_file

    from attnmesh.apps.blendshape_net import MANIFEST_NAME, WEIGHTS_NAME, BlendshapeNet, apps_dir
    from research.blendshape_net.train import main

    main(["--samples", "48", "--val-samples", "8", "--epochs", "2", "--out-dir", str(tmp_path)])
    shipped = json.loads((apps_dir() / MANIFEST_NAME).read_text())
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest.keys() == shipped.keys() and manifest["training"]["samples"] == 48
    for key in ("model", "num_inputs", "hidden", "input_scale", "feature_ids", "outputs", "dtype"):
        assert manifest[key] == shipped[key], key
    assert manifest["sha256"] == hashlib.sha256((tmp_path / WEIGHTS_NAME).read_bytes()).hexdigest()
    net = BlendshapeNet(manifest["num_inputs"], len(manifest["outputs"]), manifest["hidden"])
    net.load_state_dict({k: v.float() for k, v in load_file(str(tmp_path / WEIGHTS_NAME)).items()}, strict=True)
    out = net.eval()(torch.zeros(1, manifest["num_inputs"]))
    assert out.shape == (1, len(manifest["outputs"]))
