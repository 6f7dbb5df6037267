"""Importer for MediaPipe's iris landmark model, ``iris_landmark.tflite`` (float32 weights, no DEQUANTIZE)."""

from __future__ import annotations

from ..models.iris import INPUT_SIZE, NUM_EYE_POINTS, NUM_IRIS_POINTS, IrisLandmarkModel
from .tflite_graph import TFLiteGraph
from .walk import GraphWalker

_EYE_OUTPUT = "output_eyes_contours_and_brows"  # [1, 213] = 71 x (x, y, z)
_IRIS_OUTPUT = "output_iris"  # [1, 15] = 5 x (x, y, z)


def convert_iris_landmark(path: str) -> tuple[IrisLandmarkModel, dict[str, str]]:
    """Build an :class:`IrisLandmarkModel` with the weights of ``iris_landmark.tflite``."""
    g = TFLiteGraph(path)
    expected = {_EYE_OUTPUT: (1, 3 * NUM_EYE_POINTS), _IRIS_OUTPUT: (1, 3 * NUM_IRIS_POINTS)}
    if {name: g.shapes[name] for name in g.outputs} != expected:
        raise ValueError(f"{g.path.name}: unexpected outputs {g.outputs}")
    if g.shapes[g.inputs[0]] != (1, INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"{g.path.name}: unexpected input shape {g.shapes[g.inputs[0]]}")
    model = IrisLandmarkModel()
    w = GraphWalker(g, model)
    features8 = w.walk(model.backbone, g.inputs[0], towards=_EYE_OUTPUT)
    w.walk(model.eye, features8, towards=_EYE_OUTPUT)
    w.walk(model.iris, features8, towards=_IRIS_OUTPUT)
    w.check_complete(model)
    return model, w.sources
