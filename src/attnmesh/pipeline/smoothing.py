"""Landmark smoothing for video: MediaPipe's ``LandmarksSmoothingCalculator`` with a one-euro filter, the
smoothing the Tasks FaceLandmarker runs in video and live-stream mode (the legacy Python FaceMesh has none).

Landmarks are image pixels (x right, y down, z relative depth on the x scale), as attnmesh returns them;
timestamps are seconds. Every coordinate of every landmark has its own filter state. The speed that opens
the filter is measured in face sizes per second: each frame's pixel derivative is multiplied by
``value_scale = 1 / object_scale``, with ``object_scale`` the mean of the width and height of the
landmarks' bounding box in pixels. The filter is therefore independent of the face's size on the image.

One-euro filter (Casiez et al. 2012), per coordinate, with ``f`` the frame rate from the timestamps:

* ``alpha(fc) = 1 / (1 + f / (2π fc))``;
* ``dx = (x - x_prev_raw) · value_scale · f`` (0 on the first sample),
  ``edx = lowpass(dx, alpha(derivate_cutoff))``;
* ``cutoff = min_cutoff + beta · |edx|``, output ``lowpass(x, alpha(cutoff))``.

Defaults: ``min_cutoff`` 0.05 Hz, ``beta`` 80, ``derivate_cutoff`` 1 Hz, the Tasks FaceLandmarker's, kept so
that results match what MediaPipe users see. The cutoff rises with the speed: 8 Hz at 0.1 face sizes per
second (20 px/s for a 200 px face), 25 Hz at 0.3. Because the speed of the landmark noise itself also opens
the filter (1 px of white noise on a 190 px face keeps the cutoff near 4 Hz), they favour low lag over
smoothness. Measured at 30 fps (``tests/test_smoothing.py``, ``benchmarks/smoothing_jitter.py``):

* synthetic 190 px face, 1 px noise: frame-to-frame jitter (second differences) 3.4x lower when still,
  2.5x during a slow sway, RMS error to the truth 1.7x lower when still; lag 0.3-0.6 frames;
* attnmesh on talking-head clips: jitter of the quiet frames 2.0-2.8x lower, lag 0.3-0.4 frames (a clip
  where the head nods all the time, so that no frame is quiet: 1.15x).

For stronger smoothing use ``beta=20``: jitter 4-10x lower on the synthetic face (3.6-5x on the clips'
quiet frames) for about 1 frame of lag (2 on very slow motion); ``beta=40`` is in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np

# The Tasks FaceLandmarker's one_euro_filter options.
MIN_CUTOFF = 0.05  # Hz
BETA = 80.0  # Hz per (face size per second)
DERIVATE_CUTOFF = 1.0  # Hz
DEFAULT_FREQUENCY = 30.0  # Hz, until two timestamps give the real rate
MIN_ALLOWED_OBJECT_SCALE = 1e-6  # pixels; smaller faces pass through unfiltered


def smoothing_factor(cutoff: float | np.ndarray, frequency: float) -> float | np.ndarray:
    """The exponential smoothing factor ``alpha`` of a first-order low-pass with ``cutoff`` (Hz) sampled at
    ``frequency`` (Hz): 1 passes the input through, near 0 holds the previous output."""
    return 1.0 / (1.0 + frequency / (2.0 * math.pi * cutoff))


class OneEuroFilter:
    """A one-euro filter over a scalar or an array of independent values (elementwise state).

    ``min_cutoff``: the cutoff frequency (Hz) of a still signal; lower removes more jitter.
    ``beta``: how fast the cutoff rises with the speed (Hz per value unit per second, after ``value_scale``);
    higher lags less on fast motion. ``derivate_cutoff``: the cutoff (Hz) of the low-pass on the speed.
    ``frequency``: the assumed frame rate (Hz) until two timestamps are seen.
    """

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA,
                 derivate_cutoff: float = DERIVATE_CUTOFF, frequency: float = DEFAULT_FREQUENCY) -> None:
        if min_cutoff <= 0 or derivate_cutoff <= 0 or beta < 0 or frequency <= 0:
            raise ValueError("min_cutoff, derivate_cutoff and frequency must be > 0 and beta >= 0")
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivate_cutoff = derivate_cutoff
        self.initial_frequency = frequency
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next value passes through unchanged."""
        self.frequency = self.initial_frequency
        self._last_time: float | None = None
        self._last_raw: np.ndarray | None = None
        self._last_value: np.ndarray | None = None
        self._last_speed: np.ndarray | None = None

    def __call__(self, value: float | np.ndarray, timestamp: float, value_scale: float = 1.0) -> np.ndarray:
        """Filter one sample taken at ``timestamp`` (seconds) and return the float64 result (same shape).

        ``value_scale`` multiplies the speed (not the value) before it sets the cutoff. A timestamp not later
        than the previous one returns ``value`` unchanged and leaves the state alone, as MediaPipe does. A
        change of shape restarts the filter.
        """
        value = np.asarray(value, np.float64)
        if self._last_raw is not None and self._last_raw.shape != value.shape:
            self.reset()
        if self._last_time is not None:
            if timestamp <= self._last_time:
                return value.copy()
            self.frequency = 1.0 / (timestamp - self._last_time)
        self._last_time = timestamp

        if self._last_raw is None:
            speed = np.zeros_like(value)
            filtered = value.copy()
        else:
            raw_speed = (value - self._last_raw) * value_scale * self.frequency
            speed_alpha = smoothing_factor(self.derivate_cutoff, self.frequency)
            speed = self._lowpass(raw_speed, self._last_speed, speed_alpha)
            cutoff = self.min_cutoff + self.beta * np.abs(speed)
            filtered = self._lowpass(value, self._last_value, smoothing_factor(cutoff, self.frequency))
        self._last_raw, self._last_value, self._last_speed = value.copy(), filtered, speed
        return filtered.copy()

    @staticmethod
    def _lowpass(value: np.ndarray, previous: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
        return alpha * value + (1.0 - alpha) * previous


def object_scale(landmarks: np.ndarray) -> float:
    """The size of a face in pixels: the mean of its landmarks' bounding-box width and height."""
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    return float(((hi[0] - lo[0]) + (hi[1] - lo[1])) / 2)


class LandmarkSmoother:
    """Smooths the (K, 3) landmarks of one tracked face over the frames of a video.

    Call it once per frame with the face's landmarks (image pixels) and the frame's timestamp (seconds); pass
    ``None`` on a frame where the face was lost, which resets the filters so that the next detection starts
    fresh. Parameters: see :class:`OneEuroFilter` and the module docstring.
    """

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA,
                 derivate_cutoff: float = DERIVATE_CUTOFF, frequency: float = DEFAULT_FREQUENCY) -> None:
        self._filter = OneEuroFilter(min_cutoff, beta, derivate_cutoff, frequency)

    def reset(self) -> None:
        """Forget the history (a new face, or a cut in the video)."""
        self._filter.reset()

    def __call__(self, landmarks: np.ndarray | None, timestamp: float) -> np.ndarray | None:
        """The smoothed landmarks, float32 with the input's shape; ``None`` (and a reset) for ``None``.

        Landmarks whose bounding box is smaller than 1e-6 px pass through unfiltered, without touching the
        state; a change in the number of landmarks restarts the filters. Raises ValueError for a malformed
        or non-finite array.
        """
        if landmarks is None:
            self.reset()
            return None
        landmarks = np.asarray(landmarks)
        if landmarks.ndim != 2 or landmarks.shape[1] < 2:
            raise ValueError(f"landmarks must be (K, 2 or 3), got {landmarks.shape}")
        if not np.isfinite(landmarks).all():
            raise ValueError("landmarks must be finite (pass None for a frame without the face)")
        scale = object_scale(landmarks)
        if scale < MIN_ALLOWED_OBJECT_SCALE:
            return landmarks.astype(np.float32)
        return self._filter(landmarks, timestamp, 1.0 / scale).astype(np.float32)


class MultiFaceSmoother:
    """One :class:`LandmarkSmoother` per tracked face, keyed by a track id that the caller keeps stable
    across frames (for example, the index of the face's tracked ROI while it is tracked). A face missing from
    a frame is dropped and starts fresh if its id comes back.
    """

    def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA,
                 derivate_cutoff: float = DERIVATE_CUTOFF, frequency: float = DEFAULT_FREQUENCY) -> None:
        params = (min_cutoff, beta, derivate_cutoff, frequency)
        self._factory: Callable[[], Any] = lambda: LandmarkSmoother(*params)
        self._smoothers: dict[Hashable, Any] = {}

    def reset(self) -> None:
        """Forget every face."""
        self._smoothers.clear()

    @property
    def track_ids(self) -> list[Hashable]:
        """The ids being smoothed."""
        return list(self._smoothers)

    def __call__(self, faces: Mapping[Hashable, np.ndarray], timestamp: float) -> dict[Hashable, np.ndarray]:
        """Smooth every face of one frame: ``faces`` maps track id -> (K, 3) landmarks (image pixels); returns
        the smoothed landmarks under the same ids."""
        for track_id in list(self._smoothers):
            if track_id not in faces:
                del self._smoothers[track_id]
        out = {}
        for track_id, landmarks in faces.items():
            smoother = self._smoothers.get(track_id)
            if smoother is None:
                smoother = self._smoothers[track_id] = self._factory()
            out[track_id] = smoother(landmarks, timestamp)
        return out
