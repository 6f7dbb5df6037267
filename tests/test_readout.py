"""The 68-point read-out (attnmesh.weights.readout, attnmesh.train.readout): each kind maps landmarks as its
definition says, the fits recover a map they are given, and FaceMesh's faces carry their model's read-out."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

import attnmesh
from attnmesh.train.readout import choose, fit_dense, fit_linear, nme
from attnmesh.weights.readout import Readout68, face_frame, fixed_indices


def faces(n: int, seed: int = 0) -> np.ndarray:
    """(n, 478, 3) landmarks: the shipped photo's face moved, turned, scaled and jittered."""
    rng = np.random.default_rng(seed)
    image = attnmesh.load_image(str(resources.files("attnmesh") / "assets" / "astronaut.png"))
    base = attnmesh.FaceMesh(static_image_mode=True, backend="torch").process(image)[0].landmarks
    out = []
    for _ in range(n):
        a = rng.uniform(-0.4, 0.4)
        r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * rng.uniform(0.5, 2.0)
        p = base.copy()
        p[:, :2] = (base[:, :2] - 250) @ r.T + rng.uniform(100, 400, 2) + rng.normal(0, 0.8, (478, 2))
        out.append(p)
    return np.stack(out).astype(np.float32)


def test_fixed_readout_is_the_documented_map_and_round_trips() -> None:
    mesh = faces(3)
    np.testing.assert_array_equal(Readout68("fixed")(mesh), mesh[:, fixed_indices(), :2])
    with pytest.raises(ValueError, match="kind"):
        Readout68("mlp")


def test_face_frame_normalises_position_rotation_and_scale() -> None:
    mesh = faces(4)
    centroid, rotation, scale = face_frame(mesh)
    local = np.einsum("nij,nkj->nki", rotation, mesh[..., :2] - centroid[:, None]) / scale[:, None, None]
    eye = local[:, 263] - local[:, 33]
    np.testing.assert_allclose(eye, np.tile([1.0, 0.0], (4, 1)), atol=1e-6)
    np.testing.assert_allclose(local[:, :468].mean(1), 0.0, atol=1e-6)


def convention(mesh: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Annotations of another convention: the fixed points moved by ``offsets`` (68, 2) given in the face frame
    (units of the eye-corner distance), so they turn and scale with the face."""
    _, rotation, scale = face_frame(mesh)
    moved = np.einsum("nji,kj->nki", rotation, offsets) * scale[:, None, None]
    return mesh[:, fixed_indices(), :2] + moved


def test_fits_recover_the_map_they_are_given() -> None:
    """Annotations made from the landmarks by a known rule (another convention: the fixed points shifted in the
    face frame): the fits reproduce them on other faces, and choose() prefers a fitted kind to the fixed map."""
    train, val = faces(200, 1), faces(60, 2)
    offsets = np.random.default_rng(5).normal(0, 0.03, (68, 2))
    dense = fit_dense(train, convention(train, offsets), 1e-4)
    assert np.abs(dense(val) - convention(val, offsets)).mean() < 1.0  # pixels; faces ~100-400 px wide, 0.8 px noise
    linear = fit_linear(train, convention(train, offsets))  # neighbouring vertices can express the offsets
    fixed_error = np.abs(Readout68("fixed")(val) - convention(val, offsets)).mean()
    assert np.abs(linear(val) - convention(val, offsets)).mean() < 0.5 * fixed_error
    best, table = choose((train, convention(train, offsets)), (val, convention(val, offsets)))
    assert best.kind != "fixed" and dict(table)["fixed"] > 2 * nme(best, val, convention(val, offsets))
    again = Readout68.from_dict(best.to_dict())
    np.testing.assert_allclose(again(val), best(val), atol=1e-2)


def test_face_mesh_faces_carry_their_models_readout() -> None:
    """Face.landmarks68 is the registered model's shipped read-out applied to its mesh (both Attention Meshes
    ship a dense map); a FaceMesh over a runner object reads out with the fixed vertex map."""
    from attnmesh.runtime import make_landmark_runner
    from attnmesh.weights.readout import load_readout

    image = attnmesh.load_image(str(resources.files("attnmesh") / "assets" / "astronaut.png"))
    for model in ("attention_mesh", "attention_mesh_300w"):
        fm = attnmesh.FaceMesh(static_image_mode=True, backend="torch", model=model)
        got = fm.process(image)[0]
        assert fm.readout68.kind == load_readout(model).kind == "dense"
        np.testing.assert_allclose(got.landmarks68, load_readout(model)(got.landmarks), atol=1e-4)
        assert got.landmarks68.shape == (68, 2)
        # the dense map stays near the fixed vertices (a read-out, not a different face): on average within 4%
        # IOD, the most-moved point (a jaw point, 300-W's jaw line lies below the mesh's) within 15%
        iod = np.linalg.norm(got.landmarks[33, :2] - got.landmarks[263, :2])
        moved = np.linalg.norm(got.landmarks68 - got.landmarks[fixed_indices(), :2], axis=1)
        assert moved.mean() < 0.04 * iod and moved.max() < 0.15 * iod, (moved.mean() / iod, moved.max() / iod)
    runner = attnmesh.FaceMesh(static_image_mode=True, backend="torch",
                               model=make_landmark_runner("attention_mesh", backend="torch"))
    face = runner.process(image)[0]
    np.testing.assert_array_equal(face.landmarks68, face.landmarks[fixed_indices(), :2])


def test_a_stored_dense_readout_loads_back_from_its_file(tmp_path) -> None:
    """store_readout puts a dense map's matrix in a .safetensors file beside the weights (sha256 in the
    manifest) and load_readout gives the same points; a corrupted file is refused."""
    import shutil

    from attnmesh.weights import WeightsError, weights_dir
    from attnmesh.weights.readout import load_readout, store_readout

    for f in weights_dir().glob("*.json"):
        shutil.copy(f, tmp_path / f.name)
    train = faces(120, 1)
    offsets = np.random.default_rng(5).normal(0, 0.03, (68, 2))
    dense = fit_dense(train, convention(train, offsets), 1e-4)
    entry = store_readout(dense, "attention_mesh", {"data": "test"}, tmp_path)
    assert entry["file"] == "attention_mesh.readout68.safetensors" and "matrix" not in entry
    val = faces(10, 2)
    np.testing.assert_allclose(load_readout("attention_mesh", tmp_path)(val), dense(val), atol=1e-3)
    path = tmp_path / entry["file"]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        load_readout("attention_mesh", tmp_path)
