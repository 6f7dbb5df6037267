"""Evaluate landmark models on a data set the way a user runs them: ``FaceMesh(static_image_mode=True)``.

For every image: the face detector (shared by all models, so every model sees the same ROIs), the face
ROIs (:func:`attnmesh.pipeline.tracking.roi_from_detection`), each model on those ROIs, faces kept when their
presence score reaches 0.5 — exactly ``FaceMesh.process`` in static mode. The face that matches the
annotation is the one whose 68 mapped points' box overlaps the annotation's box most (IoU >= 0.3); an image
with no such face is a **missed face**: it counts as a failure (error = infinity), never dropped.

With two or more models, the **mesh drift** of each model from the first is reported on every face both found
(every detection ROI, up to ``max_faces`` per image, where both presence scores reach 0.5):
the distance between their landmarks over the vertices NOT in the mesh->68 map ("the other mesh points"),
in percent of the first model's inter-ocular distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import maps, metrics

MATCH_IOU = 0.3


def _box(points: np.ndarray) -> tuple[float, float, float, float]:
    return (float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max()))


def landmark_runner(model: str, device: str = "cpu") -> Any:
    """The landmark runner (PyTorch) for ``model``: a registered model (:func:`attnmesh.list_models`; e.g.
    ``attention_mesh``, ``attention_mesh_300w``, ``face_transformer_xs``, ``cascade``), or a weights file: an
    Attention Mesh ``.safetensors`` or training checkpoint ``.pt`` (:func:`attnmesh.weights.checkpoints.load_attention_mesh_file`), or
    a face-transformer distillation checkpoint or ``.safetensors``. Each crops its own input size from the
    same ROIs."""
    from ..registry import model_names
    from ..runtime import make_landmark_runner
    from ..runtime.pytorch import TorchLandmarkRunner
    from ..weights.checkpoints import checkpoint_architecture, load_face_transformer_file

    if model in model_names():
        return make_landmark_runner(model, backend="torch", device=device)
    if model.endswith((".pt", ".safetensors")) and checkpoint_architecture(model) == "face_transformer":
        return TorchLandmarkRunner("face_transformer_xs", device=device, net=load_face_transformer_file(model))
    from ..weights.checkpoints import load_attention_mesh_file

    return TorchLandmarkRunner("attention_mesh", device=device, net=load_attention_mesh_file(model, device))


def readout_of(model: str) -> Any:
    """The shipped 68-point read-out of ``model`` (:mod:`attnmesh.weights.readout`): a registered model's, or the
    fixed map for a weights file."""
    from ..registry import get_model_spec, model_names
    from ..weights.readout import Readout68, load_readout

    return load_readout(get_model_spec(model).weights[0]) if model in model_names() else Readout68("fixed")


def evaluate(records: Sequence[Any], models: Sequence[str], mapping: str = "fixed", device: str = "cpu",
             max_faces: int = 4, progress: bool = True,
             batch_size: int = 32, chunk: int = 64, runners: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``models`` (names or weight paths) on the images of ``records`` (see
    :mod:`attnmesh.eval.datasets`); returns ``{"models": {name: summary}, "drift": {name: ...}, ...}``.
    Records without 68-point annotations only contribute to the drift. ``runners``: the models' runners
    already made by :func:`landmark_runner` (made here otherwise). ``mapping``: ``"fixed"``, ``"linear"`` (the
    imported model's linear map) or ``"shipped"`` (each model's own read-out, :func:`readout_of`). The report's
    ``_matched`` holds, per model, the landmarks of the face matched to each annotated record (NaN if missed)."""
    import torch

    from ..geometry.roi import box_iou
    from ..runtime.detector import FaceDetector
    from ..pipeline.tracking import roi_from_detection
    from .datasets import read_rgb

    detector = FaceDetector(min_detection_confidence=0.5, device=device)
    runners = runners if runners is not None else {m: landmark_runner(m, device) for m in models}
    index_map = maps.mesh_to_68()
    labelled = [r for r in records if r.points68 is not None]
    pred68 = {m: np.full((len(labelled), 68, 2), np.nan) for m in models}
    matched = {m: np.full((len(labelled), runners[m].num_landmarks, 3), np.nan, np.float32) for m in models}
    readouts = {m: readout_of(m) for m in models} if mapping == "shipped" else {}
    gt68 = np.stack([r.points68 for r in labelled]) if labelled else np.zeros((0, 68, 2))
    every: dict[str, list[np.ndarray | None]] = {m: [] for m in models}  # each detection ROI, in order
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(records), desc="eval", unit="img", dynamic_ncols=True)
    li = 0
    for c0 in range(0, len(records), chunk):
        part = records[c0:c0 + chunk]
        images = [read_rgb(r.image_path) for r in part]
        rois = [[roi_from_detection(d.box, d.keypoints) for d in dets[:max_faces]]
                for dets in detector.process_batch(images)]
        items = [(im, roi) for im, rs in zip(images, rois) for roi in rs]
        for m in models:
            lm = runners[m]
            points = np.zeros((0, lm.num_landmarks, 3), np.float32)
            scores = np.zeros((0,), np.float32)
            with torch.inference_mode():
                for b0 in range(0, len(items), batch_size):
                    p, s = lm.predict_many(items[b0:b0 + batch_size])
                    points, scores = np.concatenate([points, p]), np.concatenate([scores, s])
            k = 0
            lj = li
            for r, rs in zip(part, rois):
                faces = [points[k + j] for j in range(len(rs)) if scores[k + j] >= 0.5]
                every[m] += [points[k + j] if scores[k + j] >= 0.5 else None for j in range(len(rs))]
                k += len(rs)
                chosen = None
                if r.points68 is not None:
                    gbox = _box(r.points68)
                    ious = [box_iou(_box(maps.to_68(f, "fixed")), gbox) for f in faces]
                    if ious and max(ious) >= MATCH_IOU:
                        chosen = faces[int(np.argmax(ious))]
                    if chosen is not None:
                        pred68[m][lj] = readouts[m](chosen) if readouts else maps.to_68(chosen, mapping)
                        matched[m][lj] = chosen
                    lj += 1
        li += sum(r.points68 is not None for r in part)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    report: dict[str, Any] = {"mapping": mapping, "images": len(records), "annotated": len(labelled),
                              "models": {}, "drift": {}}
    errors = {}
    for m in models:
        if labelled:
            report["models"][m] = metrics.summarize(pred68[m], gt68)
            errors[m] = metrics.face_errors(pred68[m], gt68)["all"]
        else:
            report["models"][m] = {"images": len(records), "faces": sum(p is not None for p in every[m])}
    base = models[0]
    for m in models[1:]:
        pairs = [(a, b) for a, b in zip(every[base], every[m]) if a is not None and b is not None]
        report["drift"][m] = {"against": base, **metrics.mesh_drift([a for a, _ in pairs], [b for _, b in pairs],
                                                                     np.unique(index_map))}
    report["_errors_all"] = errors
    report["_matched"] = matched
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = []
    if report["annotated"]:
        lines.append(f"{'model':<28} {'all':>6} {'eyes':>6} {'lips':>6} {'fail@10':>8} {'AUC@10':>7} {'missed':>6}"
                     f"   (NME % of the normalising distance; {report['annotated']} faces, {report['mapping']} map)")
        for name, s in report["models"].items():
            lines.append(f"{Path(name).name:<28} {s['nme_all']:6.2f} {s['nme_eyes']:6.2f} {s['nme_lips']:6.2f} "
                         f"{s['failure_rate']:8.2f} {s['auc']:7.2f} {s['missed']:6d}")
    for name, d in report["drift"].items():
        lines.append(f"drift of {Path(name).name} from {Path(d['against']).name} (other mesh points, % IOD, "
                     f"{d['faces']} faces): mean {d['mean']:.2f}, p95 {d['p95']:.2f}, mean max {d['mean_max']:.2f}")
    return "\n".join(lines)
