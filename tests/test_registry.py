"""The model registry: every registered name works everywhere a model is named, and what the registry says
about a model is what its weights and runners are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnmesh
from attnmesh.registry import get_model_spec, list_models, model_names, model_table
from attnmesh.runtime import make_landmark_runner
from attnmesh.runtime.base import LandmarkRunner
from attnmesh.weights import read_manifest


NAMES = list_models()


def astronaut() -> np.ndarray:
    """The photo that ships with the package (one face)."""
    from importlib import resources

    return attnmesh.load_image(str(resources.files("attnmesh") / "assets" / "astronaut.png"))


def test_names_and_aliases() -> None:
    assert NAMES == ["attention_mesh", "attention_mesh_300w", "cascade", "face_landmark", "face_transformer_xs"]
    assert get_model_spec("attention").name == "attention_mesh"
    assert get_model_spec("transformer").name == "face_transformer_xs"
    with pytest.raises(ValueError, match="model must be one of attention_mesh"):
        get_model_spec("attention_mesh_v2")
    assert set(model_names()) == {*NAMES, "attention", "transformer"}


@pytest.mark.parametrize("name", NAMES)
def test_create_model_loads_the_registered_weights(name: str) -> None:
    """The module's parameters are the shipped file's (exactly, after float16 -> float32), its input size and
    landmark count are the registry's, and the registry's config agrees with the manifest's record."""
    spec = get_model_spec(name)
    net = attnmesh.create_model(name)
    assert not net.training
    manifest = read_manifest()["models"]
    for weights in spec.weights:
        assert weights in manifest
    x = torch.rand(1, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        out = net(x)
    points = out.mesh if spec.architecture == "face_landmark" else out.landmarks
    assert tuple(points.shape) == (1, spec.num_landmarks, 3)
    for key in ("input_size", "refine_dim", "refine_steps"):
        if key in manifest[spec.weights[0]]:
            assert spec.config[key] == manifest[spec.weights[0]][key], key
    fresh = attnmesh.create_model(name, pretrained=False)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values())
               if a.is_floating_point())


@pytest.mark.parametrize("backend", ["torch", "openvino", "onnxruntime"])
def test_every_registered_model_runs_in_face_mesh_on_every_backend(backend: str) -> None:
    """FaceMesh(model=name) for every name (and alias) on every backend: the registered number of landmarks,
    and the same answer as the torch runner of the same model (within 0.05 px on the shipped photo)."""
    image = astronaut()
    reference = {}
    for name in model_names():
        spec = get_model_spec(name)
        with attnmesh.FaceMesh(static_image_mode=True, model=name, backend=backend) as fm:
            faces = fm.process(image)
            assert isinstance(fm.landmark_runner, LandmarkRunner)
        assert len(faces) == 1 and faces[0].landmarks.shape == (spec.num_landmarks, 3), name
        if backend == "torch":
            reference[spec.name] = faces[0].landmarks
        else:
            with attnmesh.FaceMesh(static_image_mode=True, model=name, backend="torch") as fm:
                ref = fm.process(image)[0].landmarks
            assert np.abs(faces[0].landmarks - ref).max() < 0.05, name


def test_face_mesh_takes_a_runner_object_and_refuses_other_objects() -> None:
    """As segment-anything's predictor takes a built model: FaceMesh(model=runner) uses that runner as given."""
    image = astronaut()
    runner = make_landmark_runner("face_transformer_xs", backend="torch")
    with attnmesh.FaceMesh(static_image_mode=True, model=runner, backend="torch") as fm:
        assert fm.landmark_runner is runner
        given = fm.process(image)[0].landmarks
    with attnmesh.FaceMesh(static_image_mode=True, model="face_transformer_xs", backend="torch") as fm:
        named = fm.process(image)[0].landmarks
    np.testing.assert_array_equal(given, named)
    with pytest.raises(TypeError, match="LandmarkRunner"):
        attnmesh.FaceMesh(model=object())


def test_refine_landmarks_false_is_the_base_mesh_and_is_refused_for_refined_only_models() -> None:
    with attnmesh.FaceMesh(static_image_mode=True, refine_landmarks=False, backend="torch") as fm:
        assert fm.landmark_runner.num_landmarks == 468
    for name in ("cascade", "attention_mesh_300w", "face_transformer_xs"):
        with pytest.raises(ValueError, match="refine_landmarks=True"):
            attnmesh.FaceMesh(model=name, refine_landmarks=False)


def test_model_table_lists_every_model() -> None:
    table = model_table()
    for name in NAMES:
        assert f"| `{name}`" in table
    assert table.count("\n") == len(NAMES) + 1


def test_every_registered_name_works_as_cli_model(tmp_path) -> None:
    """``attnmesh images --model NAME`` and ``attnmesh eval --model NAME`` for every name and alias: the faces
    come out with the registered number of landmarks (eval: the faces are found and the drift table printed)."""
    import json
    from importlib import resources

    from attnmesh.cli import main

    photo = str(resources.files("attnmesh") / "assets" / "astronaut.png")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "astronaut.png").write_bytes(open(photo, "rb").read())
    for name in model_names():
        out = tmp_path / f"{name}.jsonl"
        assert main(["images", photo, "--out", str(out), "--model", name]) == 0, name
        faces = json.loads(out.read_text().splitlines()[0])["faces"]
        assert len(faces) == 1 and len(faces[0]["landmarks"]) == get_model_spec(name).num_landmarks, name
    report = tmp_path / "eval.json"
    args = ["eval", str(folder), "--no-progress", "--out", str(report)]
    for name in list_models():
        args += ["--model", name]
    assert main(args) == 0
    assert set(json.loads(report.read_text())["models"]) == set(list_models())


def test_the_batched_gpu_predictor_is_a_landmark_runner() -> None:
    """GpuLandmarkPredictor (run here on the CPU in float32) plugs into FaceMesh as its runner and gives the
    PyTorch runner's landmarks within 0.2 px (its crops are bilinear samples of its own, not OpenCV's)."""
    from attnmesh.runtime.gpu import GpuLandmarkPredictor

    image = astronaut()
    predictor = GpuLandmarkPredictor(device="cpu", dtype=torch.float32)
    assert isinstance(predictor, LandmarkRunner)
    with attnmesh.FaceMesh(static_image_mode=True, model=predictor, backend="torch") as fm:
        ours = fm.process(image)
    with attnmesh.FaceMesh(static_image_mode=True, backend="torch") as fm:
        reference = fm.process(image)
    assert len(ours) == len(reference) == 1
    assert np.abs(ours[0].landmarks - reference[0].landmarks).max() < 0.2
