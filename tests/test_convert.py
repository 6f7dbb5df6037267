"""The weight importer: it reproduces the shipped weights from the released .tflite files, the manifest
verifies them, and the converted networks compute what the TFLite interpreter computes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attnmesh.convert.__main__ import CONVERTERS, _default_models_dir, convert_all
from attnmesh.models.face_landmark import FaceLandmarkModel
from attnmesh.weights import WeightsError, load_model_weights, load_state_dict, read_manifest, weights_dir


def test_manifest_covers_all_shipped_models() -> None:
    manifest = read_manifest()
    # imported weights come from the converter; fine-tuned ones (attnmesh train) carry their own provenance
    imported = {k for k, v in manifest["models"].items() if "fine_tuned" not in v}
    assert imported == set(CONVERTERS)
    for name, entry in manifest["models"].items():
        if name in imported:
            assert entry["source"]["package"].endswith("0.10.21"), entry["source"]
        else:
            assert entry["fine_tuned"]["from"] in imported and entry["fine_tuned"]["recipe"], entry
        load_state_dict(name)  # verifies the sha256


def test_conversion_is_reproducible(tmp_path: Path) -> None:
    models_dir, source = _default_models_dir()
    manifest = convert_all(models_dir, source, tmp_path)
    shipped = read_manifest()
    for name, entry in manifest["models"].items():
        assert entry["sha256"] == shipped["models"][name]["sha256"], name
        assert entry["source"]["sha256"] == shipped["models"][name]["source"]["sha256"], name


def test_corrupt_weights_are_refused(tmp_path: Path) -> None:
    for f in weights_dir().iterdir():
        if f.suffix in (".json", ".safetensors"):
            shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "face_landmark.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        load_state_dict("face_landmark", tmp_path)
    with pytest.raises(WeightsError, match="no shipped weights"):
        load_state_dict("nope", tmp_path)


def test_face_landmark_network_matches_tflite_interpreter() -> None:
    from ai_edge_litert import interpreter as interpreter_mod
    models_dir, _ = _default_models_dir()
    it = interpreter_mod.Interpreter(str(models_dir / CONVERTERS["face_landmark"][0]))
    it.allocate_tensors()
    from reference import photo_paths, read_rgb
    import cv2

    x = cv2.resize(read_rgb(photo_paths()[1]), (192, 192)).astype(np.float32)[None] / 255
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    outs = {d["name"]: it.get_tensor(d["index"]) for d in it.get_output_details()}
    model = load_model_weights(FaceLandmarkModel(), "face_landmark").eval()
    with torch.no_grad():
        o = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(o.mesh.numpy().reshape(-1), outs["conv2d_21"].reshape(-1), atol=2e-3)
    np.testing.assert_allclose(o.face_logit.numpy(), outs["conv2d_31"].reshape(-1), atol=1e-3)
