"""Stable landmarks for video: jitter, lag, blinks and blendshapes of ``attnmesh video`` (defaults: stabilised)
against ``--no-smooth``, MediaPipe's one-euro filter and MediaPipe itself, in one run on the same decoded clips.

    python benchmarks/stable_landmarks.py [--plot docs/images/stable_landmarks_track.png] [--work DIR]

What it runs (``../shared/data``):

* ``attnmesh video CLIP --out x.jsonl`` (the defaults) and ``--no-smooth`` on talking-d3/d6/d9/d11/d14 and on a
  synthetic clip made here: the photo ``face-obama-1080p.jpg`` warped with a slow sinusoidal shift (±60 px in x
  with a 4 s period, ±60 px in y with 6 s), a rotation (±6°, 5 s) and encoded as H.264 (300 frames, 30 fps);
* MediaPipe's FaceMesh (``mp.solutions.face_mesh``, video mode, refined) on the frames PyAV decodes, the decoder
  the CLI uses;
* MediaPipe's FaceLandmarker one-euro filter (``attnmesh.pipeline.smoothing.LandmarkSmoother``, the filter
  ``--smooth-beta 80`` runs) on the ``--no-smooth`` landmarks;
* ``FaceMesh(stabilize_roi=True)``: the ROI dead zone alone, no output filter.

Measures:

* **jitter**: per frame, the residual of each landmark's (x, y) at the centre of a least-squares quadratic fit
  to the 7 frames around it, over that frame's inter-ocular distance (outer eye corners 33-263); the RMS over
  the 478 landmarks and all frames with 3 tracked frames on each side, in % IOD. Motion that is smooth over
  a quarter of a second fits the quadratic; noise and real motion faster than that do not.
* **lag** (synthetic clip): the delay ``tau`` (frames, 0.01 steps) that minimises the mean squared difference
  between the stabilised track and the ``--no-smooth`` track shifted by ``tau`` (after a zero-phase Gaussian
  smoothing of σ = 2 frames, cubic-spline interpolated), over all landmarks; a causal filter's delay of the
  motion. MediaPipe's one-euro gives 0.25 frames.
* **blinks** (talking-d3, talking-d14): a blink is a run of at most 12 frames where an eye's aspect ratio
  (EAR: lid gaps 160-144 and 158-153 over the corners 33-133, and the mirror points) is below 0.6 x its clip
  median, runs 2 frames apart or less merged. For each, the minimum EAR of the stabilised track within the
  run ±1 frame, against the ``--no-smooth`` minimum: relative difference and frame offset.
* **gaze** (talking clips): each eye's iris centre (468, 473) along its corner-to-corner axis over the eye's
  width, per frame; the Pearson correlation of that series with the ``--no-smooth`` one (both eyes' mean): a
  filter that holds the irises still while the eyes move loses it.
* **blendshapes** (first 400 frames of each talking clip, as ``benchmarks/blendshape_eval.py``): Pearson
  correlation of the bounded least-squares solver's eyeBlinkRight/Left and jawOpen, solved on the stabilised
  landmarks against the neutral face estimated from the unsmoothed ones (as ``attnmesh puppet`` does), with the
  EAR and the mouth opening (13-14 over 61-291) of the ``--no-smooth`` landmarks.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from _machine import describe  # noqa: E402

from attnmesh.pipeline.smoothing import LandmarkSmoother  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
VIDEOS = DATA / "videos"
PHOTO = DATA / "photos" / "face-obama-1080p.jpg"
JITTER_CLIPS = ("talking-d3", "talking-d6", "talking-d9")
BLINK_CLIPS = ("talking-d3", "talking-d14")
PUPPET_CLIPS = ("talking-d11", "talking-d14", "talking-d3", "talking-d6", "talking-d9")
PUPPET_FRAMES = 400
NUM_LANDMARKS = 478
EYES = {"right": (33, 160, 158, 133, 153, 144), "left": (263, 387, 385, 362, 380, 373)}
BLINK_CLOSED = 0.6  # EAR below this x the clip median
BLINK_MAX_FRAMES = 12
PLOT_LANDMARK = 1  # nose tip
# the synthetic clip
SYNTH_FRAMES, SYNTH_FPS, SYNTH_SIZE, SYNTH_FACE_PX = 300, 30, (640, 480), 200.0
SYNTH_SHIFT_PX, SYNTH_DEGREES = 60.0, 6.0
SYNTH_PERIODS_S = (4.0, 6.0, 5.0)  # x shift, y shift, rotation

# least-squares quadratic through 7 frames: the hat matrix, row 3 is the fit at the centre
_T = np.arange(-3, 4, dtype=np.float64)
_V = np.stack([np.ones(7), _T, _T ** 2], 1)
HAT_CENTRE = (_V @ np.linalg.pinv(_V))[3]


# -- data ---------------------------------------------------------------------------------------------------


def make_moving_photo(path: Path) -> None:
    """The synthetic clip: the photo's face (about SYNTH_FACE_PX wide) moved and turned along a smooth path."""
    import av
    import cv2

    import attnmesh

    rgb = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    with attnmesh.FaceMesh(static_image_mode=True) as fm:
        landmarks = fm.process(rgb)[0].landmarks
    centre, k = landmarks[:, :2].mean(0), SYNTH_FACE_PX / float(np.ptp(landmarks[:, 0]))
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=SYNTH_FPS)
    stream.width, stream.height, stream.pix_fmt = SYNTH_SIZE[0], SYNTH_SIZE[1], "yuv420p"
    stream.options = {"crf": "18"}
    px, py, pr = SYNTH_PERIODS_S
    for i in range(SYNTH_FRAMES):
        t = i / SYNTH_FPS
        shift = SYNTH_SHIFT_PX * np.array([math.sin(2 * math.pi * t / px), math.sin(2 * math.pi * t / py)])
        angle = math.radians(SYNTH_DEGREES) * math.sin(2 * math.pi * t / pr)
        a = k * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        m = np.concatenate([a, (np.array(SYNTH_SIZE) / 2 + shift - a @ centre)[:, None]], 1)
        frame = cv2.warpAffine(rgb, m, SYNTH_SIZE, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = i
        for packet in stream.encode(vf):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()


def decode(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB frames and timestamps (seconds) as the CLI decodes them (PyAV)."""
    import av

    frames, stamps = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            stamps.append(float(frame.time))
    return frames, np.array(stamps)


def run_cli(path: Path, out: Path, *flags: str) -> np.ndarray:
    """(T, 478, 3) landmarks of the first face per frame (NaN without a face) from ``attnmesh video``."""
    from attnmesh import cli

    code = cli.main(["video", str(path), "--out", str(out), *flags])
    if code != 0:
        raise SystemExit(f"attnmesh video {path} {' '.join(flags)} failed ({code})")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    track = np.full((len(records), NUM_LANDMARKS, 3), np.nan, np.float64)
    for i, record in enumerate(records):
        if record["faces"]:
            track[i] = record["faces"][0]["landmarks"]
    return track


def run_mediapipe(frames: list[np.ndarray]) -> np.ndarray:
    from reference import ReferenceFaceMesh

    mesh = ReferenceFaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
    track = np.full((len(frames), NUM_LANDMARKS, 3), np.nan, np.float64)
    for i, frame in enumerate(frames):
        faces = mesh(frame)
        if faces:
            track[i] = faces[0]
    mesh.close()
    return track


def run_roi_dead_zone(frames: list[np.ndarray]) -> np.ndarray:
    import attnmesh

    track = np.full((len(frames), NUM_LANDMARKS, 3), np.nan, np.float64)
    with attnmesh.FaceMesh(static_image_mode=False, stabilize_roi=True) as fm:
        for i, frame in enumerate(frames):
            faces = fm.process(frame)
            if faces:
                track[i] = faces[0].landmarks
    return track


def one_euro(track: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    smoother, out = LandmarkSmoother(), np.full_like(track, np.nan)
    for i, (frame, t) in enumerate(zip(track, stamps)):
        result = smoother(None if np.isnan(frame).any() else frame, float(t))
        if result is not None:
            out[i] = result
    return out


# -- measures -----------------------------------------------------------------------------------------------


def jitter(track: np.ndarray) -> float:
    """RMS residual (% IOD) of a centred 7-frame quadratic fit, see the module docstring."""
    squares = []
    for c in range(3, len(track) - 3):
        window = track[c - 3:c + 4, :, :2]
        if np.isnan(window).any():
            continue
        residual = window[3] - np.einsum("j,jkl->kl", HAT_CENTRE, window)
        iod = np.linalg.norm(track[c, 33, :2] - track[c, 263, :2])
        squares.append(np.sum(residual ** 2, -1) / iod ** 2)
    return 100.0 * math.sqrt(float(np.mean(squares)))


def lag(raw: np.ndarray, smoothed: np.ndarray) -> float:
    """Delay (frames) of ``smoothed`` behind ``raw``, see the module docstring."""
    from scipy.interpolate import CubicSpline
    from scipy.ndimage import gaussian_filter1d

    n = len(raw)
    reference = gaussian_filter1d(raw[..., :2], 2.0, axis=0, mode="nearest").reshape(n, -1)
    spline = CubicSpline(np.arange(n), reference, axis=0)
    s = smoothed[..., :2].reshape(n, -1)
    t = np.arange(10, n - 10)
    taus = np.round(np.arange(-3.0, 3.0001, 0.01), 2)
    errors = [float(np.mean((s[t] - spline(t - tau)) ** 2)) for tau in taus]
    return float(taus[int(np.argmin(errors))])


def ear(track: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    p = track[:, list(idx), :2]
    d = lambda a, b: np.linalg.norm(p[:, a] - p[:, b], axis=-1)  # noqa: E731
    return (d(1, 5) + d(2, 4)) / (2 * d(0, 3))


def blinks(e: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, frame of the minimum) of each blink of an EAR series, see the module docstring."""
    below = e < BLINK_CLOSED * np.nanmedian(e)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], below.astype(np.int8), [0]])))
    runs: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2]):
        if runs and a - runs[-1][1] <= 2:
            runs[-1][1] = int(b)
        else:
            runs.append([int(a), int(b)])
    return [(a, b, a + int(np.nanargmin(e[a:b]))) for a, b in runs if b - a <= BLINK_MAX_FRAMES]


def blink_rows(raw: np.ndarray, smoothed: np.ndarray) -> list[tuple[str, int, float, float, int]]:
    """(eye, frame, raw minimum EAR, stabilised minimum EAR, frame offset) per blink."""
    rows = []
    for side, idx in EYES.items():
        er, es = ear(raw, idx), ear(smoothed, idx)
        for a, b, m in blinks(er):
            lo, hi = max(0, a - 1), min(len(es), b + 1)
            ms = lo + int(np.nanargmin(es[lo:hi]))
            rows.append((side, m, float(er[m]), float(es[ms]), ms - m))
    return rows


def gaze(track: np.ndarray) -> np.ndarray:
    """(T, 2) each eye's iris centre along its corner axis, over the eye's width (right eye first)."""
    out = []
    for corner, other, centre in ((33, 133, 468), (263, 362, 473)):
        axis = track[:, other, :2] - track[:, corner, :2]
        out.append(np.sum((track[:, centre, :2] - track[:, corner, :2]) * axis, -1) / np.sum(axis ** 2, -1))
    return np.stack(out, 1)


def gaze_correlation(raw: np.ndarray, smoothed: np.ndarray) -> float:
    """Mean over both eyes of the correlation of ``smoothed``'s gaze series with ``raw``'s (frames with both)."""
    g0, g1 = gaze(raw), gaze(smoothed)
    ok = ~np.isnan(g0).any(1) & ~np.isnan(g1).any(1)
    return float(np.mean([np.corrcoef(g0[ok, k], g1[ok, k])[0, 1] for k in range(2)]))


def blendshape_correlations(raw: np.ndarray, smoothed: np.ndarray, size: tuple[int, int]) -> dict[str, float]:
    from attnmesh.apps import blendshapes as bs

    ok = ~np.isnan(raw[:, 0, 0]) & ~np.isnan(smoothed[:, 0, 0])
    raw, smoothed = raw[ok], smoothed[ok]
    metrics = np.stack([bs.metric_landmarks(lm.astype(np.float32), size) for lm in smoothed])
    # as 'attnmesh puppet' does: the neutral face from the unsmoothed landmarks, each stabilised frame solved
    raw_metrics = np.stack([bs.metric_landmarks(lm.astype(np.float32), size) for lm in raw])
    solver = bs.BlendshapeSolver(bs.estimate_neutral(raw_metrics))
    c = np.stack([solver.solve(m) for m in metrics])
    names = bs.BLENDSHAPE_NAMES
    mouth = np.linalg.norm(raw[:, 13, :2] - raw[:, 14, :2], axis=-1) / np.linalg.norm(
        raw[:, 61, :2] - raw[:, 291, :2], axis=-1)
    r = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    return {"blinkR": r(c[:, names.index("eyeBlinkRight")], ear(raw, EYES["right"])),
            "blinkL": r(c[:, names.index("eyeBlinkLeft")], ear(raw, EYES["left"])),
            "jaw": r(c[:, names.index("jawOpen")], mouth)}


def plot_track(path: Path, name: str, raw: np.ndarray, euro: np.ndarray, stable: np.ndarray, fps: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = slice(0, min(len(raw), 150))
    t = np.arange(len(raw))[frames] / fps
    fig, ax = plt.subplots(figsize=(6.4, 2.6), dpi=100)
    for track, label, style in ((raw, "raw (--no-smooth)", dict(color="0.6", lw=1.0)),
                                (euro, "one-euro (MediaPipe)", dict(color="tab:orange", lw=1.0)),
                                (stable, "stabilised (default)", dict(color="tab:blue", lw=1.4))):
        ax.plot(t, track[frames, PLOT_LANDMARK, 0], label=label, **style)
    ax.set_xlabel("seconds")
    ax.set_ylabel("x (px)")
    ax.set_title(f"{name}: nose tip (landmark {PLOT_LANDMARK}), x", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plot", type=Path, help="write the landmark-track plot (PNG) here")
    p.add_argument("--work", type=Path, help="folder for the CLI outputs and the synthetic clip (default: temp)")
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    work = a.work or Path(tempfile.mkdtemp(prefix="stable-landmarks-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {describe()}\n", flush=True)
    started = time.perf_counter()

    synthetic = work / "moving-photo.mp4"
    make_moving_photo(synthetic)
    tracks: dict[str, dict[str, np.ndarray]] = {}
    clips = {name: VIDEOS / f"{name}.mp4" for name in sorted(set(JITTER_CLIPS + BLINK_CLIPS + PUPPET_CLIPS))}
    clips["moving-photo"] = synthetic
    for name, path in clips.items():
        frames, stamps = decode(path)
        t = {"stamps": stamps, "size": np.array(frames[0].shape[1::-1])}
        t["default"] = run_cli(path, work / f"{name}.jsonl")
        t["raw"] = run_cli(path, work / f"{name}-raw.jsonl", "--no-smooth")
        t["one_euro"] = one_euro(t["raw"], stamps)
        if name in JITTER_CLIPS:
            t["mediapipe"] = run_mediapipe(frames)
            t["roi"] = run_roi_dead_zone(frames)
        tracks[name] = t
        print(f"  {name}: {len(frames)} frames ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    print("### Jitter (% IOD: RMS residual of a centred 7-frame quadratic fit, 478 landmarks)\n")
    print("| clip | frames | MediaPipe raw | ours raw (--no-smooth) | ROI dead zone only | one-euro (MediaPipe's) | "
          "stabilised (default) | default / MediaPipe raw |")
    print("|---|---|---|---|---|---|---|---|")
    for name in JITTER_CLIPS:
        t = tracks[name]
        j = {k: jitter(t[k]) for k in ("mediapipe", "raw", "roi", "one_euro", "default")}
        print(f"| {name} | {len(t['raw'])} | {j['mediapipe']:.3f} | {j['raw']:.3f} | {j['roi']:.3f} | "
              f"{j['one_euro']:.3f} ({j['one_euro'] / j['mediapipe']:.0%}) | **{j['default']:.3f}** | "
              f"**{j['default'] / j['mediapipe']:.0%}** |")

    t = tracks["moving-photo"]
    print(f"\n### Lag on the moved and turned photo ({SYNTH_FRAMES} frames; frames behind --no-smooth)\n")
    print("| one-euro (MediaPipe's) | stabilised (default) | jitter raw / one-euro / stabilised (% IOD) |")
    print("|---|---|---|")
    print(f"| {lag(t['raw'], t['one_euro']):.2f} | **{lag(t['raw'], t['default']):.2f}** | "
          f"{jitter(t['raw']):.3f} / {jitter(t['one_euro']):.3f} / {jitter(t['default']):.3f} |")

    print("\n### Blinks (minimum EAR of each blink: stabilised vs --no-smooth)\n")
    print("| clip | blinks | worst depth difference | worst timing (frames) | one-euro: worst depth / timing |")
    print("|---|---|---|---|---|")
    for name in BLINK_CLIPS:
        t = tracks[name]
        rows, euro = blink_rows(t["raw"], t["default"]), blink_rows(t["raw"], t["one_euro"])
        depth = max(((r[3] - r[2]) / r[2] for r in rows), key=abs) if rows else float("nan")
        timing = max((r[4] for r in rows), key=abs) if rows else 0
        edepth = max(((r[3] - r[2]) / r[2] for r in euro), key=abs) if euro else float("nan")
        etiming = max((r[4] for r in euro), key=abs) if euro else 0
        print(f"| {name} | {len(rows)} | **{depth:+.1%}** | **{timing:+d}** | {edepth:+.1%} / {etiming:+d} |")

    print("\n### Gaze (correlation of the irises' position in the eye with --no-smooth's)\n")
    print("| clip | one-euro (MediaPipe's) | stabilised (default) |")
    print("|---|---|---|")
    for name in PUPPET_CLIPS:
        t = tracks[name]
        print(f"| {name} | {gaze_correlation(t['raw'], t['one_euro']):.3f} | "
              f"**{gaze_correlation(t['raw'], t['default']):.3f}** |")

    print(f"\n### Blendshapes (first {PUPPET_FRAMES} frames; solver on stabilised landmarks vs raw geometry)\n")
    print("| clip | r(eyeBlinkRight, EAR) | r(eyeBlinkLeft, EAR) | r(jawOpen, mouth opening) |")
    print("|---|---|---|---|")
    for name in PUPPET_CLIPS:
        t = tracks[name]
        size = (int(t["size"][0]), int(t["size"][1]))
        r = blendshape_correlations(t["raw"][:PUPPET_FRAMES], t["default"][:PUPPET_FRAMES], size)
        print(f"| {name} | {r['blinkR']:.3f} | {r['blinkL']:.3f} | {r['jaw']:.3f} |")

    if a.plot:
        t = tracks["talking-d3"]
        plot_track(a.plot, "talking-d3", t["raw"], t["one_euro"], t["default"], 1.0 / np.median(np.diff(t["stamps"])))
        print(f"\nplot: {a.plot}")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
