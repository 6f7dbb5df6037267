"""Jitter and lag of the one-euro landmark smoothing on video, printed as a table.

    python benchmarks/smoothing_jitter.py                        # FaceMesh on ../shared/data/videos/talking-*.mp4
    python benchmarks/smoothing_jitter.py --save /tmp/lm.npz     # ... and keep the landmarks
    python benchmarks/smoothing_jitter.py --landmarks /tmp/lm.npz  # precomputed landmarks only

Landmarks come from ``attnmesh.FaceMesh(static_image_mode=False)`` (the first face of each frame), or from an
``.npz`` with, per clip ``NAME``, ``NAME/landmarks`` (T, K, 3) image pixels with NaN on frames without a face
and ``NAME/timestamps`` (T,) seconds.

Measures (over x and y of the 33 landmarks of the face-geometry Procrustes basis, which sit on rigid parts of
the face (no lips, eyelids or irises), so that talking is not counted as jitter; frames with a face only, each run
of consecutive frames apart):

* **jitter**: RMS of the frame-to-frame second difference (px); ``still`` restricts it to the quietest quarter
  of frames (lowest centroid speed), where it is mostly noise. The reduction is raw / smoothed.
* **lag**: the shift (frames) that maximises the cross-correlation of the smoothed with the raw trajectories
  (each landmark coordinate with its run mean removed), refined by a parabola through the peak. The noise in
  the raw landmarks is uncorrelated with the motion, so the peak measures the delay of the motion.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from attnmesh.pipeline.smoothing import BETA, DERIVATE_CUTOFF, MIN_CUTOFF, LandmarkSmoother  # noqa: E402
from attnmesh.geometry.face_geometry import load_canonical_face  # noqa: E402

VIDEO_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
MAX_LAG = 6  # frames searched either side
# (label, min_cutoff, beta, derivate_cutoff): the defaults (the Tasks FaceLandmarker's) and stronger smoothing.
SETTINGS = [
    ("default (MediaPipe tasks)", MIN_CUTOFF, BETA, DERIVATE_CUTOFF),
    ("beta 40", MIN_CUTOFF, 40.0, DERIVATE_CUTOFF),
    ("beta 20", MIN_CUTOFF, 20.0, DERIVATE_CUTOFF),
    ("beta 10", MIN_CUTOFF, 10.0, DERIVATE_CUTOFF),
]


def run_face_mesh(path: Path, max_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 3) landmarks (NaN without a face) and (T,) timestamps of a video, FaceMesh in video mode."""
    import cv2

    import attnmesh

    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames, stamps = [], []
    with attnmesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as mesh:
        while max_frames is None or len(frames) < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            faces = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            frames.append(faces[0].landmarks if faces else np.full((478, 3), np.nan, np.float32))
            stamps.append(len(stamps) / fps)
    capture.release()
    return np.stack(frames).astype(np.float32), np.array(stamps)


def smooth(landmarks: np.ndarray, timestamps: np.ndarray, setting: tuple[str, float, float, float]) -> np.ndarray:
    smoother = LandmarkSmoother(*setting[1:])
    out = np.full_like(landmarks, np.nan)
    for i, (frame, t) in enumerate(zip(landmarks, timestamps)):
        result = smoother(None if np.isnan(frame).any() else frame, float(t))
        if result is not None:
            out[i] = result
    return out


def runs(valid: np.ndarray, min_length: int = 4 * MAX_LAG) -> list[slice]:
    """Runs of consecutive True frames at least ``min_length`` long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(np.int8), [0]])))
    return [slice(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_length]


def second_differences(points: np.ndarray) -> np.ndarray:
    """(T-2, K, 2) frame-to-frame second differences of (T, K, 2) trajectories."""
    return points[2:] - 2 * points[1:-1] + points[:-2]


def lag_frames(raw: np.ndarray, smoothed: np.ndarray) -> float:
    """Delay (frames, > 0 = late) of ``smoothed`` behind ``raw`` (both (T, ...)), by cross-correlation."""
    a = (raw - raw.mean(0)).reshape(len(raw), -1)
    b = (smoothed - smoothed.mean(0)).reshape(len(raw), -1)
    shifts = np.arange(-MAX_LAG, MAX_LAG + 1)
    n = len(raw) - 2 * MAX_LAG
    corr = np.array([np.sum(a[MAX_LAG:MAX_LAG + n] * b[MAX_LAG + k:MAX_LAG + k + n]) for k in shifts])
    i = int(np.argmax(corr))
    if 0 < i < len(shifts) - 1:
        denom = corr[i - 1] - 2 * corr[i] + corr[i + 1]
        return float(shifts[i] + (0.5 * (corr[i - 1] - corr[i + 1]) / denom if denom < 0 else 0.0))
    return float(shifts[i])


def measure(raw: np.ndarray, smoothed: np.ndarray) -> dict[str, float]:
    """Jitter (px) and lag (frames) over the valid runs of one clip."""
    rigid = np.flatnonzero(load_canonical_face().procrustes_weights)
    d2_raw, d2_smooth, speeds, lags, weights = [], [], [], [], []
    for run in runs(~np.isnan(raw[:, 0, 0])):
        r, s = raw[run][:, rigid, :2].astype(np.float64), smoothed[run][:, rigid, :2]
        d2_raw.append(second_differences(r))
        d2_smooth.append(second_differences(s.astype(np.float64)))
        centroid = r.mean(1)
        speeds.append(np.linalg.norm(centroid[2:] - centroid[:-2], axis=1) / 2)
        lags.append(lag_frames(r, s))
        weights.append(len(r))
    if not d2_raw:
        return {}
    d2r, d2s, speed = np.concatenate(d2_raw), np.concatenate(d2_smooth), np.concatenate(speeds)
    still = speed <= np.quantile(speed, 0.25)
    rms = lambda d: float(np.sqrt(np.mean(d ** 2)))  # noqa: E731
    return {"frames": int(sum(weights)), "jitter_raw": rms(d2r), "jitter": rms(d2s),
            "still_raw": rms(d2r[still]), "still": rms(d2s[still]),
            "lag": float(np.average(lags, weights=weights)),
            "face_px": float(np.nanmedian(np.ptp(raw[:, :, 0], axis=1)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--landmarks", type=Path, help="precomputed landmarks (.npz), instead of running FaceMesh")
    p.add_argument("--save", type=Path, help="write the FaceMesh landmarks to this .npz")
    p.add_argument("--videos", type=Path, nargs="*", help="clips (default: ../shared/data/videos/talking-*.mp4)")
    p.add_argument("--max-frames", type=int, default=None, help="frames per clip")
    a = p.parse_args()

    clips: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if a.landmarks:
        data = np.load(a.landmarks)
        for name in sorted({k.split("/")[0] for k in data.files}):
            clips[name] = (data[f"{name}/landmarks"], data[f"{name}/timestamps"])
    else:
        for path in a.videos or sorted(VIDEO_DIR.glob("talking-*.mp4")):
            clips[path.stem] = run_face_mesh(path, a.max_frames)
        if a.save:
            np.savez_compressed(a.save, **{f"{n}/{k}": v for n, (lm, ts) in clips.items()
                                           for k, v in (("landmarks", lm), ("timestamps", ts))})

    print("| clip | face px | frames | setting | jitter raw px | jitter smoothed px | reduction | "
          "still raw px | still smoothed px | still reduction | lag frames |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (landmarks, stamps) in clips.items():
        for setting in SETTINGS:
            m = measure(landmarks, smooth(landmarks, stamps, setting))
            if not m:
                print(f"| {name} | - | 0 | {setting[0]} | no face |")
                continue
            print(f"| {name} | {m['face_px']:.0f} | {m['frames']} | {setting[0]} | {m['jitter_raw']:.3f} | "
                  f"{m['jitter']:.3f} | {m['jitter_raw'] / m['jitter']:.2f}x | {m['still_raw']:.3f} | "
                  f"{m['still']:.3f} | {m['still_raw'] / m['still']:.2f}x | {m['lag']:.2f} |")


if __name__ == "__main__":
    main()
