"""Command-line options and config files, as a careless or hostile user writes them: NaN, zero, a device this
machine does not have, a backend that is not installed, the wrong weights, a string where a number belongs.
Each gives one line naming the problem, with the documented exit code (2 for a bad argument, 1 otherwise),
and never a traceback. Each test is named after what the user did."""

from __future__ import annotations

import pytest
import torch

from ._support import CLIP, SMALL_PHOTO, main, part_files, run


@pytest.mark.parametrize("beta", ["nan", "inf", "-1"])
def test_smooth_beta_nan_is_refused_while_parsing(tmp_path, beta):
    out = tmp_path / "f.jsonl"
    code, err, _ = main("video", CLIP, "--out", out, "--smooth-beta", beta)
    assert code == 2 and len(err) == 1 and "--smooth-beta" in err[0] and beta in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_makeup_with_max_faces_0_is_a_usage_error(tmp_path):
    code, err, _ = main("makeup", SMALL_PHOTO, "--lipstick", "red", "--max-faces", "0", "--out", tmp_path / "o.png")
    assert code == 2 and len(err) == 1 and "--max-faces" in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["images", "makeup", "video"])
def test_device_cuda_on_a_machine_without_cuda_is_one_line_exit_2(tmp_path, command):
    old = tmp_path / "o.jsonl"
    args = {"images": ["images", SMALL_PHOTO, "--out", old],
            "makeup": ["makeup", SMALL_PHOTO, "--lipstick", "red", "--out", tmp_path / "o.png"],
            "video": ["video", CLIP, "--out", old, "--max-frames", "1"]}[command]
    code, err, _ = main(*args, "--device", "cuda")
    assert code == 2 and len(err) == 1 and err[0].startswith("attnmesh: error: --device cuda: ") and "CUDA" in err[0]
    assert list(tmp_path.iterdir()) == [] and part_files(tmp_path) == []


def test_backend_onnxruntime_without_onnxruntime_installed_is_one_line_exit_2(tmp_path):
    """ONNX Runtime hidden from the process as a missing install hides it (its import fails)."""
    code, err, _ = run("images", SMALL_PHOTO, "--out", tmp_path / "o.jsonl", "--backend", "onnxruntime",
                       prelude="import sys; sys.modules['onnxruntime'] = None")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("attnmesh: error: --backend onnxruntime: ") and "pip install" in err[0], err


def test_eval_with_the_detector_weights_as_model_is_one_line(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(SMALL_PHOTO.read_bytes())
    code, err, _ = main("eval", tmp_path / "photos", "--model", "face_detection_short_range", "--no-progress")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("attnmesh: error: --model face_detection_short_range: not Attention Mesh weights")
    assert len(err[0]) < 300, err  # one readable line, not torch's list of every tensor


@pytest.mark.parametrize("line,key,words", [
    ('batch_size = "16"', "batch_size", "whole number"),
    ("amp = \"yes\"", "amp", "true or false"),
    ("freeze = \"backbone.stem\"", "freeze", "list of strings"),
    ("[[phases]]\nsteps = 2.5", "steps", "whole number"),
    ("[augment]\nflip = \"half\"", "flip", "a number"),
])
def test_train_config_with_a_value_of_the_wrong_type_names_the_key(tmp_path, line, key, words):
    config = tmp_path / "run.toml"
    config.write_text(f'data = ["photos"]\nout = "run"\n{line}\n')
    code, err, _ = main("train", config)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"attnmesh: error: {config}: ") and f"{key} must be" in err[0] and words in err[0], err
    assert not (tmp_path / "run").exists()


def test_detection_confidence_0_gives_no_warning(tmp_path):
    """The CLI at --min-detection-confidence 0 printed numpy's RuntimeWarning (0/0 in weighted NMS)."""
    code, err, stdout = run("images", SMALL_PHOTO, "--out", "-", "--min-detection-confidence", "0",
                            "--max-faces", "3")
    assert code == 0 and len(err) == 1 and err[0].startswith("attnmesh: 1 image, "), err  # no warning lines
    assert err[0].endswith(", 0 failed -> stdout"), err
    assert '"faces":[{' in stdout  # the face is still found
