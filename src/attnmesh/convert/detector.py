"""Importer for the short-range face detector: ``face_detection_short_range.tflite``."""

from __future__ import annotations

from ..models.detector import BlazeFace, ssd_anchors
from .tflite_graph import TFLiteGraph
from .walk import GraphWalker

_LOGITS, _OFFSETS = "classificators", "regressors"  # the file's two outputs, (1, 896, 1) and (1, 896, 16)


def convert_face_detection(path: str) -> tuple[BlazeFace, dict[str, str]]:
    """Build a :class:`BlazeFace` with the weights of ``face_detection_short_range.tflite``."""
    g = TFLiteGraph(path)
    if g.shapes[g.inputs[0]] != (1, BlazeFace.input_size, BlazeFace.input_size, 3):
        raise ValueError(f"{path}: unexpected input shape {g.shapes[g.inputs[0]]}")
    if g.shapes[_OFFSETS] != (1, len(ssd_anchors()), 16):
        raise ValueError(f"{path}: the regressor output does not match our {len(ssd_anchors())} anchors")
    model = BlazeFace()
    w = GraphWalker(g, model)
    tensor = g.inputs[0]
    for stage in (model.stem, model.stage64, model.stage32, model.stage16):
        tensor = w.walk(stage, tensor, towards=_LOGITS)
    features16 = tensor
    features8 = w.walk(model.stage8, features16, towards=_LOGITS)
    for features, logits, offsets in ((features16, model.logits16, model.offsets16),
                                      (features8, model.logits8, model.offsets8)):
        w.walk(logits, features, towards=_LOGITS)
        w.walk(offsets, features, towards=_OFFSETS)
    w.check_complete(model)
    return model, w.sources
