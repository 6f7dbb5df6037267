"""Importers for the two face mesh models: ``face_landmark_with_attention.tflite`` and ``face_landmark.tflite``."""

from __future__ import annotations

import numpy as np

from .. import topology
from ..models.attention_mesh import AttentionMesh
from ..models.face_landmark import FaceLandmarkModel
from ..models.spatial import CROP_SCALE, CROP_SIZE, FEATURE_STRIDE
from .tflite_graph import TFLiteGraph
from .walk import GraphWalker

# Our region name -> the .tflite output names (the file names eyes by image side, we by the subject's side).
_ATTENTION_OUTPUTS = {"lips": ("output_lips",), "right_eye": ("output_left_eye", "output_left_iris"),
                      "left_eye": ("output_right_eye", "output_right_iris")}


def _check_crop_ops(g: TFLiteGraph) -> None:
    """The region crop constants in the file must be the ones :mod:`attnmesh.models.spatial` and
    :mod:`attnmesh.topology` hard-code."""
    regions = {"lips": topology.LIPS, "right_eye": topology.RIGHT_EYE, "left_eye": topology.LEFT_EYE}
    found = {}
    for op in g.ops:
        if op.kind != "Landmarks2TransformMatrix":
            continue
        o = op.options
        pair = (o["left_rotation_idx"], o["right_rotation_idx"])
        name = next(k for k, v in topology.CROP_ROTATION_PAIRS.items() if v == pair)
        if set(o["subset_idxs"]) != set(regions[name]):
            raise ValueError(f"{name}: crop subset differs from topology")
        if (o["output_width"], o["output_height"], o["scale_x"], o["scale_y"]) != (CROP_SIZE, CROP_SIZE,
                                                                                     CROP_SCALE, CROP_SCALE):
            raise ValueError(f"{name}: crop size/scale differ from models.spatial")
        scale = g.const(g.consumer(g.producer(op.inputs[0]).inputs[0], "MUL").inputs[1])
        if not np.allclose(scale, 1.0 / FEATURE_STRIDE):
            raise ValueError("mesh-to-feature-map scale is not 1/FEATURE_STRIDE")
        found[name] = pair
    if set(found) != set(regions):
        raise ValueError(f"crop ops found for {sorted(found)} only")


def convert_attention_mesh(path: str) -> tuple[AttentionMesh, dict[str, str]]:
    """Build an :class:`AttentionMesh` with the weights of ``face_landmark_with_attention.tflite``."""
    g = TFLiteGraph(path)
    _check_crop_ops(g)
    model = AttentionMesh()
    w = GraphWalker(g, model)
    features6 = w.walk(model.backbone, g.inputs[0], towards="output_mesh")
    head = w.walk(model.head, features6, towards="output_mesh")
    w.walk(model.mesh_out, head, towards="output_mesh")
    w.walk(model.face_flag_out, head, towards="conv_faceflag")
    crops = [op.outputs[0] for op in g.ops if op.kind == "TransformTensorBilinear"]
    for name, outputs in _ATTENTION_OUTPUTS.items():
        region = getattr(model, name)
        start = next(t for t in crops if g.reaches(t, outputs[0]))
        trunk = w.walk(region.trunk, start, towards=outputs[0])
        w.walk(region.contour, trunk, towards=outputs[0])
        if len(outputs) > 1:
            w.walk(region.iris, trunk, towards=outputs[1])
    w.check_complete(model)
    return model, w.sources


def convert_face_landmark(path: str) -> tuple[FaceLandmarkModel, dict[str, str]]:
    """Build a :class:`FaceLandmarkModel` with the weights of ``face_landmark.tflite``."""
    g = TFLiteGraph(path)
    mesh_name, flag_name = g.outputs  # conv2d_21 (1404), conv2d_31 (1)
    model = FaceLandmarkModel()
    w = GraphWalker(g, model)
    features6 = w.walk(model.backbone, g.inputs[0], towards=mesh_name)
    w.walk(model.mesh_out, w.walk(model.head, features6, towards=mesh_name), towards=mesh_name)
    w.walk(model.face_flag_out, w.walk(model.face_flag_head, features6, towards=flag_name), towards=flag_name)
    w.check_complete(model)
    return model, w.sources
