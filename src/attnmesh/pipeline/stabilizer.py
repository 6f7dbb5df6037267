"""Landmark stabilisation for video: rigid head motion and expression filtered apart.

Landmarks are image pixels (x right, y down, z relative depth on the x scale), as attnmesh returns them;
timestamps are seconds. Each frame is split into

* a **pose**: the similarity ``p = s · R · d + t`` (3D, orthographic, image pixels) that maps MediaPipe's
  canonical face onto the frame's landmarks, fitted by weighted Procrustes on the 33 landmarks of the
  face-geometry Procrustes basis (nose, forehead, cheekbones: no lips, lids or irises), so that talking and
  blinking do not move it; and
* a **shape**: every landmark with the pose removed, ``d = Rᵀ (p - t) / s``, in the canonical face's frame and
  units (centimetres; the canonical face is about 15 cm wide), which holds the expression and the noise.

The pose's 7 parameters (rotation vector relative to the first frame's rotation, translation, log scale) go
through a constant-velocity alpha-beta filter (a steady-state Kalman filter): it follows smooth head motion
with no lag to first order (a ramp is tracked exactly) and averages the noise over about
``1 / POSE_ALPHA`` frames. The shape goes through an innovation-gated low-pass: each landmark moves towards its
new position by a gain that grows from ``SHAPE_MIN_GAIN`` (noise-sized changes) to 1 (changes much larger
than ``SHAPE_SIGMA_CM``), the change being averaged over the landmark's ``SHAPE_NEIGHBOURS`` nearest neighbours
so that the coherent motion of an expression opens the gate and the incoherent noise of single landmarks
does not. Each eye (its 16-point contour and, with ``refine_landmarks``, its 5 iris points) goes through a
constant-velocity alpha-beta filter of ``EYE_BANDWIDTH_HZ`` as one unit, so that gaze shifts and lid movements keep
their speed and the iris stays inside its lids; lids and iris pass through unfiltered whenever they move like a
blink (the eye's opening changes by more than ``LID_JUMP`` of its open level, or the eye is more than half closed),
which keeps blinks at full speed and depth. (Under the gated low-pass, as before, the irises hardly moved: a gaze
shift changes too few neighbours to open the gate, and the stabilised gaze correlated 0.09-0.63 with the raw one on
the talking clips.) The lip loops, which move all the time in speech, go through their own constant-velocity
alpha-beta filter whose -3 dB frequency is ``LIP_BANDWIDTH_HZ`` at the video's frame rate (10 Hz: speech moves the
lips at the syllable rate, 4-8 Hz; alpha 0.83, beta 0.69 at 30 fps): a ramp passes without lag, a sudden opening
reaches 0.83 of its depth on its frame, and the noise above 10 Hz is damped. (Passing the lips through raw whenever
they moved, as before, left them carrying 70-90% of the remaining jitter.) The output is the filtered shape placed
by the filtered pose.

Measured by ``benchmarks/stable_landmarks.py`` (docs/stable-landmarks.md): jitter (residual of a centred 7-frame
quadratic fit) 40%, 44% and 46% of MediaPipe's raw jitter on talking-d3, d6 and d9 where its one-euro settings
leave 68-89%, with 0.35 frames of lag on a photo moved and turned along a smooth path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from ..geometry.face_geometry import ProcrustesBasis, load_canonical_face
from ..topology import LEFT_IRIS, NUM_MESH_LANDMARKS, RIGHT_IRIS
from .smoothing import MultiFaceSmoother

POSE_ALPHA = 0.25  # alpha-beta position gain (per frame)
POSE_BETA = 0.035  # alpha-beta velocity gain (per frame)
SHAPE_MIN_GAIN = 0.05  # gain of the shape filter for changes much smaller than SHAPE_SIGMA_CM
SHAPE_SIGMA_CM = 0.8  # change (canonical centimetres, neighbourhood mean) at which the gain is ~0.43
SHAPE_NEIGHBOURS = 24  # landmarks (itself included) whose changes are averaged to set a landmark's gain
LID_JUMP = 0.1  # lids pass through when the eye's opening changes by more than this x its open level
LID_CLOSED = 0.5  # ... or when the opening is below this x its open level
OPEN_LEVEL_RATE = 0.05  # per frame: how fast the open level follows openings above 0.7 x the level
LIP_BANDWIDTH_HZ = 10.0  # -3 dB frequency of the lips' alpha-beta filter (speech articulation: syllables 4-8 Hz)
EYE_BANDWIDTH_HZ = 10.0  # -3 dB frequency of the eyes' (contour and iris) alpha-beta filter (saccades: 20-80 ms)
DEFAULT_FREQUENCY = 30.0  # Hz, frame rate assumed for the first frame

# Per eye, the subject's right first: the contour (9 upper + 9 lower points, the corners shared), the opening
# measure (the mean of two lid gaps over the corner-to-corner width: the eye aspect ratio) and the iris.
_EYES = (
    ((33, 246, 161, 160, 159, 158, 157, 173, 133, 7, 163, 144, 145, 153, 154, 155), ((160, 144), (158, 153)),
     (33, 133), RIGHT_IRIS),
    ((263, 466, 388, 387, 386, 385, 384, 398, 362, 249, 390, 373, 374, 380, 381, 382), ((387, 373), (385, 380)),
     (263, 362), LEFT_IRIS),
)
# Outer and inner lip loops; the lip gap 13-14 and the mouth width 61-291.
_LIPS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 146, 91, 181, 84, 17, 314, 405, 321, 375,
         78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 95, 88, 178, 87, 14, 317, 402, 318, 324)
# Image pixels (x right, y down, z away from the camera) -> a right-handed frame like the canonical face's.
_FLIP = np.array([1.0, -1.0, -1.0])


def alpha_beta_response(alpha: float, beta: float, frequency: np.ndarray, frame_rate: float) -> np.ndarray:
    """Magnitude of the alpha-beta filter's position response at ``frequency`` (Hz) for samples at ``frame_rate``
    (Hz): ``|H(z)|``, ``H(z) = (α z² + (β - α) z) / (z² + (α + β - 2) z + 1 - α)``,
    ``z = exp(2πi f / rate)``."""
    z = np.exp(2j * np.pi * np.asarray(frequency, np.float64) / frame_rate)
    return np.abs((alpha * z * z + (beta - alpha) * z) / (z * z + (alpha + beta - 2) * z + 1 - alpha))


@functools.lru_cache(maxsize=16)
def alpha_beta_for_bandwidth(bandwidth_hz: float, frame_rate: float) -> tuple[float, float]:
    """``(alpha, beta)`` of the steady-state Kalman filter for a constant-velocity model (Kalata's gains for a
    tracking index λ) whose -3 dB frequency is ``bandwidth_hz`` at ``frame_rate`` (both Hz); ``(1, 0)`` (raw)
    when the bandwidth reaches the Nyquist frequency. Found by bisection on log λ."""
    if bandwidth_hz >= 0.5 * frame_rate:
        return 1.0, 0.0

    def gains(lam: float) -> tuple[float, float]:
        r = (4 + lam - math.sqrt(8 * lam + lam * lam)) / 4
        alpha = 1 - r * r
        return alpha, 2 * (2 - alpha) - 4 * math.sqrt(1 - alpha)

    frequencies = np.linspace(0.0, 0.5 * frame_rate, 2001)[1:]

    def cutoff(lam: float) -> float:
        below = alpha_beta_response(*gains(lam), frequencies, frame_rate) < math.sqrt(0.5)
        return float(frequencies[int(np.argmax(below))]) if below.any() else 0.5 * frame_rate

    lo, hi = -8.0, 8.0  # log λ
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cutoff(math.exp(mid)) < bandwidth_hz else (lo, mid)
    return gains(math.exp(0.5 * (lo + hi)))


@functools.lru_cache(maxsize=4)
def _eye_points(num_landmarks: int) -> tuple[tuple[list[int], ...], list[int]]:
    """Per eye (as :data:`_EYES`), the points the eye filter moves as one unit: the contour, and the iris when
    ``num_landmarks`` includes the irises; and both eyes' points concatenated (the filter's order)."""
    eyes = tuple(list(contour) + (list(iris) if num_landmarks > max(iris) else []) for contour, _, _, iris in _EYES)
    return eyes, [i for eye in eyes for i in eye]


def _opening(shape: np.ndarray, gaps: tuple[tuple[int, int], ...], width: tuple[int, int]) -> float:
    gap = sum(float(np.linalg.norm(shape[a] - shape[b])) for a, b in gaps) / len(gaps)
    return gap / max(float(np.linalg.norm(shape[width[0]] - shape[width[1]])), 1e-9)


class AlphaBetaFilter:
    """Constant-velocity alpha-beta filter over an array of independent values (elementwise state).

    Per sample: predict ``x + v·dt``, take the innovation ``e = z - prediction``, then ``x = prediction + α e``,
    ``v = v + (β / dt) e`` with ``dt`` in seconds and ``v`` in units per second. A ramp is followed without
    lag; white noise of variance σ² leaves ``σ² (2α² + 2β - 3αβ) / (α (4 - 2α - β))`` (0.16 σ² at the
    defaults)."""

    def __init__(self, alpha: float = POSE_ALPHA, beta: float = POSE_BETA) -> None:
        if not 0 < alpha <= 1 or not 0 <= beta < 2 * (2 - alpha):
            raise ValueError("alpha must be in (0, 1] and beta in [0, 4 - 2 alpha)")
        self.alpha, self.beta = alpha, beta
        self.value: np.ndarray | None = None
        self.velocity: np.ndarray | None = None

    def reset(self) -> None:
        self.value = self.velocity = None

    def __call__(self, z: np.ndarray, dt: float) -> np.ndarray:
        """Filter one sample taken ``dt`` seconds after the previous one; returns a new float64 array."""
        z = np.asarray(z, np.float64)
        if self.value is None or self.value.shape != z.shape:
            self.value, self.velocity = z.copy(), np.zeros_like(z)
            return z.copy()
        predicted = self.value + self.velocity * dt
        innovation = z - predicted
        self.value = predicted + self.alpha * innovation
        self.velocity = self.velocity + (self.beta / dt) * innovation
        return self.value.copy()


class LandmarkStabilizer:
    """Stabilises the (K, 3) landmarks (K >= 468, image pixels) of one tracked face over the frames of a video:
    pose and expression filtered apart (see the module docstring).

    Call it once per frame with the face's landmarks and the frame's timestamp (seconds); pass ``None`` on a
    frame where the face was lost, which resets it so that the next detection starts fresh. The same calling
    convention as :class:`~attnmesh.pipeline.smoothing.LandmarkSmoother`.
    """

    def __init__(self, pose_alpha: float = POSE_ALPHA, pose_beta: float = POSE_BETA,
                 shape_min_gain: float = SHAPE_MIN_GAIN, shape_sigma_cm: float = SHAPE_SIGMA_CM,
                 neighbours: int = SHAPE_NEIGHBOURS) -> None:
        if not 0 < shape_min_gain <= 1 or shape_sigma_cm <= 0 or neighbours < 1:
            raise ValueError("shape_min_gain must be in (0, 1], shape_sigma_cm > 0 and neighbours >= 1")
        self._pose_filter = AlphaBetaFilter(pose_alpha, pose_beta)
        self.shape_min_gain, self.shape_sigma_cm, self.neighbours = shape_min_gain, shape_sigma_cm, neighbours
        self._canonical = load_canonical_face()
        self._basis = ProcrustesBasis(self._canonical.vertices, self._canonical.procrustes_weights)
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new face, or a cut in the video)."""
        self._pose_filter.reset()
        self._lip_filter = AlphaBetaFilter(1.0, 0.0)
        self._eye_filter = AlphaBetaFilter(1.0, 0.0)
        self._reference_rotation: np.ndarray | None = None
        self._shape: np.ndarray | None = None
        self._neighbours: np.ndarray | None = None
        self._open_levels: list[float] = []
        self._last_time: float | None = None

    def __call__(self, landmarks: np.ndarray | None, timestamp: float) -> np.ndarray | None:
        """The stabilised landmarks, float32 with the input's shape; ``None`` (and a reset) for ``None``.

        A timestamp not later than the previous one returns the landmarks unchanged and leaves the state alone;
        a change in the number of landmarks restarts the filters; landmarks too degenerate for a pose fit pass
        through unchanged and reset the state. Raises ValueError for a malformed or non-finite array.
        """
        if landmarks is None:
            self.reset()
            return None
        landmarks = np.asarray(landmarks)
        if landmarks.ndim != 2 or landmarks.shape[0] < NUM_MESH_LANDMARKS or landmarks.shape[1] != 3:
            raise ValueError(f"landmarks must be (K >= {NUM_MESH_LANDMARKS}, 3), got {landmarks.shape}")
        if not np.isfinite(landmarks).all():
            raise ValueError("landmarks must be finite (pass None for a frame without the face)")
        if self._last_time is not None and timestamp <= self._last_time:
            return landmarks.astype(np.float32)
        dt = 1.0 / DEFAULT_FREQUENCY if self._last_time is None else timestamp - self._last_time
        if self._shape is not None and self._shape.shape != landmarks.shape:
            self.reset()
            dt = 1.0 / DEFAULT_FREQUENCY

        points = landmarks.astype(np.float64) * _FLIP
        try:
            transform = self._basis.fit(points[:NUM_MESH_LANDMARKS])
        except ValueError:  # degenerate landmarks: no pose to filter
            self.reset()
            return landmarks.astype(np.float32)
        self._last_time = timestamp
        scale = float(np.linalg.norm(transform[:3, 0]))
        rotation, translation = transform[:3, :3] / scale, transform[:3, 3]
        shape = (points - translation) @ rotation / scale

        if self._reference_rotation is None:
            self._reference_rotation = rotation
        relative = Rotation.from_matrix(rotation @ self._reference_rotation.T).as_rotvec()
        pose = self._pose_filter(np.concatenate([relative, translation, [math.log(scale)]]), dt)
        shape = self._filter_shape(shape, dt)

        rotation = Rotation.from_rotvec(pose[:3]).as_matrix() @ self._reference_rotation
        out = (math.exp(pose[6]) * shape @ rotation.T + pose[3:6]) * _FLIP
        return out.astype(np.float32)

    def _filter_shape(self, shape: np.ndarray, dt: float) -> np.ndarray:
        """The gated low-pass on the pose-free shape (K, 3), canonical centimetres; the lip loops through the
        alpha-beta filter of ``LIP_BANDWIDTH_HZ``, each eye (contour and iris, when K includes the irises)
        through that of ``EYE_BANDWIDTH_HZ``, at the frame rate ``1 / dt``; an eye that blinks passes raw."""
        lips = list(_LIPS)
        eyes, both_eyes = _eye_points(shape.shape[0])
        rate = round(1.0 / dt, 1)
        self._lip_filter.alpha, self._lip_filter.beta = alpha_beta_for_bandwidth(LIP_BANDWIDTH_HZ, rate)
        self._eye_filter.alpha, self._eye_filter.beta = alpha_beta_for_bandwidth(EYE_BANDWIDTH_HZ, rate)
        filtered_lips = self._lip_filter(shape[lips], dt)
        filtered_eyes = self._eye_filter(shape[both_eyes], dt)
        if self._shape is None:
            distances = np.linalg.norm(shape[:, None] - shape[None], axis=-1)
            self._neighbours = np.argsort(distances, axis=1)[:, : self.neighbours]
            self._open_levels = [_opening(shape, gaps, width) for _, gaps, width, _ in _EYES]
            self._shape = shape
            return shape.copy()
        previous = self._shape
        change = shape - previous
        pooled = np.linalg.norm(change, axis=-1)[self._neighbours].mean(1)
        gain = self.shape_min_gain + (1.0 - self.shape_min_gain) * (
            1.0 - np.exp(-0.5 * (pooled / self.shape_sigma_cm) ** 2))
        out = previous + gain[:, None] * change

        out[both_eyes] = filtered_eyes
        for k, (_, gaps, width, _) in enumerate(_EYES):
            now, before = _opening(shape, gaps, width), _opening(previous, gaps, width)
            level = self._open_levels[k]
            if now >= 0.7 * level:
                level += OPEN_LEVEL_RATE * (now - level)
                self._open_levels[k] = level = max(level, 1e-6)
            if now < LID_CLOSED * level or abs(now - before) > LID_JUMP * level:
                out[eyes[k]] = shape[eyes[k]]
        out[lips] = filtered_lips
        self._shape = out
        return out.copy()


#: Smoothing methods by name: ``"stable"`` (:class:`LandmarkStabilizer`, the default of the video commands) and
#: ``"one_euro"`` (MediaPipe's FaceLandmarker one-euro filter, :class:`~attnmesh.pipeline.smoothing.LandmarkSmoother`).
SMOOTHING_METHODS = ("stable", "one_euro")

Smoother = Callable[[np.ndarray | None, float], np.ndarray | None]


def make_smoother(method: str) -> Callable[[], Smoother]:
    """A factory of per-face smoothers for ``method`` (one of :data:`SMOOTHING_METHODS`)."""
    if method == "stable":
        return LandmarkStabilizer
    if method == "one_euro":
        from .smoothing import LandmarkSmoother

        return LandmarkSmoother
    raise ValueError(f"smoothing must be one of {SMOOTHING_METHODS} or None, got {method!r}")


class MultiFaceStabilizer(MultiFaceSmoother):
    """One smoother per tracked face, keyed by a track id that the caller keeps stable across frames (for
    example :attr:`attnmesh.Face.track_id`). A face missing from a frame is dropped and starts fresh if its id
    comes back (the bookkeeping of :class:`~attnmesh.pipeline.smoothing.MultiFaceSmoother`). ``method``:
    ``"stable"`` (default) or ``"one_euro"``, see :data:`SMOOTHING_METHODS`.
    """

    def __init__(self, method: str = "stable") -> None:
        self._factory = make_smoother(method)
        self._smoothers = {}
