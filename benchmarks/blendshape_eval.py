"""Blendshape coefficients: recovery on synthetic faces and agreement with simple geometric measures on real
talking-head videos. Prints two tables.

1. Synthetic faces (:func:`attnmesh.apps.blendshapes.synthetic_face`): random identity (Laplacian morph of
   random anchor offsets), random known coefficients, a random head pose for the expression frame and another
   for the neutral frame, projected through MediaPipe's camera like real landmarks, with 0 or 0.3 px of
   landmark noise. Neutral = Laplacian morph fitted to the neutral frame. Mean absolute error of the bounded
   least-squares solver and of the distilled network, and the time per face of each (pose removal excluded).
2. ../shared/data/videos/talking-*.mp4 (first --frames frames of each): FaceMesh in video mode, no smoothing;
   the neutral face estimated from the whole clip (:func:`attnmesh.apps.blendshapes.estimate_neutral`).
   Pearson correlation of eyeBlink with the eye aspect ratio (EAR, from mesh points 33/160/158/133/153/144 and
   263/387/385/362/380/373; negative expected) and of jawOpen with the mouth opening (distance 13-14 over the
   mouth width 61-291; positive expected), per clip and pooled, for the solver and the distilled network; also
   of the solver's eyeBlink - eyeWide (a signed lid closure, which also
   follows eyes opened wider than the neutral) with the EAR.

    .venv/bin/python benchmarks/blendshape_eval.py [--synthetic 300] [--frames 400]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import VIDEOS, video_frames  # noqa: E402

import attnmesh  # noqa: E402
from attnmesh.apps import blendshapes as bs  # noqa: E402
from attnmesh.apps.blendshape_net import BlendshapeNetPredictor  # noqa: E402

SIZE = (640, 480)


def ear(lm: np.ndarray, p1: int, p2: int, p3: int, p4: int, p5: int, p6: int) -> float:
    d = lambda a, b: np.linalg.norm(lm[a, :2] - lm[b, :2])  # noqa: E731
    return float((d(p2, p6) + d(p3, p5)) / (2 * d(p1, p4)))


def synthetic(n: int) -> None:
    print(f"synthetic faces: {n} per row; MAE over the 24 coefficients (ranges [0, 1])")
    print(f"{'noise px':>8s} {'solver MAE':>10s} {'net MAE':>8s} {'solver ms':>9s} {'net ms':>7s} "
          f"{'worst shape (solver)':>28s}")
    for noise in (0.0, 0.3):
        rng = np.random.default_rng(1234 + int(noise * 10))
        es, en, ts, tn = [], [], 0.0, 0.0
        for _ in range(n):
            face = bs.synthetic_face(rng, SIZE, noise)
            neutral = bs.neutral_from_landmarks(bs.metric_landmarks(face["neutral_landmarks"], SIZE))
            metric = bs.metric_landmarks(face["landmarks"], SIZE)
            solver, net = bs.BlendshapeSolver(neutral), BlendshapeNetPredictor(neutral)
            t = time.perf_counter()
            cs = solver.solve(metric)
            t1 = time.perf_counter()
            cn = net.solve(metric)
            t2 = time.perf_counter()
            ts, tn = ts + t1 - t, tn + t2 - t1
            es.append(np.abs(cs - face["coefficients"]))
            en.append(np.abs(cn - face["coefficients"]))
        es, en = np.array(es), np.array(en)
        worst = int(es.mean(0).argmax())
        print(f"{noise:8.1f} {es.mean():10.4f} {en.mean():8.4f} {1e3 * ts / n:9.2f} {1e3 * tn / n:7.3f} "
              f"{bs.BLENDSHAPE_NAMES[worst] + f' {es.mean(0)[worst]:.3f}':>28s}")


def videos(frames: int) -> None:
    names = bs.BLENDSHAPE_NAMES
    pooled: dict[str, list[np.ndarray]] = {k: [] for k in ("blinkR", "earR", "blinkL", "earL", "jaw", "mouth",
                                                           "lidR", "lidL", "netR", "netL", "netJaw")}
    print(f"\n{'clip':16s} {'frames':>6s} {'r(blinkR,EAR_R)':>15s} {'r(blinkL,EAR_L)':>15s} "
          f"{'r(jawOpen,open)':>15s} {'r(blink-wide,EAR) R':>19s} {'L':>6s} {'network: blinkR':>15s} "
          f"{'blinkL':>6s} {'jaw':>6s}")
    for path in sorted(VIDEOS.glob("talking-*.mp4")):
        metrics, ears_r, ears_l, mouth = [], [], [], []
        with attnmesh.FaceMesh(static_image_mode=False) as fm:
            for frame in video_frames(path, frames):
                faces = fm.process(frame)
                if not faces:
                    continue
                lm = faces[0].landmarks
                size = (frame.shape[1], frame.shape[0])
                metrics.append(bs.metric_landmarks(lm, size))
                ears_r.append(ear(lm, 33, 160, 158, 133, 153, 144))
                ears_l.append(ear(lm, 263, 387, 385, 362, 380, 373))
                mouth.append(np.linalg.norm(lm[13, :2] - lm[14, :2]) / np.linalg.norm(lm[61, :2] - lm[291, :2]))
        metrics = np.stack(metrics)
        neutral = bs.estimate_neutral(metrics)
        solver, net = bs.BlendshapeSolver(neutral), BlendshapeNetPredictor(neutral)
        c = np.stack([solver.solve(m) for m in metrics])
        cn = np.stack([net.solve(m) for m in metrics])
        cols = {"blinkR": c[:, names.index("eyeBlinkRight")], "blinkL": c[:, names.index("eyeBlinkLeft")],
                "lidR": c[:, names.index("eyeBlinkRight")] - c[:, names.index("eyeWideRight")],
                "lidL": c[:, names.index("eyeBlinkLeft")] - c[:, names.index("eyeWideLeft")],
                "jaw": c[:, names.index("jawOpen")], "earR": np.array(ears_r), "earL": np.array(ears_l),
                "mouth": np.array(mouth), "netR": cn[:, names.index("eyeBlinkRight")],
                "netL": cn[:, names.index("eyeBlinkLeft")], "netJaw": cn[:, names.index("jawOpen")]}
        for k, v in cols.items():
            pooled[k].append(v)
        r = lambda a, b: np.corrcoef(cols[a], cols[b])[0, 1]  # noqa: E731
        print(f"{path.name:16s} {len(metrics):6d} {r('blinkR', 'earR'):15.3f} {r('blinkL', 'earL'):15.3f} "
              f"{r('jaw', 'mouth'):15.3f} {r('lidR', 'earR'):19.3f} {r('lidL', 'earL'):6.3f} "
              f"{r('netR', 'earR'):15.3f} {r('netL', 'earL'):6.3f} {r('netJaw', 'mouth'):6.3f}")
    allc = {k: np.concatenate(v) for k, v in pooled.items()}
    r = lambda a, b: np.corrcoef(allc[a], allc[b])[0, 1]  # noqa: E731
    print(f"{'pooled':16s} {len(allc['jaw']):6d} {r('blinkR', 'earR'):15.3f} {r('blinkL', 'earL'):15.3f} "
          f"{r('jaw', 'mouth'):15.3f} {r('lidR', 'earR'):19.3f} {r('lidL', 'earL'):6.3f} "
          f"{r('netR', 'earR'):15.3f} {r('netL', 'earL'):6.3f} {r('netJaw', 'mouth'):6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", type=int, default=300)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--skip-videos", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    synthetic(args.synthetic)
    if not args.skip_videos:
        videos(args.frames)


if __name__ == "__main__":
    main()
