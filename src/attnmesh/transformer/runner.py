"""Shipped face-transformer weights and drop-in landmark runners for ``FaceMesh``.

* :func:`load_face_transformer`: the model with its shipped, sha256-checked weights
  (``attnmesh/weights/face_transformer_<size>.safetensors``, entry ``face_transformer_<size>`` of the manifest).
* :class:`TransformerLandmarkModel`: the :class:`attnmesh.pipeline.face_mesh.LandmarkModel` interface
  (``input_size`` = 128, ``num_landmarks`` = 478, ``crop``/``crop_many``/``run``/``predict``/``predict_many``)
  on PyTorch; ``fm.landmark_model = TransformerLandmarkModel()`` makes a ``FaceMesh`` use it.
* :class:`OrtTransformerLandmarkModel`: the same on ONNX Runtime (``precision="fp32"`` or ``"int8"``; the graphs
  are built by :mod:`attnmesh.transformer.export`).

The presence score is the transformer's own face head (distilled from the teacher's presence on faces and
random non-face crops of the training videos).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..models.face_transformer import FaceTransformer
from ..pipeline.face_mesh import LandmarkRunner
from ..pipeline.tensors import crops_to_tensor
from ..topology import NUM_REFINED_LANDMARKS
from ..weights import load_state_dict

DEFAULT_SIZE = "xs"


def mirror_mean(landmarks: np.ndarray, presence: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Test-time mirror averaging: ``landmarks`` (2N, 478, 3) and ``presence`` (2N,) of N crops followed by the
    same N crops mirrored left-right; returns the mean of each face's two answers, the mirrored one mapped back
    (``x -> size - x``, pixel ``i`` spanning ``[i, i + 1)``, and the mesh's left/right permutation)."""
    from ..eval.maps import mirror_478

    n = len(landmarks) // 2
    back = landmarks[n:][:, mirror_478()].copy()
    back[..., 0] = size - back[..., 0]
    return (landmarks[:n] + back) / 2, (presence[:n] + presence[n:]) / 2


def weights_name(size: str = DEFAULT_SIZE) -> str:
    return f"face_transformer_{size}"


def load_face_transformer(size: str = DEFAULT_SIZE, directory: Path | None = None) -> FaceTransformer:
    """:class:`FaceTransformer` ``size`` with its shipped weights (sha256 verified), in eval mode."""
    name = weights_name(size)
    state = load_state_dict(name, directory)
    info = _manifest_entry(name, directory)
    model = FaceTransformer(size, int(info.get("input_size", 128)), refine_dim=int(info.get("refine_dim", 0)),
                            refine_steps=int(info.get("refine_steps", 1)))
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_checkpoint(path: str | Path) -> dict:
    """A distillation checkpoint (``.pt``: model, size, input_size, step) or shipped weights (``.safetensors``
    written by :mod:`attnmesh.transformer.ship`, float16, read as float32), in the checkpoint's form, with the
    point-refiner settings (``refine_dim``, ``refine_steps``) read off the tensors."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}
        ck = {"model": state, "size": meta.get("model", "").removeprefix("face_transformer_"),
              "input_size": int(meta.get("input_size", 0))}
    else:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    steps = len({k.split(".")[1] for k in ck["model"] if k.startswith("refiners.")})
    ck["refine_steps"] = steps or 1
    ck["refine_dim"] = int(ck["model"]["refiners.0.project.weight"].shape[0]) if steps else 0
    return ck


def model_from_checkpoint(ck: dict) -> FaceTransformer:
    """:class:`FaceTransformer` of a :func:`read_checkpoint` result with its weights, in eval mode."""
    model = FaceTransformer(ck["size"], ck["input_size"], ck["refine_dim"], ck["refine_steps"])
    model.load_state_dict(ck["model"], strict=True)
    return model.eval()


def load_face_transformer_file(path: str | Path) -> FaceTransformer:
    """:class:`FaceTransformer` from a distillation checkpoint or a weights file (:func:`read_checkpoint`), in
    eval mode."""
    return model_from_checkpoint(read_checkpoint(path))


def _manifest_entry(name: str, directory: Path | None = None) -> dict:
    from ..weights import read_manifest

    return read_manifest(directory)["models"][name]


class TransformerLandmarkModel(LandmarkRunner):
    """``LandmarkModel`` interface on the face transformer (PyTorch)."""

    def __init__(self, size: str = DEFAULT_SIZE, device: str | torch.device = "cpu",
                 model: FaceTransformer | None = None, mirror_average: bool = False) -> None:
        """``mirror_average``: also run each crop mirrored and average the two answers (:func:`mirror_mean`):
        twice the compute, 4-7% less error against the teacher on held-out faces (README)."""
        self.refine = True
        self.mirror_average = mirror_average
        self.num_landmarks = NUM_REFINED_LANDMARKS
        self.device = torch.device(device)
        self.net = (model if model is not None else load_face_transformer(size)).eval().to(self.device)
        self.input_size = self.net.input_size

    @torch.inference_mode()
    def run(self, crops: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if len(crops) == 0:
            return np.zeros((0, self.num_landmarks, 3), np.float32), np.zeros((0,), np.float32)
        x = crops_to_tensor(crops, self.device)
        if self.mirror_average:
            x = torch.cat([x, x.flip(-1)])
        out = self.net(x)
        landmarks = out.landmarks.float().cpu().numpy()
        presence = torch.sigmoid(out.face_logit).float().cpu().numpy()
        return mirror_mean(landmarks, presence, self.input_size) if self.mirror_average else (landmarks, presence)

    @torch.inference_mode()
    def analyze(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """All heads for uint8 NHWC crops: landmarks, embedding, expression, spoof probability (untrained head),
        face presence."""
        out = self.net(crops_to_tensor(crops, self.device))
        return {"landmarks": out.landmarks.cpu().numpy(), "embedding": out.embedding.cpu().numpy(),
                "expression": out.expression.cpu().numpy(),
                "spoof_untrained": torch.sigmoid(out.spoof_logit).cpu().numpy(),
                "presence": torch.sigmoid(out.face_logit).cpu().numpy()}


class OrtTransformerLandmarkModel(LandmarkRunner):
    """``LandmarkModel`` interface on ONNX Runtime: ``precision`` ``"fp32"`` or ``"int8"`` (dynamic quantization
    of the MatMul/Gemm weights; see :mod:`attnmesh.transformer.export`)."""

    def __init__(self, size: str = DEFAULT_SIZE, precision: str = "fp32", model_dir: Path | str | None = None,
                 threads: int | None = None, device: str | torch.device = "cpu", mirror_average: bool = False) -> None:
        import onnxruntime as ort

        from ..backends.onnxruntime import session_options
        from .export import ensure_transformer_onnx

        self.refine = True
        self.mirror_average = mirror_average  # as TransformerLandmarkModel's
        self.num_landmarks = NUM_REFINED_LANDMARKS
        self.device = torch.device("cpu")
        self.path = ensure_transformer_onnx(size, precision, model_dir)
        self.session = ort.InferenceSession(str(self.path), sess_options=session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_size = int(self.session.get_inputs()[0].shape[-1])

    def run(self, crops: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from ..backends import sigmoid
        from ..backends.onnxruntime import _nchw01

        if len(crops) == 0:
            return np.zeros((0, self.num_landmarks, 3), np.float32), np.zeros((0,), np.float32)
        x = _nchw01(crops)
        if self.mirror_average:
            x = np.concatenate([x, x[..., ::-1]])
        landmarks, face_logit = self.session.run(["landmarks", "face_logit"], {"image": np.ascontiguousarray(x)})
        if self.mirror_average:
            return mirror_mean(landmarks, sigmoid(face_logit), self.input_size)
        return landmarks, sigmoid(face_logit)


def make_transformer_model(device: str | torch.device = "cpu", backend: str = "auto", size: str = DEFAULT_SIZE,
                           precision: str = "fp32", **options) -> LandmarkRunner:
    """The landmark runner for ``FaceMesh(model="transformer")``: OpenVINO (fp32) or ONNX Runtime (fp32, or
    dynamic ``int8``, which runs on ONNX Runtime only) when ``backend`` resolves to them (see
    :func:`attnmesh.backends.resolve_backend`), else PyTorch."""
    from ..backends import resolve_backend

    backend = resolve_backend(backend, device)
    if backend == "openvino" and precision == "fp32":
        from ..backends.openvino import OvTransformerLandmarkModel

        return OvTransformerLandmarkModel(size, device=device, **options)
    if backend == "onnxruntime" or precision != "fp32" and backend == "openvino":
        return OrtTransformerLandmarkModel(size, precision=precision, device=device, **options)
    if precision != "fp32":
        raise ValueError("INT8 runs on ONNX Runtime only (backend='onnxruntime')")
    return TransformerLandmarkModel(size, device=device)
