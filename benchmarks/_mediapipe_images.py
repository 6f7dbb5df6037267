"""A MediaPipe user's photo loop, for benchmarks/cpu_speed.py: OpenCV decode + static FaceMesh (refine on, up to
5 faces) over every .jpg/.jpeg/.png under a folder; prints the image and face counts to stderr."""

import sys
from pathlib import Path

import cv2
import mediapipe as mp

paths = sorted(p for p in Path(sys.argv[1]).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
faces = 0
with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=5) as fm:
    for p in paths:
        result = fm.process(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))
        faces += len(result.multi_face_landmarks or [])
print(f"{len(paths)} images, {faces} faces", file=sys.stderr)
