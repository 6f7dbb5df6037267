"""Write src/attnmesh/data/face_connections.json from the reference runtime's mesh connection lists.

    python scripts/export_connections.py

Edge lists of ``mediapipe.python.solutions.face_mesh_connections`` (mediapipe 0.10.21): the tesselation,
the contours (lips, eyes, brows, face oval) and the irises. Sides are the subject's, as in MediaPipe.
"""

import json
from pathlib import Path

from mediapipe.python.solutions import face_mesh_connections as c

NAMES = ["TESSELATION", "LIPS", "LEFT_EYE", "RIGHT_EYE", "LEFT_EYEBROW", "RIGHT_EYEBROW", "FACE_OVAL",
         "LEFT_IRIS", "RIGHT_IRIS", "NOSE"]

out = {"_doc": __doc__.strip().splitlines()[0]}
for name in NAMES:
    edges = getattr(c, f"FACEMESH_{name}", None)
    if edges is not None:
        out[name.lower()] = sorted([int(a), int(b)] for a, b in edges)
path = Path(__file__).resolve().parents[1] / "src/attnmesh/data/face_connections.json"
path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
print(f"wrote {path}: " + ", ".join(f"{k} {len(v)}" for k, v in out.items() if k != "_doc"))
