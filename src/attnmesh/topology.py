"""Face mesh topology: landmark counts and the index maps of the refined regions.

Sides are the **subject's own** (anatomical) sides, as in ``mediapipe.solutions.face_mesh_connections``:
``RIGHT_EYE`` contains mesh points 33 (outer corner) .. 133 (inner corner), which lie on the image-left
side of an unmirrored photo. The released ``.tflite`` names the same output ``output_left_eye`` (image
side); the importer maps it to our ``right_eye``. Iris slots: 468..472 = right iris (468 its centre),
473..477 = left iris (473 its centre).
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

_DATA = json.loads(resources.files("attnmesh").joinpath("data/face_regions.json").read_text())

NUM_MESH_LANDMARKS: int = _DATA["num_mesh_landmarks"]  # 468
NUM_REFINED_LANDMARKS: int = _DATA["num_refined_landmarks"]  # 478

LIPS: tuple[int, ...] = tuple(_DATA["lips"])  # 80 mesh indices refined by the lips sub-model
RIGHT_EYE: tuple[int, ...] = tuple(_DATA["right_eye"])  # 71: eye contours and brow, subject's right
LEFT_EYE: tuple[int, ...] = tuple(_DATA["left_eye"])  # 71, subject's left
RIGHT_IRIS: tuple[int, ...] = tuple(_DATA["right_iris"])  # 468..472 (centre, then 4 contour points)
LEFT_IRIS: tuple[int, ...] = tuple(_DATA["left_iris"])  # 473..477
RIGHT_IRIS_Z_AVERAGE: tuple[int, ...] = tuple(_DATA["right_iris_z_average"])  # inner eye contour, 16
LEFT_IRIS_Z_AVERAGE: tuple[int, ...] = tuple(_DATA["left_iris_z_average"])

# Mesh landmark pairs (left-to-right across the image) that set each region crop's rotation.
CROP_ROTATION_PAIRS: dict[str, tuple[int, int]] = {k: (v[0], v[1]) for k, v in _DATA["crop_rotation_pairs"].items()}

# Outer eye corners: the inter-ocular distance used for error normalisation, and the tracking rotation.
# Lip contour loops (derived from the lips' connection edges by attnmesh.apps.blendshapes.contour_loops, which
# the tests check), from the subject's right mouth corner to the left one.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)

RIGHT_EYE_OUTER_CORNER = 33
LEFT_EYE_OUTER_CORNER = 263


def mirror_478() -> np.ndarray:
    """(478,) left/right permutation of the refined mesh: ``perm[i]`` is the vertex that is the mirror image of
    vertex ``i`` (nearest canonical-face vertex to (-x, y, z), iris slots swapped); an involution. Mirror a
    face with ``flip_x(points)[perm]``."""
    data = json.loads(resources.files("attnmesh").joinpath("data/landmark_maps.json").read_text())
    return np.asarray(data["mirror_478"], np.int64)
