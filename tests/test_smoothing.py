"""One-euro landmark smoothing: the formulas, jitter and lag on synthetic motion, and reset semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attnmesh.geometry.face_geometry import load_canonical_face
from attnmesh.pipeline.smoothing import (BETA, DERIVATE_CUTOFF, MIN_CUTOFF, LandmarkSmoother, MultiFaceSmoother,
                                         OneEuroFilter, object_scale)

FPS = 30.0


class ScalarOneEuro:
    """A plain scalar one-euro filter written from the formulas (MediaPipe's OneEuroFilter + LowPassFilter)."""

    def __init__(self, min_cutoff: float, beta: float, dcutoff: float) -> None:
        self.min_cutoff, self.beta, self.dcutoff = min_cutoff, beta, dcutoff
        self.freq, self.t = 30.0, None
        self.x_raw = self.x_out = self.dx_out = None

    def alpha(self, cutoff: float) -> float:
        te = 1.0 / self.freq
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    def __call__(self, x: float, t: float, scale: float) -> float:
        if self.t is not None and t <= self.t:
            return x
        if self.t is not None:
            self.freq = 1.0 / (t - self.t)
        self.t = t
        dx = 0.0 if self.x_raw is None else (x - self.x_raw) * scale * self.freq
        a = self.alpha(self.dcutoff)
        self.dx_out = dx if self.dx_out is None else a * dx + (1 - a) * self.dx_out
        cutoff = self.min_cutoff + self.beta * abs(self.dx_out)
        a = self.alpha(cutoff)
        self.x_out = x if self.x_out is None else a * x + (1 - a) * self.x_out
        self.x_raw = x
        return self.x_out


def synthetic_face(size_px: float = 190.0) -> np.ndarray:
    """(117, 3) face-like landmarks (every 4th canonical vertex) about ``size_px`` wide, image pixels."""
    v = load_canonical_face().vertices[::4]
    return v * np.array([1, -1, -1]) * (size_px / np.ptp(v[:, 0])) + np.array([320.0, 240.0, 0.0])


def smooth_sequence(frames: np.ndarray, timestamps: np.ndarray, **params: float) -> np.ndarray:
    smoother = LandmarkSmoother(**params)
    return np.stack([smoother(f, t) for f, t in zip(frames, timestamps)]).astype(np.float64)


def lag_frames(clean: np.ndarray, smoothed: np.ndarray, max_lag: int = 6) -> float:
    """Delay of ``smoothed`` behind ``clean`` (frames): the cross-correlation peak, refined by a parabola."""
    a, b = clean - clean.mean(), smoothed - smoothed.mean()
    n = len(a) - 2 * max_lag
    corr = np.array([np.dot(a[max_lag:max_lag + n], b[max_lag + k:max_lag + k + n])
                     for k in range(-max_lag, max_lag + 1)])
    i = int(np.argmax(corr))
    assert 0 < i < len(corr) - 1
    return i - max_lag + 0.5 * (corr[i - 1] - corr[i + 1]) / (corr[i - 1] - 2 * corr[i] + corr[i + 1])


# ------------------------------------------------------------------------------------------ formulas


def test_three_steps_by_hand():
    """min_cutoff 1, beta 0.5, derivate_cutoff 1, samples 0, 1, 1.5 at 0, 0.1, 0.2 s (10 Hz)."""
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5, derivate_cutoff=1.0)
    assert f(0.0, 0.0) == 0.0
    # dx = 10, edx = 0.385870 * 10 = 3.858695, cutoff = 2.929348, alpha = 0.647957
    assert float(f(1.0, 0.1)) == pytest.approx(0.6479571696, abs=1e-9)
    assert f.frequency == pytest.approx(10.0)
    # dx = 5, edx = 4.299090, cutoff = 3.149545, alpha = 0.664308: 0.664308 * 1.5 + 0.335692 * 0.647957
    assert float(f(1.5, 0.2)) == pytest.approx(1.2139756896, abs=1e-9)


def test_filter_matches_scalar_reference():
    rng = np.random.default_rng(0)
    params = dict(min_cutoff=0.3, beta=5.0, derivate_cutoff=1.5)
    values = np.cumsum(rng.normal(0, 1, (60, 4, 3)), axis=0)
    times = np.cumsum(rng.uniform(0.02, 0.05, 60))
    times[20] = times[19]  # a repeated timestamp returns the raw value
    scales = rng.uniform(0.5, 2.0, 60)
    f = OneEuroFilter(**params)
    ours = np.stack([f(v, t, s) for v, t, s in zip(values, times, scales)])
    refs = [[ScalarOneEuro(params["min_cutoff"], params["beta"], params["derivate_cutoff"]) for _ in range(3)]
            for _ in range(4)]
    expected = np.array([[[refs[i][j](float(v[i, j]), float(t), float(s)) for j in range(3)] for i in range(4)]
                         for v, t, s in zip(values, times, scales)])
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(ours[20], values[20])


def test_landmark_smoother_matches_scalar_reference():
    """Value scale = 1 / object scale of each frame (mean of the box's width and height), per-coordinate
    filters, MediaPipe's Tasks defaults."""
    rng = np.random.default_rng(1)
    base = synthetic_face(150.0)[:20]
    frames = base + np.cumsum(rng.normal(0, 2, (40, 20, 3)), axis=0)
    times = np.arange(40) / FPS
    refs = [[ScalarOneEuro(MIN_CUTOFF, BETA, DERIVATE_CUTOFF) for _ in range(3)] for _ in range(20)]
    expected = []
    for frame, t in zip(frames, times):
        box = frame[:, :2].max(0) - frame[:, :2].min(0)
        scale = 1.0 / ((box[0] + box[1]) / 2)
        expected.append([[refs[i][j](float(frame[i, j]), float(t), scale) for j in range(3)] for i in range(20)])
    ours = smooth_sequence(frames, times)
    np.testing.assert_allclose(ours, np.array(expected), atol=1e-4)  # the output is float32
    assert object_scale(frames[0]) == pytest.approx(np.mean(np.ptp(frames[0, :, :2], axis=0)), rel=1e-6)


# ------------------------------------------------------------------------------------------ jitter and lag


def sway(amplitude: float, period: float, n: int = 300, noise: float = 1.0, seed: int = 2):
    """A 190 px face swaying on a sinusoid (x, and half as much in y) at 30 fps, with Gaussian noise (px)."""
    t = np.arange(n) / FPS
    offset = amplitude * np.sin(2 * np.pi * t / period)
    clean = synthetic_face()[None] + np.stack([offset, 0.5 * offset, 0 * offset], 1)[:, None, :]
    noisy = clean + np.random.default_rng(seed).normal(0, noise, clean.shape)
    return t, clean, noisy


def second_difference_std(x: np.ndarray) -> float:
    return float(np.std(np.diff(x, 2, axis=0)))


def test_jitter_and_lag_with_the_defaults():
    """MediaPipe's Tasks defaults on 1 px noise: slow head sway (10 px, 2 s period) loses more than half of
    its frame-to-frame jitter with under a frame of lag."""
    t, clean, noisy = sway(10.0, 2.0)
    out = smooth_sequence(noisy, t)
    warm = slice(30, None)  # after the first second
    reduction = second_difference_std(noisy[warm]) / second_difference_std(out[warm])
    lag = lag_frames(clean[warm, :, 0].mean(1), out[warm, :, 0].mean(1))
    assert reduction > 2.0
    assert -0.2 < lag < 1.0


def test_static_face_with_the_defaults():
    t, clean, noisy = sway(0.0, 1.0)
    out = smooth_sequence(noisy, t)
    warm = slice(30, None)
    rms = lambda x: float(np.sqrt(np.mean((x[warm] - clean[warm]) ** 2)))  # noqa: E731
    assert second_difference_std(noisy[warm]) / second_difference_std(out[warm]) > 3.0
    # The speed of the noise itself keeps the cutoff at a few hertz: the defaults favour low lag.
    assert rms(noisy) / rms(out) > 1.5


@pytest.mark.parametrize("amplitude,period", [(10.0, 2.0), (30.0, 2.0), (60.0, 3.0)])
def test_stronger_smoothing(amplitude, period):
    """beta 20 (the documented stronger setting): static RMS error down more than 2x, moving jitter down more
    than 2x, lag under 2 frames, except on the slowest sway, where the cutoff stays low (2.1 frames, which is
    2 px at its 31 px/s peak speed)."""
    t, clean, noisy = sway(amplitude, period)
    out = smooth_sequence(noisy, t, beta=20.0)
    warm = slice(30, None)
    assert second_difference_std(noisy[warm]) / second_difference_std(out[warm]) > 2.0
    assert lag_frames(clean[warm, :, 0].mean(1), out[warm, :, 0].mean(1)) < (2.5 if amplitude < 20 else 2.0)
    t, clean, noisy = sway(0.0, 1.0)
    out = smooth_sequence(noisy, t, beta=20.0)
    rms = lambda x: float(np.sqrt(np.mean((x[warm] - clean[warm]) ** 2)))  # noqa: E731
    assert rms(noisy) / rms(out) > 2.0


def test_fast_motion_is_followed():
    """A fast jump is tracked within a few frames (the cutoff rises with the speed)."""
    face = synthetic_face()
    frames = np.stack([face] * 10 + [face + np.array([40.0, 0, 0])] * 10)
    out = smooth_sequence(frames, np.arange(20) / FPS)
    assert abs(out[13, :, 0] - frames[13, :, 0]).max() < 1.0


# ------------------------------------------------------------------------------------------ semantics


def test_reset_on_missing_frame():
    face = synthetic_face()
    smoother = LandmarkSmoother()
    smoother(face, 0.0)
    moved = face + 5.0
    assert not np.allclose(smoother(moved, 1 / FPS), moved, atol=1e-3)  # filtered
    assert smoother(None, 2 / FPS) is None
    np.testing.assert_allclose(smoother(moved + 7.0, 3 / FPS), moved + 7.0, atol=1e-4)  # starts fresh
    smoother.reset()
    np.testing.assert_allclose(smoother(face, 4 / FPS), face, atol=1e-4)


def test_non_increasing_timestamp_returns_raw_and_keeps_state():
    face = synthetic_face()
    a, b = LandmarkSmoother(), LandmarkSmoother()
    for s in (a, b):
        s(face, 0.0)
        s(face + 2.0, 0.1)
    np.testing.assert_allclose(a(face + 9.0, 0.1), face + 9.0, atol=1e-4)  # same timestamp: raw
    np.testing.assert_allclose(a(face + 9.0, 0.05), face + 9.0, atol=1e-4)  # earlier: raw
    np.testing.assert_array_equal(a(face + 3.0, 0.2), b(face + 3.0, 0.2))  # state untouched


def test_first_frame_passes_through_and_shapes():
    face = synthetic_face().astype(np.float32)
    out = LandmarkSmoother()(face, 0.0)
    assert out.dtype == np.float32 and out.shape == face.shape
    np.testing.assert_array_equal(out, face)
    smoother = LandmarkSmoother()
    smoother(face, 0.0)
    fewer = face[:50] + 3.0  # a different landmark count restarts the filters
    np.testing.assert_allclose(smoother(fewer, 0.1), fewer, atol=1e-4)
    tiny = np.full((10, 3), 5.0)  # no extent: passes through
    np.testing.assert_array_equal(LandmarkSmoother()(tiny, 0.0), tiny)
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0.0)
    with pytest.raises(ValueError):
        LandmarkSmoother()(np.full((10, 3), np.nan), 0.0)


def test_multi_face_smoother():
    face = synthetic_face()
    multi = MultiFaceSmoother()
    out = multi({1: face, 2: face + 100.0}, 0.0)
    assert set(out) == {1, 2}
    out = multi({1: face + 4.0, 2: face + 104.0}, 1 / FPS)
    single = LandmarkSmoother()
    single(face, 0.0)
    np.testing.assert_array_equal(out[1], single(face + 4.0, 1 / FPS))
    out = multi({2: face + 104.0}, 2 / FPS)  # face 1 lost: dropped
    assert multi.track_ids == [2]
    out = multi({1: face + 50.0, 2: face + 104.0}, 3 / FPS)  # face 1 is back: fresh
    np.testing.assert_allclose(out[1], face + 50.0, atol=1e-4)
    multi.reset()
    assert multi.track_ids == []
