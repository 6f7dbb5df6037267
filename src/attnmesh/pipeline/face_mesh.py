"""``FaceMesh``: MediaPipe-compatible face landmarker (detector -> ROI crop -> mesh model -> tracking).

Switching from MediaPipe is a change of import::

    import attnmesh
    with attnmesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as fm:
        faces = fm.process(rgb)          # list[Face]; faces[0].landmarks: (478, 3) image pixels

Unlike ``mp.solutions.face_mesh``, landmarks are returned in image pixels (x, y) with z in pixels on the
same scale as x (relative depth, smaller is closer), not normalized to [0, 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..geometry.roi import Roi
from ..registry import get_model_spec
from ..results import Detection, Face
from ..runtime.base import LandmarkRunner
from ..weights.readout import Readout68, load_readout
from .tracking import RoiDeadZone, associate, roi_from_detection, roi_from_landmarks

if TYPE_CHECKING:
    import torch


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous RGB uint8 HxWx3 array, or raise ValueError with a clear message.

    Grayscale, RGBA and 16-bit arrays are converted (see :func:`attnmesh.io.as_rgb_uint8`)."""
    from ..io import as_rgb_uint8

    return as_rgb_uint8(image)


class FaceMesh:
    """Face landmarks for images and video, with the options of ``mp.solutions.face_mesh.FaceMesh``.

    Args:
        static_image_mode: detect on every image (True) or track from the previous frame's landmarks,
            running the detector only while fewer than ``max_num_faces`` faces are tracked (False).
        max_num_faces: most faces returned per image (an int >= 1).
        refine_landmarks: 478 landmarks from the Attention Mesh (lips, eyes, irises refined) if True,
            468 from the base mesh model if False.
        min_detection_confidence: detector score threshold in [0, 1].
        min_tracking_confidence: face presence threshold in [0, 1]; a face below it is dropped (and, in
            video mode, no longer tracked).
        device: torch device for the networks ("cpu", "cuda", ...).
        model: the landmark model: a registered name (:func:`attnmesh.list_models`; default
            ``"attention_mesh"``, the Attention Mesh, or face_landmark when ``refine_landmarks`` is False, as
            MediaPipe), e.g. ``"cascade"`` (face_landmark + the iris model on eye crops, the paper's baseline),
            ``"attention_mesh_300w"`` (fine-tuned on 300-W, docs/model_card_300w.md) or
            ``"face_transformer_xs"`` (the distilled face transformer, docs/model_card_face_transformer.md); old
            spellings (``"attention"``, ``"transformer"``) are aliases. Or a ready runner object
            (:class:`~attnmesh.runtime.base.LandmarkRunner`, e.g. from
            :func:`attnmesh.runtime.make_landmark_runner`), used as given (``backend``, ``num_threads`` and
            ``refine_landmarks`` then apply to the detector only).
        backend: ``"openvino"`` (the default on CPU; graphs built from the shipped weights on first use into a
            cache folder), ``"onnxruntime"`` (``pip install "attnmesh[onnx]"``), ``"torch"`` (the PyTorch
            modules; any device) or ``"auto"`` (OpenVINO on CPU when installed, else ONNX Runtime, else
            torch); see :mod:`attnmesh.runtime`.
        num_threads: CPU threads of each network call on the OpenVINO and ONNX Runtime backends (default:
            ``$ATTNMESH_THREADS``, else 1: :data:`attnmesh.runtime.base.DEFAULT_NETWORK_THREADS` says why);
            PyTorch follows ``torch.set_num_threads``. Several ``FaceMesh`` objects in as many worker processes
            keep several cores busy on a photo collection (``attnmesh images`` does this).
        stabilize_roi: video mode only, not in MediaPipe: hold each tracked face's crop still while the ROI
            from its landmarks moves less than the landmark noise (:class:`~attnmesh.pipeline.tracking.RoiDeadZone`),
            which lowers the jitter of the raw landmarks. False (the default) crops exactly as MediaPipe does.
        smoothing: video mode only: ``None`` (the default, raw landmarks as MediaPipe's FaceMesh), ``"stable"``
            (pose and expression filtered apart, :class:`~attnmesh.pipeline.stabilizer.LandmarkStabilizer`) or
            ``"one_euro"`` (MediaPipe's FaceLandmarker filter); each tracked face is smoothed apart and the
            returned ``Face.landmarks`` are the smoothed ones (tracking still uses the raw landmarks). Pass the
            frame's timestamp to :meth:`process`.

    Every argument is checked here (:mod:`attnmesh.options`): TypeError for a wrong type (e.g.
    ``max_num_faces=2.5``), ValueError for a value out of range or an unknown name, RuntimeError for a device or
    backend this machine does not have (``device="cuda"`` without CUDA, ``backend="onnxruntime"`` without ONNX
    Runtime).
    """

    def __init__(self, static_image_mode: bool = False, max_num_faces: int = 1, refine_landmarks: bool = True,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 device: str | torch.device = "cpu", model: str | LandmarkRunner = "attention_mesh",
                 backend: str = "auto",
                 num_threads: int | None = None, stabilize_roi: bool = False,
                 smoothing: str | None = None) -> None:
        from ..options import check_backend, check_count, check_device, check_flag, check_unit

        static_image_mode = check_flag("static_image_mode", static_image_mode)
        max_num_faces = check_count("max_num_faces", max_num_faces)
        refine_landmarks = check_flag("refine_landmarks", refine_landmarks)
        min_detection_confidence = check_unit("min_detection_confidence", min_detection_confidence)
        min_tracking_confidence = check_unit("min_tracking_confidence", min_tracking_confidence)
        if num_threads is not None:
            num_threads = check_count("num_threads", num_threads)
        runner = None if isinstance(model, str) else model
        if runner is not None and not isinstance(runner, LandmarkRunner):
            raise TypeError("model must be a registered model name or a LandmarkRunner (input_size, "
                            f"num_landmarks, predict_many); got {type(model).__name__}")
        spec = get_model_spec(model) if runner is None else None
        check_device(device)
        check_backend(backend)
        self.static_image_mode = static_image_mode
        self.max_num_faces = max_num_faces
        self.refine_landmarks = refine_landmarks
        self.min_tracking_confidence = min_tracking_confidence
        from ..runtime import make_face_detector, make_landmark_runner, resolve_backend

        options = {} if num_threads is None or resolve_backend(backend, device) == "torch" else \
            {"threads": int(num_threads)}
        self.detector = make_face_detector(min_detection_confidence, device=device, backend=backend, **options)
        if spec is not None:
            name = spec.name
            if not refine_landmarks and spec.name == "attention_mesh":
                name = "face_landmark"  # as MediaPipe: refine_landmarks=False runs the base mesh
            elif not refine_landmarks and spec.name != "face_landmark":
                raise ValueError(f"model={model!r} gives {spec.num_landmarks} refined landmarks; it needs "
                                 "refine_landmarks=True (model='face_landmark' is the 468-point mesh)")
            runner = make_landmark_runner(name, backend=backend, device=device, **options)
        self.landmark_runner: LandmarkRunner = runner
        # the 68-point read-out of Face.landmarks68: the model's shipped one (a runner object: the fixed map)
        self.readout68 = Readout68("fixed") if spec is None else load_readout(get_model_spec(name).weights[0])
        if stabilize_roi and static_image_mode:
            raise ValueError("stabilize_roi needs video mode (static_image_mode=False)")
        self._roi_dead_zone = RoiDeadZone() if stabilize_roi else None
        if smoothing is not None and static_image_mode:
            raise ValueError("smoothing needs video mode (static_image_mode=False)")
        self._smoother = None
        if smoothing is not None:
            from .stabilizer import MultiFaceStabilizer  # SciPy: imported only when asked for

            self._smoother = MultiFaceStabilizer(smoothing)
        self._frames = 0
        self._tracked: list[tuple[Roi, int]] = []  # video mode: next frame's ROI and track id of each face
        self._next_track_id = 0

    # -- context manager, as the MediaPipe solution ------------------------------------------------------

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget tracked faces (start of a new video); track ids start again at 0."""
        self._tracked = []
        self._next_track_id = 0
        self._frames = 0
        if self._smoother is not None:
            self._smoother.reset()

    # -- processing ------------------------------------------------------------------------------------

    def process(self, image: np.ndarray, timestamp: float | None = None) -> list[Face]:
        """Faces in one RGB image (HxWx3 uint8; grayscale, RGBA and 16-bit are converted). In video mode,
        call it on consecutive frames; ``timestamp`` (seconds, increasing) is the frame's time for
        ``smoothing`` (default: the frame count at 30 frames per second)."""
        image = check_image(image)
        height, width = image.shape[:2]
        candidates: list[tuple[Roi, Detection | None, int | None]] = []
        if self.static_image_mode or len(self._tracked) < self.max_num_faces:
            detections = self.detector.process(image)[: self.max_num_faces]
            candidates = [(roi_from_detection(d.box, d.keypoints), d, None) for d in detections]
        if self.static_image_mode:
            return self._faces([(image, candidates)])[0]
        merged = associate([(roi, (det, None)) for roi, det, _ in candidates],
                           [(roi, (None, track_id)) for roi, track_id in self._tracked])
        candidates = []
        for roi, (det, track_id) in merged:
            if track_id is None:
                track_id, self._next_track_id = self._next_track_id, self._next_track_id + 1
            candidates.append((roi, det, track_id))
        faces = self._faces([(image, candidates)])[0]
        self._tracked = [(self._next_roi(f, (width, height)), f.track_id) for f in faces]
        self._frames += 1
        if self._smoother is not None:
            from .stabilizer import DEFAULT_FREQUENCY

            time = (self._frames - 1) / DEFAULT_FREQUENCY if timestamp is None else float(timestamp)
            smoothed = self._smoother({f.track_id: f.landmarks for f in faces}, time)
            faces = [dataclasses.replace(f, landmarks=smoothed[f.track_id]) for f in faces]
        return faces

    def _next_roi(self, face: Face, image_size: tuple[int, int]) -> Roi:
        """The ROI to crop ``face`` from in the next frame: from its landmarks, held by the dead zone if
        ``stabilize_roi``."""
        roi = roi_from_landmarks(face.landmarks, image_size)
        return roi if self._roi_dead_zone is None else self._roi_dead_zone(face.roi, roi)

    def process_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Static-mode faces for many images: one detector pass and one landmark pass for all of them.
        Gives the same result as :meth:`process` in static mode, image by image."""
        images = [check_image(im) for im in images]
        detections = self.detector.process_batch(images)
        return self._faces([(image, [(roi_from_detection(d.box, d.keypoints), d, None)
                                     for d in dets[: self.max_num_faces]])
                            for image, dets in zip(images, detections)])

    def _faces(self, work: Sequence[tuple[np.ndarray, Sequence[tuple[Roi, Detection | None, int | None]]]]
               ) -> list[list[Face]]:
        """Run the landmark model on every (roi, detection, track id) candidate of every image at once;
        keep the faces whose presence reaches ``min_tracking_confidence``."""
        items = [(image, roi) for image, candidates in work for roi, _, _ in candidates]
        points, scores = self.landmark_runner.predict_many(items)
        out: list[list[Face]] = []
        k = 0
        for _, candidates in work:
            faces = []
            for roi, det, track_id in candidates:
                if scores[k] >= self.min_tracking_confidence:
                    faces.append(Face(points[k], float(scores[k]), roi, det, track_id, self.readout68))
                k += 1
            out.append(faces)
        return out
