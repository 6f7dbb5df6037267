"""Head pose and metric geometry: the Procrustes solver, synthetic poses with known truth, and MediaPipe's own
FaceGeometryPipelineCalculator (linked into the reference wheel) run on the same landmarks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnmesh.geometry.face_geometry import (FaceGeometry, PerspectiveCamera, ProcrustesBasis, estimate_face_geometry,
                                             estimate_head_pose, estimate_head_poses,
                                             euler_from_rotation, load_canonical_face, rotation_from_euler,
                                             weighted_procrustes)

WIDTH, HEIGHT = 640, 480
FOV_DEGREES = 63.0
NOSE_TIP, RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 1, 33, 263

# (pitch, yaw, roll) degrees and translation (cm) of the synthetic heads.
POSES = [
    ((0, 0, 0), (0, 0, -50)),
    ((20, -30, 10), (5, -3, -60)),
    ((-35, 40, -25), (-8, 4, -45)),
    ((10, 35, 30), (3, 2, -80)),
    ((40, 0, 0), (0, 0, -40)),
    ((-40, -40, 40), (-4, -6, -70)),
    ((0, 0, -40), (10, 5, -55)),
    ((-15, 25, 5), (0, -8, -65)),
]


def axis_rotation(axis: str, degrees: float) -> np.ndarray:
    """Right-handed rotation about a camera axis (written out independently of the library)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def true_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    return axis_rotation("y", yaw) @ axis_rotation("x", -pitch) @ axis_rotation("z", roll)


def rotation_error_degrees(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(np.clip((np.trace(a.T @ b) - 1) / 2, -1.0, 1.0)))


def screen_landmarks(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """The canonical face posed in camera space (x right, y up, camera looking down -z), projected through a
    pinhole with a 63° vertical field of view onto a WIDTH x HEIGHT image, as attnmesh-style landmarks:
    x, y pixels (y down) and z = depth relative to the nose tip in pixels at the face's mean depth."""
    points = load_canonical_face().vertices @ rotation.T + translation
    focal = HEIGHT / 2 / math.tan(math.radians(FOV_DEGREES) / 2)
    depth = -points[:, 2]
    x = WIDTH / 2 + focal * points[:, 0] / depth
    y = HEIGHT / 2 - focal * points[:, 1] / depth
    z = (depth - depth[NOSE_TIP]) * focal / depth.mean()
    return np.stack([x, y, z], 1)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# ------------------------------------------------------------------------------------------ Procrustes


def test_procrustes_recovers_similarity_transform():
    rng = np.random.default_rng(0)
    for _ in range(5):
        rotation, scale, translation = random_rotation(rng), rng.uniform(0.2, 5.0), rng.normal(0, 30, 3)
        source = rng.normal(0, 5, (50, 3))
        target = scale * source @ rotation.T + translation
        transform = weighted_procrustes(source, target, rng.uniform(0.1, 1.0, 50))
        np.testing.assert_allclose(transform[:3, :3], scale * rotation, atol=1e-10)
        np.testing.assert_allclose(transform[:3, 3], translation, atol=1e-9)
        np.testing.assert_array_equal(transform[3], [0, 0, 0, 1])


def test_procrustes_ignores_zero_weight_outliers_and_uses_weights():
    rng = np.random.default_rng(1)
    rotation, scale, translation = random_rotation(rng), 1.7, np.array([3.0, -2.0, 40.0])
    source = rng.normal(0, 5, (40, 3))
    target = scale * source @ rotation.T + translation
    target[:10] += rng.normal(0, 20, (10, 3))  # outliers
    weights = np.ones(40)
    weights[:10] = 0
    transform = weighted_procrustes(source, target, weights)
    np.testing.assert_allclose(transform[:3, :3], scale * rotation, atol=1e-10)
    np.testing.assert_allclose(transform[:3, 3], translation, atol=1e-9)
    # With uniform weights the outliers pull the fit away.
    uniform = weighted_procrustes(source, target, np.ones(40))
    assert np.abs(uniform[:3, 3] - translation).max() > 0.1


def test_procrustes_never_reflects():
    rng = np.random.default_rng(2)
    source = rng.normal(0, 1, (20, 3))
    target = source * np.array([-1.0, 1.0, 1.0])  # a mirror image
    transform = weighted_procrustes(source, target, np.ones(20))
    assert np.linalg.det(transform[:3, :3]) > 0


def test_procrustes_rejects_bad_input():
    points = np.zeros((5, 3))
    with pytest.raises(ValueError):
        weighted_procrustes(points, points, np.ones(5))  # degenerate design matrix
    with pytest.raises(ValueError):
        weighted_procrustes(np.ones((5, 3)), np.ones((5, 3)), -np.ones(5))
    with pytest.raises(ValueError):
        weighted_procrustes(np.ones((5, 3)), np.ones((4, 3)), np.ones(5))


# ------------------------------------------------------------------------------------------ canonical face


def test_canonical_face():
    face = load_canonical_face()
    assert face.vertices.shape == (468, 3) and face.uv.shape == (468, 2) and face.triangles.shape == (898, 3)
    assert np.count_nonzero(face.procrustes_weights) == 33
    assert face.procrustes_weights.sum() == pytest.approx(1.055, abs=1e-6)
    assert face.triangles.min() == 0 and face.triangles.max() == 467
    # Canonical frame: x towards the subject's left, y up, z out of the face.
    assert face.vertices[LEFT_EYE_OUTER, 0] > 0 > face.vertices[RIGHT_EYE_OUTER, 0]
    assert face.vertices[10, 1] > 0 > face.vertices[152, 1]  # forehead above chin
    assert face.vertices[NOSE_TIP, 2] > face.vertices[:, 2].max() - 0.2  # the nose is the front-most part
    assert load_canonical_face() is face
    with pytest.raises(ValueError):
        face.vertices[0, 0] = 1.0


# ------------------------------------------------------------------------------------------ Euler angles


def test_euler_round_trip():
    for (pitch, yaw, roll), _ in POSES:
        rotation = rotation_from_euler(pitch, yaw, roll)
        np.testing.assert_allclose(rotation, true_rotation(pitch, yaw, roll), atol=1e-12)
        np.testing.assert_allclose(euler_from_rotation(rotation), (pitch, yaw, roll), atol=1e-9)


def test_euler_signs_on_the_image():
    """Each positive angle moves the face on the image the way the docstring says (unmirrored image)."""
    t = np.array([0.0, 0.0, -50.0])

    def geometry(pitch: float, yaw: float, roll: float) -> tuple[FaceGeometry, np.ndarray]:
        lm = screen_landmarks(true_rotation(pitch, yaw, roll), t)
        return estimate_face_geometry(lm, (WIDTH, HEIGHT)), lm

    g, lm = geometry(0, 25, 0)  # turns to the subject's left: nose towards image right
    eyes_mid = (lm[RIGHT_EYE_OUTER] + lm[LEFT_EYE_OUTER]) / 2
    assert lm[NOSE_TIP, 0] > eyes_mid[0] + 5 and g.yaw == pytest.approx(25, abs=0.01)
    g, lm = geometry(25, 0, 0)  # looks up: the nose rises towards the eyes on the image
    g0, lm0 = geometry(0, 0, 0)
    assert lm[NOSE_TIP, 1] - lm[RIGHT_EYE_OUTER, 1] < lm0[NOSE_TIP, 1] - lm0[RIGHT_EYE_OUTER, 1] - 5
    assert g.pitch == pytest.approx(25, abs=0.01)
    g, lm = geometry(0, 0, 25)  # tilts to the right shoulder: counter-clockwise, the image-right eye goes up
    assert lm[LEFT_EYE_OUTER, 1] < lm[RIGHT_EYE_OUTER, 1] - 5 and g.roll == pytest.approx(25, abs=0.01)


# ------------------------------------------------------------------------------------------ synthetic poses


@pytest.mark.parametrize("angles,translation", POSES)
def test_synthetic_pose(angles, translation):
    rotation, translation = true_rotation(*angles), np.array(translation, np.float64)
    g = estimate_face_geometry(screen_landmarks(rotation, translation), (WIDTH, HEIGHT))
    assert rotation_error_degrees(g.rotation, rotation) < 1e-3
    np.testing.assert_allclose(g.euler_angles, angles, atol=1e-3)
    np.testing.assert_allclose(g.translation, translation, atol=1e-3)
    assert g.scale == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(g.metric_landmarks, load_canonical_face().vertices, atol=1e-3)
    np.testing.assert_allclose(g.camera_landmarks(), load_canonical_face().vertices @ rotation.T + translation,
                               atol=1e-3)
    np.testing.assert_allclose(g.rotation @ g.rotation.T, np.eye(3), atol=1e-12)


def test_synthetic_pose_with_noise_and_iris():
    """0.5 px landmark noise on 80-160 px wide faces keeps the pose within 1° (the error grows about linearly
    with the noise: about 0.6° mean per pixel on a 100 px face); extra (iris) landmarks after the first 468
    are ignored."""
    rng = np.random.default_rng(3)
    errors = []
    for angles, translation in POSES:
        rotation = true_rotation(*angles)
        lm = screen_landmarks(rotation, np.array(translation, np.float64)) + rng.normal(0, 0.5, (468, 3))
        lm = np.concatenate([lm, rng.uniform(0, 640, (10, 3))])
        g = estimate_face_geometry(lm, (WIDTH, HEIGHT))
        errors.append(rotation_error_degrees(g.rotation, rotation))
        np.testing.assert_allclose(g.euler_angles, angles, atol=1.0)
    assert max(errors) < 1.0 and np.mean(errors) < 0.5


def test_camera_project_matches_the_pinhole():
    camera = PerspectiveCamera()
    rotation, translation = true_rotation(10, 20, 5), np.array([2.0, -1.0, -50.0])
    points = load_canonical_face().vertices @ rotation.T + translation
    np.testing.assert_allclose(camera.project(points, (WIDTH, HEIGHT)),
                               screen_landmarks(rotation, translation)[:, :2], atol=1e-9)


def test_degenerate_input():
    compact = np.full((468, 3), 100.0) + np.random.default_rng(4).normal(0, 0.1, (468, 3))
    with pytest.raises(ValueError, match="compact"):
        estimate_face_geometry(compact, (WIDTH, HEIGHT))
    with pytest.raises(ValueError):
        estimate_face_geometry(np.zeros((100, 3)), (WIDTH, HEIGHT))
    lm = screen_landmarks(np.eye(3), np.array([0.0, 0.0, -50.0]))
    lm[5, 0] = np.nan
    with pytest.raises(ValueError):
        estimate_face_geometry(lm, (WIDTH, HEIGHT))


# ------------------------------------------------------------------------------------------ MediaPipe


def mediapipe_face_geometry(landmarks: list[np.ndarray], width: int,
                            height: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run MediaPipe's Tasks FaceGeometryPipelineCalculator on attnmesh-style landmarks (image pixels).

    Returns (pose 4x4, metric mesh 468x5 x, y, z, u, v) per face. The metadata comes from our canonical face
    JSON (exported from MediaPipe's geometry_pipeline_metadata_landmarks.pbtxt) through the calculator's
    ``metadata_file.file_content``, so no file is needed.
    """
    mp = pytest.importorskip("mediapipe")  # noqa: F841
    from google.protobuf import text_format
    from mediapipe.framework import calculator_pb2
    from mediapipe.framework.formats import landmark_pb2
    from mediapipe.python import packet_creator, packet_getter
    from mediapipe.python._framework_bindings import calculator_graph, image_frame
    from mediapipe.tasks.cc.vision.face_geometry.calculators import geometry_pipeline_calculator_pb2
    from mediapipe.tasks.cc.vision.face_geometry.proto import (environment_pb2, face_geometry_pb2,
                                                               geometry_pipeline_metadata_pb2, mesh_3d_pb2)

    face = load_canonical_face()
    metadata = geometry_pipeline_metadata_pb2.GeometryPipelineMetadata()
    metadata.input_source = geometry_pipeline_metadata_pb2.InputSource.Value("FACE_LANDMARK_PIPELINE")
    mesh = metadata.canonical_mesh
    mesh.vertex_type = mesh_3d_pb2.Mesh3d.VertexType.Value("VERTEX_PT")
    mesh.primitive_type = mesh_3d_pb2.Mesh3d.PrimitiveType.Value("TRIANGLE")
    mesh.vertex_buffer.extend(np.concatenate([face.vertices, face.uv], 1).ravel().tolist())
    mesh.index_buffer.extend(face.triangles.ravel().tolist())
    for i in np.flatnonzero(face.procrustes_weights):
        entry = metadata.procrustes_landmark_basis.add()
        entry.landmark_id, entry.weight = int(i), float(face.procrustes_weights[i])

    # create_proto_vector is not implemented in the bindings: a one-item loop builds the landmark vector.
    config = text_format.Parse("""
        input_stream: "image" input_stream: "landmarks" input_stream: "ids" input_side_packet: "env"
        output_stream: "geometry"
        node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE:image" output_stream: "SIZE:size" }
        node { calculator: "BeginLoopIntCalculator" input_stream: "ITERABLE:ids" input_stream: "CLONE:landmarks"
               output_stream: "ITEM:id" output_stream: "CLONE:item" output_stream: "BATCH_END:end" }
        node { calculator: "EndLoopNormalizedLandmarkListVectorCalculator" input_stream: "ITEM:item"
               input_stream: "BATCH_END:end" output_stream: "ITERABLE:multi" }
        node { calculator: "mediapipe.tasks.vision.face_geometry.FaceGeometryPipelineCalculator"
               input_side_packet: "ENVIRONMENT:env" input_stream: "IMAGE_SIZE:size"
               input_stream: "MULTI_FACE_LANDMARKS:multi" output_stream: "MULTI_FACE_GEOMETRY:geometry" }
    """, calculator_pb2.CalculatorGraphConfig())
    options = geometry_pipeline_calculator_pb2.FaceGeometryPipelineCalculatorOptions()
    options.metadata_file.file_content = metadata.SerializeToString()
    config.node[3].node_options.add().Pack(options)
    env = environment_pb2.Environment()
    env.origin_point_location = environment_pb2.OriginPointLocation.Value("TOP_LEFT_CORNER")
    env.perspective_camera.vertical_fov_degrees, env.perspective_camera.near = FOV_DEGREES, 1.0
    env.perspective_camera.far = 10000.0

    try:
        graph = calculator_graph.CalculatorGraph(graph_config=config)
    except Exception as e:  # the calculators are not linked into this build
        pytest.skip(f"MediaPipe's face geometry calculator is unavailable: {e}")
    outputs = []
    graph.observe_output_stream("geometry",
                                lambda stream, packet: outputs.append(packet_getter.get_proto_list(packet)))
    graph.start_run({"env": packet_creator.create_proto(env)})
    image = np.zeros((height, width, 3), np.uint8)
    for t, points in enumerate(landmarks):
        msg = landmark_pb2.NormalizedLandmarkList()
        for x, y, z in points:
            lm = msg.landmark.add()
            lm.x, lm.y, lm.z = x / width, y / height, z / width
        frame = packet_creator.create_image_frame(image_format=image_frame.ImageFormat.SRGB, data=image)
        graph.add_packet_to_input_stream("image", frame.at(t))
        graph.add_packet_to_input_stream("landmarks", packet_creator.create_proto(msg).at(t))
        graph.add_packet_to_input_stream("ids", packet_creator.create_int_vector([0]).at(t))
    graph.close()
    results = []
    for out in outputs:
        geometry = face_geometry_pb2.FaceGeometry.FromString(out[0].SerializeToString())
        matrix = geometry.pose_transform_matrix
        assert matrix.layout == 0  # COLUMN_MAJOR
        pose = np.array(matrix.packed_data, np.float64).reshape(4, 4).T
        results.append((pose, np.array(geometry.mesh.vertex_buffer, np.float64).reshape(-1, 5)))
    return results


def test_matches_mediapipe():
    rng = np.random.default_rng(5)
    inputs = [screen_landmarks(true_rotation(*angles), np.array(t, np.float64)) + rng.normal(0, 1.0, (468, 3))
              for angles, t in POSES]
    reference = mediapipe_face_geometry(inputs, WIDTH, HEIGHT)
    assert len(reference) == len(inputs)
    face = load_canonical_face()
    for lm, (pose, mesh) in zip(inputs, reference):
        g = estimate_face_geometry(lm, (WIDTH, HEIGHT))
        np.testing.assert_allclose(g.pose_transform[:3, :3], pose[:3, :3], atol=1e-4)  # MediaPipe is float32
        np.testing.assert_allclose(g.pose_transform[:3, 3], pose[:3, 3], atol=1e-3)
        np.testing.assert_allclose(g.metric_landmarks, mesh[:, :3], atol=1e-3)
        np.testing.assert_allclose(face.uv, mesh[:, 3:], atol=1e-6)


def test_head_poses_match_mediapipe_and_do_not_depend_on_the_batch():
    """estimate_head_poses (the output records' pose: 33 points, scales from singular values, all faces at once)
    gives MediaPipe's pose, estimate_face_geometry's to rounding, and each face the same pose alone or in any
    batch; a degenerate face gets NaN without touching the others."""
    rng = np.random.default_rng(6)
    inputs = [screen_landmarks(true_rotation(*angles), np.array(t, np.float64)) + rng.normal(0, 1.0, (468, 3))
              for angles, t in POSES]
    reference = mediapipe_face_geometry(inputs, WIDTH, HEIGHT)
    batch = np.stack(inputs)
    poses = estimate_head_poses(batch, [(WIDTH, HEIGHT)] * len(batch))
    for lm, pose, (mp_pose, _) in zip(inputs, poses, reference):
        np.testing.assert_allclose(pose[:3, :3], mp_pose[:3, :3], atol=1e-4)
        np.testing.assert_allclose(pose[:3, 3], mp_pose[:3, 3], atol=1e-3)
        np.testing.assert_allclose(pose, estimate_face_geometry(lm, (WIDTH, HEIGHT)).pose_transform, rtol=0,
                                   atol=1e-9)
        np.testing.assert_array_equal(estimate_head_pose(lm, (WIDTH, HEIGHT)), pose)
    # a reflection-free rotation (rows orthonormal, det 1) in every pose
    rotation = poses[:, :3, :3] / np.linalg.norm(poses[:, :3, 0], axis=1)[:, None, None]
    np.testing.assert_allclose(np.linalg.det(rotation), 1.0, atol=1e-9)

    compact = np.full((468, 3), 100.0) + rng.normal(0, 0.1, (468, 3))
    broken = inputs[0].copy()
    broken[7, 1] = np.nan
    mixed = np.stack([inputs[1], compact, broken, inputs[2]])
    sizes = [(WIDTH, HEIGHT), (WIDTH, HEIGHT), (WIDTH, HEIGHT), (HEIGHT, WIDTH)]
    out = estimate_head_poses(mixed, sizes)
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
    np.testing.assert_array_equal(out[0], poses[1])
    np.testing.assert_array_equal(out[3], estimate_head_poses(inputs[2][None], [(HEIGHT, WIDTH)])[0])
    with pytest.raises(ValueError, match="no head pose"):
        estimate_head_pose(compact, (WIDTH, HEIGHT))
    with pytest.raises(ValueError):
        estimate_head_poses(np.zeros((2, 100, 3)), [(WIDTH, HEIGHT)] * 2)


def test_procrustes_fit_many_equals_fit_one_by_one():
    """ProcrustesBasis.fit_many and .scales (the batched head pose) agree with .fit (one target, as
    weighted_procrustes and the stabiliser use it); a degenerate target gets NaN where .fit raises."""
    rng = np.random.default_rng(7)
    source, weights = rng.normal(size=(33, 3)), rng.uniform(0.1, 1.0, 33)
    basis = ProcrustesBasis(source, weights)
    targets = np.stack([2.0 * source @ true_rotation(*rng.uniform(-40, 40, 3)).T + rng.normal(size=3)
                        + rng.normal(0, 0.05, (33, 3)) for _ in range(6)] + [np.zeros((33, 3))])
    transforms, ok = basis.fit_many(targets)
    assert ok.tolist() == [True] * 6 + [False] and np.isnan(transforms[6]).all()
    for target, transform in zip(targets[:6], transforms):
        np.testing.assert_allclose(transform, basis.fit(target), rtol=0, atol=1e-9)
    np.testing.assert_allclose(basis.scales(targets[:6]), np.linalg.norm(transforms[:6, :3, 0], axis=1), atol=1e-9)
    with pytest.raises(ValueError):
        basis.fit(targets[6])
