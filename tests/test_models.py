"""Model-level checks against independent computations: the spatial-transformer ops, refinement,
batching and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnmesh import topology
from attnmesh.models.attention_mesh import AttentionMesh, refine_landmarks
from attnmesh.models.spatial import region_to_input_space, region_transform, sample_region
from attnmesh.weights import load_model_weights
from reference import photo_paths, read_rgb


@pytest.fixture(scope="module")
def model() -> AttentionMesh:
    return load_model_weights(AttentionMesh(), "attention_mesh").eval()


def numpy_transform_tensor_bilinear(feat: np.ndarray, t: np.ndarray, size: int) -> np.ndarray:
    """Straight loop version of MediaPipe's TransformTensorBilinear v2 on an HxWxC array."""
    h, w, c = feat.shape
    out = np.zeros((size, size, c))
    for j in range(size):
        for i in range(size):
            x = t[0, 0] * (i + 0.5) + t[0, 1] * (j + 0.5) + t[0, 2] - 0.5
            y = t[1, 0] * (i + 0.5) + t[1, 1] * (j + 0.5) + t[1, 2] - 0.5
            if x < 0 or x > w - 1 or y < 0 or y > h - 1:
                continue
            x0, y0 = int(math.floor(x)), int(math.floor(y))
            fx, fy = x - x0, y - y0

            def at(yy: int, xx: int) -> np.ndarray:
                return feat[yy, xx] if 0 <= yy < h and 0 <= xx < w else np.zeros(c)

            out[j, i] = ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                         + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))
    return out


def test_sample_region_matches_reference_rule() -> None:
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(48, 48, 8))
    # a rotated, scaled crop that runs off the top-left corner of the map
    a = 1.7 * np.array([[math.cos(0.4), math.sin(0.4)], [-math.sin(0.4), math.cos(0.4)]])
    t = np.concatenate([a, np.array([[-3.0], [2.5]])], 1)
    ours = sample_region(torch.tensor(feat).permute(2, 0, 1)[None], torch.tensor(t)[None], 16)[0]
    expected = numpy_transform_tensor_bilinear(feat, t, 16)
    assert (expected == 0).all(-1).any(), "the case must include out-of-range samples"
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), expected, atol=1e-9)


def test_region_transform_matches_spec_matrix() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(5, 40, size=(468, 2))
    left, right = topology.CROP_ROTATION_PAIRS["lips"]
    sub = list(topology.LIPS)
    theta = -math.atan2(pts[right, 1] - pts[left, 1], pts[right, 0] - pts[left, 0])
    c, s = math.cos(theta), math.sin(theta)
    q = pts[sub] @ np.array([[c, -s], [s, c]]).T
    w, h = np.ptp(q[:, 0]), np.ptp(q[:, 1])
    mid = (q.max(0) + q.min(0)) / 2
    center = np.array([[c, s], [-s, c]]) @ mid
    sx, sy = 1.5 * w / 16, 1.5 * h / 16
    expected = np.array([[c * sx, s * sy, center[0] - 8 * (c * sx + s * sy)],
                         [-s * sx, c * sy, center[1] - 8 * (-s * sx + c * sy)]])
    ours = region_transform(torch.tensor(pts)[None], (left, right), sub)[0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-9)
    # TransformLandmarks: out = 4 * T(p / 4)
    p = rng.uniform(0, 64, size=(1, 5, 2))
    out = region_to_input_space(torch.tensor(p), torch.tensor(expected)[None])[0].numpy()
    np.testing.assert_allclose(out, 4 * ((p[0] / 4) @ expected[:, :2].T + expected[:, 2]), atol=1e-9)


def test_refinement_layout() -> None:
    rng = np.random.default_rng(2)
    mesh = torch.tensor(rng.normal(size=(2, 468, 3)))
    regions = [torch.tensor(rng.normal(size=(2, n, 2))) for n in (80, 71, 71, 5, 5)]
    out = refine_landmarks(mesh, *regions).numpy()
    lips, reye, leye, riris, liris = (r.numpy() for r in regions)
    assert out.shape == (2, 478, 3)
    np.testing.assert_array_equal(out[:, list(topology.LIPS), :2], lips)
    np.testing.assert_array_equal(out[:, list(topology.RIGHT_EYE), :2], reye)
    np.testing.assert_array_equal(out[:, list(topology.LEFT_EYE), :2], leye)
    np.testing.assert_array_equal(out[:, :468, 2], mesh.numpy()[..., 2])  # z kept from the mesh
    np.testing.assert_array_equal(out[:, 468:473, :2], riris)
    np.testing.assert_array_equal(out[:, 473:, :2], liris)
    for slots, avg in ((slice(468, 473), topology.RIGHT_IRIS_Z_AVERAGE), (slice(473, 478), topology.LEFT_IRIS_Z_AVERAGE)):
        np.testing.assert_allclose(out[:, slots, 2], np.repeat(mesh.numpy()[:, list(avg), 2].mean(1, keepdims=True), 5, 1))
    untouched = sorted(set(range(468)) - set(topology.LIPS) - set(topology.RIGHT_EYE) - set(topology.LEFT_EYE))
    np.testing.assert_array_equal(out[:, untouched], mesh.numpy()[:, untouched])


def _face_crops(n: int) -> torch.Tensor:
    import attnmesh

    fm = attnmesh.FaceMesh(static_image_mode=True, max_num_faces=1)
    crops = []
    for p in photo_paths()[:n]:
        image = read_rgb(p)
        faces = fm.process(image)
        crops.append(fm.landmark_runner.crop(image, [faces[0].roi])[0])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def test_batch_equals_one_by_one(model: AttentionMesh) -> None:
    x = _face_crops(4)
    with torch.no_grad():
        batched = model(x).landmarks
        single = torch.cat([model(x[i : i + 1]).landmarks for i in range(len(x))])
    assert (batched - single).abs().max().item() <= 1e-3


def test_gradients_reach_the_input_crop(model: AttentionMesh) -> None:
    x = _face_crops(1).requires_grad_(True)
    out = model(x)
    for name in ("lips", "right_eye", "left_iris"):
        (g,) = torch.autograd.grad(getattr(out, name).sum(), x, retain_graph=True)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name
    # the crop transforms are differentiable functions of the mesh: gradient flows through the attention
    mesh = out.mesh.detach().requires_grad_(True)
    feats = torch.randn(1, 32, 48, 48)
    t = region_transform(mesh / 4, topology.CROP_ROTATION_PAIRS["lips"], topology.LIPS)
    (g,) = torch.autograd.grad(sample_region(feats, t).sum(), mesh)
    assert g[0, list(topology.LIPS)].abs().sum() > 0


def test_process_batch_equals_process() -> None:
    import attnmesh

    images = [read_rgb(p) for p in photo_paths()[:6]]
    fm = attnmesh.FaceMesh(static_image_mode=True, max_num_faces=5)
    batched = fm.process_batch(images)
    for image, faces in zip(images, batched):
        single = fm.process(image)
        assert len(single) == len(faces)
        for a, b in zip(single, faces):
            assert np.abs(a.landmarks - b.landmarks).max() <= 1e-3
            assert abs(a.score - b.score) <= 1e-5


def test_image_records_of_a_batch_equal_those_of_each_image_alone() -> None:
    """The output records (landmarks, head poses fitted for all faces of a batch at once) do not depend on the
    batch: ``attnmesh images`` gives each photo the same record whatever --batch-size and --workers are."""
    import attnmesh
    from attnmesh.io.outputs import pose_record
    from attnmesh.io.records import image_records

    paths = photo_paths()[:6]
    loaded = [(p, read_rgb(p)) for p in paths]
    fm = attnmesh.FaceMesh(static_image_mode=True, max_num_faces=5)
    batched = image_records(fm, loaded)
    assert sum(len(r["faces"]) for _, r, _, _ in batched) >= 6
    for (path, image), (_, record, _, faces) in zip(loaded, batched):
        ((_, alone, _, _),) = image_records(fm, [(path, image)])
        assert alone.keys() == record.keys() and len(alone["faces"]) == len(record["faces"])
        for a, b, face in zip(alone["faces"], record["faces"], faces):
            np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
            # the one-face path (attnmesh video's) agrees to rounding
            one = pose_record(face.landmarks, (image.shape[1], image.shape[0]))
            np.testing.assert_allclose(one["transform"], b["pose"]["transform"], rtol=0, atol=1e-6)
            assert max(abs(one[k] - b["pose"][k]) for k in ("pitch", "yaw", "roll")) <= 1e-3
            np.testing.assert_array_equal(a["pose"].pop("transform"), b["pose"].pop("transform"))
            a.pop("landmarks"), b.pop("landmarks")
            assert a == b


@pytest.mark.parametrize("model, bound", [("cascade", 0.03), ("attention_mesh_300w", 0.05), ("transformer", 0.10)])
def test_landmark_model_options_agree_with_the_attention_mesh(model: str, bound: float) -> None:
    """FaceMesh(model=...) runs the selected network end to end; on real photos its mesh stays close to the
    imported Attention Mesh (mean distance / inter-ocular distance; bounds from the model cards)."""
    import attnmesh
    from reference import interocular

    images = [read_rgb(p) for p in photo_paths()[:4]]
    reference = attnmesh.FaceMesh(static_image_mode=True).process_batch(images)
    ours = attnmesh.FaceMesh(static_image_mode=True, model=model).process_batch(images)
    errors = []
    for ref_faces, faces in zip(reference, ours):
        assert len(faces) == len(ref_faces)
        for a, b in zip(faces, ref_faces):
            assert a.landmarks.shape == (478, 3)
            distance = np.linalg.norm(a.landmarks[:, :2] - b.landmarks[:, :2], axis=1).mean()
            errors.append(distance / interocular(b.landmarks))
    assert errors and float(np.mean(errors)) <= bound, errors
