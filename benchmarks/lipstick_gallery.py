"""Before/after lipstick gallery of the shipped public-domain astronaut photo (NASA), written to
docs/images/lipstick_astronaut.png (and the avatar strip to docs/images/avatar_shapes.png):

    .venv/bin/python benchmarks/lipstick_gallery.py

Top: the head before and after (``red``, opacity 0.6, gloss 0.4). Bottom: the mouth, 3x, before and with
``berry``, ``coral`` and ``#8E3B5B`` at gloss 0. Only the astronaut: no shared research data goes in the repo.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

import attnmesh
from attnmesh.apps import blendshapes as bs
from attnmesh.apps.lipstick import apply_lipstick
from attnmesh.apps.render_avatar import render_mesh

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "src/attnmesh/assets/astronaut.png"
OUT = ROOT / "docs/images"


def label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    image = attnmesh.load_image(PHOTO)
    with attnmesh.FaceMesh(static_image_mode=True) as fm:
        faces = fm.process(image)
    lm = faces[0].landmarks
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    centre, side = (lo + hi) / 2, int(1.5 * (hi - lo).max())
    x0, y0 = (centre - side / 2).astype(int)

    def head(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img[max(y0, 0):y0 + side, max(x0, 0):x0 + side], (320, 320), interpolation=cv2.INTER_AREA)

    top = np.concatenate([label(head(image), "before"),
                          label(head(apply_lipstick(image, faces, "red", 0.6, 0.4)), "red, gloss 0.4")], 1)
    lips = lm[[61, 291, 0, 17], :2]
    cx, cy = lips.mean(0)
    half_w = int(0.9 * np.linalg.norm(lm[61, :2] - lm[291, :2]))
    half_h = half_w // 2
    tiles = []
    for name in (None, "berry", "coral", "#8E3B5B"):
        out = image if name is None else apply_lipstick(image, faces, name, 0.6, 0.0)
        crop = out[int(cy) - half_h:int(cy) + half_h, int(cx) - half_w:int(cx) + half_w]
        crop = cv2.resize(crop, (top.shape[1] // 4, int(crop.shape[0] * top.shape[1] / 4 / crop.shape[1])),
                          interpolation=cv2.INTER_CUBIC)
        tiles.append(label(crop, "before" if name is None else name))
    bottom = np.concatenate(tiles, 1)
    gallery = np.concatenate([top, bottom[:, : top.shape[1]]], 0)
    cv2.imwrite(str(OUT / "lipstick_astronaut.png"), cv2.cvtColor(gallery, cv2.COLOR_RGB2BGR))

    names = bs.BLENDSHAPE_NAMES
    shapes = [("neutral", {}), ("jawOpen", {"jawOpen": 1}), ("smileLeft+Right", {"smileLeft": 1, "smileRight": 1}),
              ("pucker", {"pucker": 1}), ("blinkRight", {"eyeBlinkRight": 1}), ("lookUp", {"eyeLookUpRight": 1,
                                                                                     "eyeLookUpLeft": 1})]
    strip = []
    for title, coeffs in shapes:
        c = np.zeros(len(names))
        for k, v in coeffs.items():
            c[names.index(k)] = v
        strip.append(label(render_mesh(bs.deform(c), size=240), title))
    cv2.imwrite(str(OUT / "avatar_shapes.png"), cv2.cvtColor(np.concatenate(strip, 1), cv2.COLOR_RGB2BGR))
    print("wrote", OUT / "lipstick_astronaut.png", OUT / "avatar_shapes.png")


if __name__ == "__main__":
    main()
