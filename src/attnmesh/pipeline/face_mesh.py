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

import numpy as np
import torch

from ..geometry.roi import Roi, crop_image, project_to_image
from ..models.attention_mesh import INPUT_SIZE, AttentionMesh
from ..models.face_landmark import FaceLandmarkModel
from ..topology import NUM_MESH_LANDMARKS, NUM_REFINED_LANDMARKS
from ..weights import load_model_weights
from .cascade import CascadeLandmarkModel
from .results import Detection, Face
from .tensors import crops_to_tensor
from .stabilizer import DEFAULT_FREQUENCY, MultiFaceStabilizer
from .tracking import RoiDeadZone, associate, roi_from_detection, roi_from_landmarks


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous RGB uint8 HxWx3 array, or raise ValueError with a clear message.

    Grayscale, RGBA and 16-bit arrays are converted (see :func:`attnmesh.io.as_rgb_uint8`)."""
    from ..io import as_rgb_uint8

    return as_rgb_uint8(image)


#: Shipped fine-tuned Attention Mesh weights selectable as ``FaceMesh(model=...)`` (docs/model_card_300w.md).
FINE_TUNED_MODELS = ("attention_mesh_300w",)


class LandmarkModel:
    """A landmark network with its shipped weights, run on batches of ROI crops.

    ``refine=True``: the Attention Mesh (478 points); ``refine=False``: MediaPipe's face_landmark model
    (468 points), which is what ``mp.solutions.face_mesh`` runs with ``refine_landmarks=False``.
    """

    input_size = INPUT_SIZE

    def __init__(self, refine: bool = True, device: str | torch.device = "cpu",
                 weights: str = "attention_mesh") -> None:
        self.refine = refine
        self.num_landmarks = NUM_REFINED_LANDMARKS if refine else NUM_MESH_LANDMARKS
        self.device = torch.device(device)
        net = AttentionMesh() if refine else FaceLandmarkModel()
        name = weights if refine else "face_landmark"
        self.net = load_model_weights(net, name).eval().to(self.device)

    def crop(self, image: np.ndarray, rois: Sequence[Roi]) -> np.ndarray:
        """(N, 192, 192, 3) uint8 crops of ``rois`` (bilinear, replicated border, as MediaPipe)."""
        return self.crop_many([(image, roi) for roi in rois])

    def crop_many(self, items: Sequence[tuple[np.ndarray, Roi]]) -> np.ndarray:
        """:meth:`crop` for ``(image, roi)`` pairs from any number of images."""
        out = np.empty((len(items), self.input_size, self.input_size, 3), np.uint8)
        for i, (image, roi) in enumerate(items):
            out[i] = crop_image(image, roi, self.input_size, border="replicate")
        return out

    @torch.inference_mode()
    def run(self, crops: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, K, 3) in crop pixels (192-space) and presence scores (N,) for uint8 NHWC crops
        (or a float NCHW tensor in [0, 1])."""
        if len(crops) == 0:
            return np.zeros((0, self.num_landmarks, 3), np.float32), np.zeros((0,), np.float32)
        out = self.net(crops_to_tensor(crops, self.device))
        points = out.landmarks if self.refine else out.mesh
        return points.float().cpu().numpy(), torch.sigmoid(out.face_logit).float().cpu().numpy()

    def predict(self, image: np.ndarray, rois: Sequence[Roi]) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, K, 3) in image pixels (z on the scale of x) and presence scores (N,) for the face
        ROIs ``rois`` of RGB uint8 ``image``: crop, run, project back."""
        return self.predict_many([(image, roi) for roi in rois])

    def predict_many(self, items: Sequence[tuple[np.ndarray, Roi]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` for ``(image, roi)`` pairs from any number of images, in one network pass."""
        points, scores = self.run(self.crop_many(items))
        for p, (_, roi) in zip(points, items):
            p[:] = project_to_image(p, roi, self.input_size)
        return points, scores


class FaceMesh:
    """Face landmarks for images and video, with the options of ``mp.solutions.face_mesh.FaceMesh``.

    Args:
        static_image_mode: detect on every image (True) or track from the previous frame's landmarks,
            running the detector only while fewer than ``max_num_faces`` faces are tracked (False).
        max_num_faces: most faces returned per image.
        refine_landmarks: 478 landmarks from the Attention Mesh (lips, eyes, irises refined) if True,
            468 from the base mesh model if False.
        min_detection_confidence: detector score threshold in [0, 1].
        min_tracking_confidence: face presence threshold in [0, 1]; a face below it is dropped (and, in
            video mode, no longer tracked).
        device: torch device for the networks ("cpu", "cuda", ...).
        model: the landmark model: ``"attention"`` (the Attention Mesh, or face_landmark when
            ``refine_landmarks`` is False, as MediaPipe) or ``"cascade"`` (face_landmark followed by the iris
            model on eye crops, the baseline of the paper; 478 points, needs ``refine_landmarks=True``), or
            ``"attention_mesh_300w"`` (the Attention Mesh fine-tuned on 300-W, torch backend; see
            docs/model_card_300w.md), or ``"transformer"`` (the distilled face transformer, 478 points, torch
            or ONNX Runtime; less accurate than the Attention Mesh, see docs/model_card_face_transformer.md).
        backend: ``"torch"`` (the PyTorch modules), ``"onnxruntime"`` (``pip install "attnmesh[onnx]"``; the
            ONNX files are exported from the shipped weights on first use into a cache folder) or ``"auto"``
            (ONNX Runtime on CPU when it is installed); see :mod:`attnmesh.backends`.
        stabilize_roi: video mode only, not in MediaPipe: hold each tracked face's crop still while the ROI
            from its landmarks moves less than the landmark noise (:class:`~attnmesh.pipeline.tracking.RoiDeadZone`),
            which lowers the jitter of the raw landmarks. False (the default) crops exactly as MediaPipe does.
        smoothing: video mode only: ``None`` (the default, raw landmarks as MediaPipe's FaceMesh), ``"stable"``
            (pose and expression filtered apart, :class:`~attnmesh.pipeline.stabilizer.LandmarkStabilizer`) or
            ``"one_euro"`` (MediaPipe's FaceLandmarker filter); each tracked face is smoothed apart and the
            returned ``Face.landmarks`` are the smoothed ones (tracking still uses the raw landmarks). Pass the
            frame's timestamp to :meth:`process`.
    """

    def __init__(self, static_image_mode: bool = False, max_num_faces: int = 1, refine_landmarks: bool = True,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 device: str | torch.device = "cpu", model: str = "attention", backend: str = "auto",
                 stabilize_roi: bool = False, smoothing: str | None = None) -> None:
        if max_num_faces < 1:
            raise ValueError("max_num_faces must be at least 1")
        for name, v in (("min_detection_confidence", min_detection_confidence),
                        ("min_tracking_confidence", min_tracking_confidence)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        self.static_image_mode = static_image_mode
        self.max_num_faces = max_num_faces
        self.refine_landmarks = refine_landmarks
        self.min_tracking_confidence = min_tracking_confidence
        from ..backends import make_cascade_model, make_face_detector, make_landmark_model

        self.detector = make_face_detector(min_detection_confidence, device=device, backend=backend)
        if model in FINE_TUNED_MODELS:  # shipped fine-tuned Attention Mesh weights (torch only)
            if not refine_landmarks:
                raise ValueError(f"model={model!r} is an Attention Mesh; it needs refine_landmarks=True")
            if backend == "onnxruntime":
                raise ValueError(f"model={model!r} runs on the torch backend only")
            self.landmark_model = LandmarkModel(refine=True, device=device, weights=model)
        elif model == "attention":
            self.landmark_model: LandmarkModel | CascadeLandmarkModel = make_landmark_model(
                refine=refine_landmarks, device=device, backend=backend)
        elif model == "cascade":
            if not refine_landmarks:
                raise ValueError("model='cascade' gives 478 refined landmarks; it needs refine_landmarks=True")
            self.landmark_model = make_cascade_model(device=device, backend=backend)
        elif model == "transformer":  # distilled face transformer (docs/model_card_face_transformer.md)
            if not refine_landmarks:
                raise ValueError("model='transformer' gives 478 landmarks; it needs refine_landmarks=True")
            from ..transformer.runner import make_transformer_model

            self.landmark_model = make_transformer_model(device=device, backend=backend)
        else:
            raise ValueError(f"model must be 'attention', 'cascade', 'transformer' or one of {FINE_TUNED_MODELS}, "
                             f"got {model!r}")
        if stabilize_roi and static_image_mode:
            raise ValueError("stabilize_roi needs video mode (static_image_mode=False)")
        self._roi_dead_zone = RoiDeadZone() if stabilize_roi else None
        if smoothing is not None and static_image_mode:
            raise ValueError("smoothing needs video mode (static_image_mode=False)")
        self._smoother = MultiFaceStabilizer(smoothing) if smoothing is not None else None
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
        time = self._frames / DEFAULT_FREQUENCY if timestamp is None else float(timestamp)
        self._frames += 1
        if self._smoother is not None:
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
        points, scores = self.landmark_model.predict_many(items)
        out: list[list[Face]] = []
        k = 0
        for _, candidates in work:
            faces = []
            for roi, det, track_id in candidates:
                if scores[k] >= self.min_tracking_confidence:
                    faces.append(Face(points[k], float(scores[k]), roi, det, track_id))
                k += 1
            out.append(faces)
        return out
