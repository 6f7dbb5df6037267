"""Distillation data for the face transformer: teacher outputs cached once, cheap augmented batches after.

**Cache** (:func:`build_cache`, ``python -m research.face_transformer.data --out out/ft_cache``): for every face of
every source, the teacher (the imported Attention Mesh, on ONNX Runtime) is run as in tracking: once on a
first ROI (the detector's, or the 68-point annotation box for 300-W), then on ``roi_from_landmarks`` of that
result. That second ROI is the face's ROI; the cache holds

* ``crops.npy``: (N, 160, 160, 3) uint8, the ROI enlarged x1.25 (context for augmentation): the ROI itself is
  the central 128x128 square, so the un-augmented student input is ``crops[:, 16:144, 16:144]``;
* ``teacher.npy``: (N, 478, 3) float32, the teacher's second-pass landmarks in the 160-crop's pixels
  (z on x's scale); ``score.npy``: the teacher's face-presence probability;
* ``gt68.npy``: (N, 68, 2) 300-W annotations in the same frame (NaN elsewhere);
* views (:func:`_items_for_image`): ``views.npy`` (N, V, 4) crops of each face as (centre x, centre y, side,
  rotation) in the cache crop's pixels — row 0 the face ROI, row 1 the detector's ROI of that face (what
  ``FaceMesh`` crops on a still image; 300-W: the detection overlapping the annotation), rows 2.. random
  perturbations (``VIEW_*``); ``view_teacher.npy`` (N, V, 478, 3) the teacher's answer on each view's own
  crop, ``view_teacher_flip.npy`` its answer on the mirrored crop (mirrored back), ``view_score.npy`` (N, V)
  its presence score there; the cache frame as ``teacher.npy``. Negatives have row 0 only (NaN rows);
* ``meta.json``: per face its source, image key, split (``train`` / ``val``), identity (YTF only) and
  expression normalisation.

**Splits** (all by file name, fixed hashes, nothing random):

* 300w-train: :func:`attnmesh.train.datasets.split_of` (the training issue's split: sha256, 15% ``val``);
* YTF: by *identity* (the person name in the file name, ``Abdullah_Gul_11.jpg`` -> ``Abdullah_Gul``):
  ``sha1(identity) % 10 == 0`` is ``val`` (about 10% of the 347 people), never trained on by any head;
* photos: all ``val`` (the landmark benchmark's held-out photos);
* videos: ``talking-d14.mp4`` and ``multi-face-640x360.mp4`` are ``val`` (every frame), the other five
  videos give training frames (every ``VIDEO_STEP``-th frame, all detected faces);
* negatives (face-presence head): one random non-face ROI per training video frame (IoU < 0.05 with every
  detected face), labelled with the teacher's own presence score.

**Expression labels** (:func:`expression_measures`): derived from the teacher's landmarks, nothing else —
mouth opening = inner-lip gap (13-14) / inter-ocular distance (33-263); "smile" = mouth width (61-291) / IOD
(a width proxy, not a smile classifier); eye openness = mean over both eyes of lid gap / eye width
(159-145 over 33-133, 386-374 over 362-263). Each is mapped to [0, 1] by the 2nd and 98th percentiles of the
training faces (clipped); "eyes closed" is 1 - normalised openness.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from attnmesh.geometry.roi import Roi, box_iou, crop_image, normalize_radians, project_to_image

CACHE_CROP = 160
CONTEXT = 1.25  # cache crop side / ROI side
TEACHER_SIZE = 192
VIDEO_STEP = 5
VAL_VIDEOS = ("talking-d14.mp4", "multi-face-640x360.mp4")
MAX_FACES = 4
YTF_VAL_MOD = 10
# Sources of the synthetic items made from cached faces (research.face_transformer.synthetic): no identity, kept out
# of the validation mean (each reported apart) and of the heads' refit.
COMPOSITE_SOURCE = "composite"  # a second face pasted beside the face (research.face_transformer.composite)
ROTATED_SOURCE = "rotated"  # the face seen through ROIs turned far from upright (research.face_transformer.rotated)
DEGRADED_SOURCE = "degraded"  # the face at low resolution or squeezed (research.face_transformer.degraded)
MORPHED_SOURCE = "morphed"  # the face warped toward another face's shape (research.face_transformer.morphed)
SYNTHETIC_SOURCES = (COMPOSITE_SOURCE, ROTATED_SOURCE, DEGRADED_SOURCE, MORPHED_SOURCE)
RANDOM_VIEWS = 3  # perturbed ROIs per face, each labelled by the teacher on its own crop
# Ranges of the random views, in the face ROI's frame (fractions of its side, radians), drawn uniformly. They
# cover how the detector's ROI sits relative to the landmark ROI (measured on YTF and video faces: log scale
# -0.07 +- 0.04, rotation 0.00 +- 0.05, shift x 0.00 +- 0.02, y +0.03 +- 0.02) and stay inside the cached
# context (a view's rotated corners reach at most 0.62 of the ROI side from the centre; the crop holds 0.625).
VIEW_LOG_SCALE = (-0.17, 0.0)
VIEW_ROTATION = (-0.12, 0.12)
VIEW_SHIFT_X = (-0.04, 0.04)
VIEW_SHIFT_Y = (-0.02, 0.06)


def ytf_identity(name: str) -> str:
    """``Abdullah_Gul_11.jpg`` -> ``Abdullah_Gul``."""
    stem = Path(name).stem
    head, _, tail = stem.rpartition("_")
    return head if tail.isdigit() and head else stem


def ytf_split(identity: str) -> str:
    return "val" if int(hashlib.sha1(identity.encode()).hexdigest(), 16) % YTF_VAL_MOD == 0 else "train"


def teacher_to_cache(points192: np.ndarray) -> np.ndarray:
    """Teacher landmarks in the ROI's 192-space -> the cache crop's pixels (ROI x1.25, 160 px)."""
    out = np.array(points192, np.float32, copy=True)
    k = CACHE_CROP / (TEACHER_SIZE * CONTEXT)
    out[..., :2] = (out[..., :2] - TEACHER_SIZE / 2) * k + CACHE_CROP / 2
    out[..., 2] *= k
    return out


def image_to_cache(points: np.ndarray, roi: Roi) -> np.ndarray:
    """Image-pixel points (K, 2) -> the cache crop's pixels for ROI ``roi``."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    d = np.asarray(points, np.float64)[:, :2] - (roi.center_x, roi.center_y)
    rot = d @ np.array([[c, -s], [s, c]])  # R^T applied to row vectors
    return (rot * CACHE_CROP / (roi.size * CONTEXT) + CACHE_CROP / 2).astype(np.float32)


def view_in_cache(view: Roi, roi: Roi) -> np.ndarray:
    """The image-pixel ROI ``view`` as (centre x, centre y, side, rotation) in the cache crop of face ROI ``roi``
    (cache pixels; rotation relative to the face ROI's, radians)."""
    c = image_to_cache(np.array([[view.center_x, view.center_y]]), roi)[0]
    side = view.size * CACHE_CROP / (roi.size * CONTEXT)
    return np.array([c[0], c[1], side, normalize_radians(view.rotation - roi.rotation)], np.float32)


def random_view(roi: Roi, rng: np.random.Generator) -> Roi:
    """A perturbed copy of face ROI ``roi`` (ranges ``VIEW_*``), in image pixels."""
    u, v = rng.uniform(*VIEW_SHIFT_X) * roi.size, rng.uniform(*VIEW_SHIFT_Y) * roi.size
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    return Roi(roi.center_x + c * u - s * v, roi.center_y + s * u + c * v,
               roi.size * math.exp(rng.uniform(*VIEW_LOG_SCALE)), roi.rotation + rng.uniform(*VIEW_ROTATION))


def crop_points_to_cache(points192: np.ndarray, crop_roi: Roi, roi: Roi) -> np.ndarray:
    """Teacher landmarks (478, 3) in the 192-space of image ROI ``crop_roi`` -> the cache crop's pixels of face
    ROI ``roi`` (z on x's scale)."""
    img = project_to_image(points192, crop_roi, TEACHER_SIZE)
    out = np.empty((len(img), 3), np.float32)
    out[:, :2] = image_to_cache(img[:, :2], roi)
    out[:, 2] = img[:, 2] * CACHE_CROP / (roi.size * CONTEXT)
    return out


IDENTITY_VIEW = np.array([CACHE_CROP / 2, CACHE_CROP / 2, CACHE_CROP / CONTEXT, 0.0], np.float32)
DETECTOR_VIEW = 1  # row of the views arrays that holds the detector's ROI of the face


def expression_measures(points: np.ndarray) -> np.ndarray:
    """(N, 478, 2+) landmarks (any frame) -> (N, 3) raw measures: mouth opening / IOD, mouth width / IOD,
    eye openness (lid gap / eye width, mean of both eyes)."""
    p = np.asarray(points, np.float64)[..., :2]

    def dist(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(p[:, a] - p[:, b], axis=-1)

    iod = dist(33, 263)
    mouth_open = dist(13, 14) / iod
    mouth_width = dist(61, 291) / iod
    openness = 0.5 * (dist(159, 145) / dist(33, 133) + dist(386, 374) / dist(362, 263))
    return np.stack([mouth_open, mouth_width, openness], -1)


def expression_labels(measures: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Raw measures -> targets in [0, 1] (mouth open, smile, eyes closed)."""
    x = np.clip((measures - lo) / (hi - lo), 0.0, 1.0)
    x[:, 2] = 1.0 - x[:, 2]
    return x.astype(np.float32)


# -- building the cache ------------------------------------------------------------------------------------


class _Teacher:
    """Detector + Attention Mesh on ONNX Runtime (same outputs as the torch modules, tested in test_export)."""

    def __init__(self, threads: int = 1) -> None:
        try:
            from attnmesh.runtime.onnxruntime import OrtFaceDetector, OrtLandmarkRunner

            self.detector = OrtFaceDetector(0.5, threads=threads)
            self.mesh = OrtLandmarkRunner("attention_mesh", threads=threads)
        except ImportError:
            from attnmesh.runtime.detector import FaceDetector
            from attnmesh.runtime.pytorch import TorchLandmarkRunner

            self.detector = FaceDetector(0.5)
            self.mesh = TorchLandmarkRunner("attention_mesh")

    def detect(self, image: np.ndarray) -> list[Roi]:
        from attnmesh.pipeline.tracking import roi_from_detection

        return [roi_from_detection(d.box, d.keypoints) for d in self.detector.process(image)[:MAX_FACES]]

    def two_pass(self, image: np.ndarray, rois: list[Roi]) -> list[tuple[Roi, np.ndarray, float]]:
        """(second ROI, second-pass landmarks in 192-space, presence) per first ROI."""
        from attnmesh.geometry.roi import project_to_image
        from attnmesh.pipeline.tracking import roi_from_landmarks

        if not rois:
            return []
        size = (image.shape[1], image.shape[0])
        pts, _ = self.mesh.run(self.mesh.crop(image, rois))
        rois2 = [roi_from_landmarks(project_to_image(p, r, TEACHER_SIZE), size) for p, r in zip(pts, rois)]
        pts2, score2 = self.mesh.run(self.mesh.crop(image, rois2))
        return [(r, p, float(s)) for r, p, s in zip(rois2, pts2, score2)]


@dataclass
class _Item:
    crop: np.ndarray
    teacher: np.ndarray
    score: float
    gt68: np.ndarray | None
    meta: dict
    views: np.ndarray | None = None  # (V, 4) (cx, cy, side, rotation) in cache pixels; row 0 the face ROI
    view_teacher: np.ndarray | None = None  # (V, 478, 3) the teacher on each view's own crop, cache pixels
    view_score: np.ndarray | None = None  # (V,)
    view_teacher_flip: np.ndarray | None = None  # (V, 478, 3) the teacher on each view's mirrored crop, see below


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def mirrored_answers(teacher: _Teacher, crops: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """(N, 478, 3) the teacher's landmarks on each mirrored 192-px crop of ``crops`` (N, 192, 192, 3), mapped
    back into the unmirrored crop's pixels (x -> size - x: pixel i spans [i, i + 1)) and into the unmirrored
    face's landmark order (``mirror``, :func:`attnmesh.eval.maps.mirror_478`)."""
    fp, _ = teacher.mesh.run(np.ascontiguousarray(crops[:, :, ::-1]))
    fp[..., 0] = TEACHER_SIZE - fp[..., 0]
    return fp[:, mirror]


def _items_for_image(teacher: _Teacher, image: np.ndarray, first: list[Roi], meta: dict,
                     gt68: np.ndarray | None = None, rng: np.random.Generator | None = None,
                     detected: list[Roi | None] | None = None, random_views: int = RANDOM_VIEWS) -> list[_Item]:
    """One cache item per first ROI. Views (when ``rng`` is given): row 0 the face (second-pass) ROI with the
    second-pass landmarks; row 1 the ROI a detector gives for this face (``detected[j]``, else the first ROI)
    with the teacher's first-pass answer on it; then ``random_views`` perturbed ROIs, each with the teacher's
    answer on its own crop. The teacher is not equivariant to its crop (its first and second passes differ by
    ~1.7% IOD; its answer on a mirrored crop, mirrored back, differs from its answer by ~2.0%), so a view's
    labels are the teacher's output on that exact crop, not a transformed copy; ``view_teacher_flip`` holds its
    answer on the mirrored crop, mirrored back into the unmirrored frame and landmark order (so that
    :func:`make_batch`'s mirroring of an input gives back exactly the teacher's answer on it)."""
    from attnmesh.topology import mirror_478

    mirror = mirror_478() if rng is not None else None
    out = []
    for j, (roi, pts, score) in enumerate(teacher.two_pass(image, first)):
        big = Roi(roi.center_x, roi.center_y, roi.size * CONTEXT, roi.rotation)
        crop = crop_image(image, big, CACHE_CROP, border="replicate")
        g = image_to_cache(gt68, roi) if gt68 is not None else None
        item = _Item(crop, teacher_to_cache(pts), score, g,
                     {**meta, "face": j, "roi": [float(v) for v in roi.as_tuple()]})
        if rng is not None:
            det = detected[j] if detected is not None and detected[j] is not None else first[j]
            views = [roi, det] + [random_view(roi, rng) for _ in range(random_views)]
            crops = teacher.mesh.crop(image, views)
            vp, vs = teacher.mesh.run(crops[1:])
            fp = mirrored_answers(teacher, crops, mirror)
            item.views = np.stack([IDENTITY_VIEW] + [view_in_cache(v, roi) for v in views[1:]])
            item.view_teacher = np.stack([item.teacher] + [crop_points_to_cache(p, v, roi)
                                                           for p, v in zip(vp, views[1:])])
            item.view_teacher_flip = np.stack([crop_points_to_cache(p, v, roi) for p, v in zip(fp, views)])
            item.view_score = np.array([score, *vs], np.float32)
        out.append(item)
    return out


def _negative(image: np.ndarray, faces: list[Roi], rng: np.random.Generator) -> Roi | None:
    h, w = image.shape[:2]
    for _ in range(20):
        side = rng.uniform(0.15, 0.5) * min(h, w)
        cx, cy = rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2)
        roi = Roi(float(cx), float(cy), float(side), float(rng.uniform(-0.3, 0.3)))
        if all(box_iou(roi.box(), f.box()) < 0.05 for f in faces):
            return roi
    return None


def _video_frames(path: Path, step: int):
    cap = cv2.VideoCapture(str(path))
    k = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if k % step == 0:
            yield k, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        k += 1
    cap.release()


def collect(data_root: Path, sources: tuple[str, ...] = ("300w", "ytf", "photos", "videos"),
            limit: int | None = None, video_step: int = VIDEO_STEP, log=print, threads: int = 1,
            views: bool = True, random_views: int = RANDOM_VIEWS) -> list[_Item]:
    """Teacher-labelled faces of ``data_root`` (``../shared/data``); ``limit`` caps faces per source (tests);
    ``views``: also label the detector's ROI and ``random_views`` perturbed ROIs of every face (see
    :func:`_items_for_image`)."""
    from attnmesh.train.datasets import read_pts, roi_from_68, split_of, split_key

    if random_views < 0:
        raise ValueError(f"random_views must be >= 0, got {random_views}")
    data_root = Path(data_root)
    teacher = _Teacher(threads)
    rng = np.random.default_rng(0)
    view_rng = np.random.default_rng(1) if views else None
    items: list[_Item] = []

    def full(n: int) -> bool:
        return limit is not None and n >= limit

    t0 = time.perf_counter()
    if "300w" in sources:
        n = 0
        for pts_path in sorted((data_root / "300w-train").rglob("*.pts")):
            if full(n):
                break
            img_path = pts_path.with_suffix(".jpg") if pts_path.with_suffix(".jpg").is_file() else pts_path.with_suffix(".png")
            image = _read_rgb(img_path)
            if image is None:
                continue
            p68 = read_pts(pts_path)
            key = split_key(img_path)
            roi = roi_from_68(p68, (image.shape[1], image.shape[0]))
            # the detector's ROI of this face (the one overlapping the annotation's box best, IoU >= 0.3)
            found = [(box_iou(d.box(), roi.box()), d) for d in teacher.detect(image)] if views else []
            best = max(found, key=lambda t: t[0], default=(0.0, None))
            new = _items_for_image(teacher, image, [roi], {"source": "300w", "key": key, "split": split_of(key)}, p68,
                                   view_rng, [best[1] if best[0] >= 0.3 else None],
                                   random_views=random_views)
            items += new
            n += len(new)
        log(f"300w: {n} faces ({time.perf_counter() - t0:.0f} s)")
    if "ytf" in sources:
        n = 0
        for img_path in sorted((data_root / "ytf").glob("*.jpg")):
            if full(n):
                break
            image = _read_rgb(img_path)
            if image is None:
                continue
            ident = ytf_identity(img_path.name)
            rois = teacher.detect(image)[:1]
            new = _items_for_image(teacher, image, rois, {"source": "ytf", "key": f"ytf/{img_path.name}",
                                                          "split": ytf_split(ident), "identity": ident}, None, view_rng,
                                   random_views=random_views)
            items += new
            n += len(new)
        log(f"ytf: {n} faces ({time.perf_counter() - t0:.0f} s)")
    if "photos" in sources:
        n = 0
        for img_path in sorted((data_root / "photos").iterdir()):
            if full(n):
                break
            image = _read_rgb(img_path)
            if image is None:
                continue
            new = _items_for_image(teacher, image, teacher.detect(image),
                                   {"source": "photos", "key": f"photos/{img_path.name}", "split": "val"}, None,
                                   view_rng, random_views=random_views)
            items += new
            n += len(new)
        log(f"photos: {n} faces ({time.perf_counter() - t0:.0f} s)")
    if "videos" in sources:
        n = 0
        for vid in sorted((data_root / "videos").glob("*.mp4")):
            split = "val" if vid.name in VAL_VIDEOS else "train"
            step = video_step * 2 if split == "val" else video_step
            for k, image in _video_frames(vid, step):
                if full(n):
                    break
                rois = teacher.detect(image)
                meta = {"source": "videos", "key": f"videos/{vid.name}#{k}", "split": split}
                new = _items_for_image(teacher, image, rois, meta, None, view_rng, random_views=random_views)
                items += new
                n += len(new)
                if split == "train":
                    neg = _negative(image, rois, rng)
                    if neg is not None:
                        crop192 = teacher.mesh.crop(image, [neg])
                        _, score = teacher.mesh.run(crop192)
                        big = Roi(neg.center_x, neg.center_y, neg.size * CONTEXT, neg.rotation)
                        items.append(_Item(crop_image(image, big, CACHE_CROP, border="replicate"),
                                           np.full((478, 3), np.nan, np.float32), float(score[0]), None,
                                           {**meta, "source": "negative", "face": -1,
                                            "roi": [float(v) for v in neg.as_tuple()]}))
        log(f"videos: {n} faces ({time.perf_counter() - t0:.0f} s)")
    return items


def save_cache(items: list[_Item], out: Path) -> Path:
    """Write the cache arrays and ``meta.json`` (with the expression normalisation of the training faces)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    crops = np.stack([it.crop for it in items])
    teacher = np.stack([it.teacher for it in items]).astype(np.float32)
    gt68 = np.stack([it.gt68 if it.gt68 is not None else np.full((68, 2), np.nan, np.float32) for it in items])
    score = np.array([it.score for it in items], np.float32)
    meta = [it.meta for it in items]
    is_face = np.array([m["source"] != "negative" for m in meta])
    train = np.array([m["split"] == "train" for m in meta]) & is_face
    with np.errstate(invalid="ignore", divide="ignore"):
        measures = expression_measures(np.nan_to_num(teacher))
    ref = measures[train] if train.any() else measures[is_face]
    lo, hi = np.percentile(ref, 2, axis=0), np.percentile(ref, 98, axis=0)
    np.save(out / "crops.npy", crops)
    np.save(out / "teacher.npy", teacher)
    np.save(out / "gt68.npy", gt68.astype(np.float32))
    np.save(out / "score.npy", score)
    with_views = [it for it in items if it.views is not None]
    if with_views:  # negatives get the identity view only, NaN elsewhere
        v = len(with_views[0].views)
        views = np.full((len(items), v, 4), np.nan, np.float32)
        view_teacher = np.full((len(items), v, 478, 3), np.nan, np.float32)
        view_teacher_flip = np.full((len(items), v, 478, 3), np.nan, np.float32)
        view_score = np.zeros((len(items), v), np.float32)
        for n, it in enumerate(items):
            if it.views is not None:
                views[n], view_teacher[n], view_score[n] = it.views, it.view_teacher, it.view_score
                view_teacher_flip[n] = it.view_teacher_flip
            else:
                views[n, 0], view_teacher[n, 0], view_score[n, 0] = IDENTITY_VIEW, it.teacher, it.score
        np.save(out / "views.npy", views)
        np.save(out / "view_teacher.npy", view_teacher)
        np.save(out / "view_score.npy", view_score)
        np.save(out / "view_teacher_flip.npy", view_teacher_flip)
    (out / "meta.json").write_text(json.dumps({
        "crop": CACHE_CROP, "context": CONTEXT, "teacher_size": TEACHER_SIZE,
        "expression": {"names": ["mouth_open", "smile", "eyes_closed"], "lo": lo.tolist(), "hi": hi.tolist(),
                       "measures": ["inner-lip gap 13-14 / IOD", "mouth width 61-291 / IOD",
                                    "eye openness (lid gap / eye width)"]},
        "items": meta}, indent=1))
    return out


class Cache:
    """The arrays of a cache folder in memory, plus per-split index lists."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        self.crops = np.load(folder / "crops.npy", mmap_mode="r")
        self.teacher = np.load(folder / "teacher.npy")
        self.gt68 = np.load(folder / "gt68.npy")
        self.score = np.load(folder / "score.npy")
        if (folder / "views.npy").is_file():
            self.views = np.load(folder / "views.npy")
            self.view_teacher = np.load(folder / "view_teacher.npy", mmap_mode="r")
            self.view_score = np.load(folder / "view_score.npy")
            self.view_teacher_flip = np.load(folder / "view_teacher_flip.npy", mmap_mode="r")
        else:  # a cache built without views: the face ROI only
            self.views = np.broadcast_to(IDENTITY_VIEW, (len(self.score), 1, 4)).copy()
            self.view_teacher = self.teacher[:, None]
            self.view_score = self.score[:, None].copy()
            self.view_teacher_flip = None  # mirrored samples reuse the unmirrored labels, mirrored
        info = json.loads((folder / "meta.json").read_text())
        self.meta = info["items"]
        self.expr_lo = np.asarray(info["expression"]["lo"])
        self.expr_hi = np.asarray(info["expression"]["hi"])
        self.is_face = np.array([m["source"] != "negative" for m in self.meta])
        self.split = np.array([m["split"] for m in self.meta])
        self.source = np.array([m["source"] for m in self.meta])
        with np.errstate(invalid="ignore", divide="ignore"):  # negatives have no landmarks: NaN labels, unused
            self.expression = expression_labels(expression_measures(np.nan_to_num(self.teacher)), self.expr_lo,
                                                self.expr_hi)
        idents = sorted({m["identity"] for m in self.meta if m.get("identity") and m["split"] == "train"})
        self.identities = {name: i for i, name in enumerate(idents)}
        self.identity = np.array([self.identities.get(m.get("identity", ""), -1) if m["split"] == "train" else -1
                                  for m in self.meta])

    def __len__(self) -> int:
        return len(self.meta)

    def indices(self, split: str = "train", sources: tuple[str, ...] | None = None) -> np.ndarray:
        keep = self.split == split
        if sources is not None:
            keep &= np.isin(self.source, sources)
        return np.nonzero(keep)[0]


# -- augmentation ------------------------------------------------------------------------------------------


@dataclass
class Augment:
    rotation_deg: float = 10.0
    scale: float = 0.10  # log-uniform +-
    shift: float = 0.05  # fraction of the ROI side
    flip: float = 0.5
    color: float = 0.25
    blur: float = 0.1
    occlusion: float = 0.1
    view: float = 0.0  # probability of taking one of the cached views other than the face ROI (uniformly)

    @classmethod
    def none(cls) -> Augment:
        return cls(0, 0, 0, 0, 0, 0, 0, 0)


def _pixel_centre_affine(m: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``m`` between continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``, the
    convention of the landmarks and of the crops' ROI mapping) rewritten for OpenCV, whose coordinates put pixel
    centres at integers: ``x_cv' = A x_cv + t + (A - I) [0.5, 0.5]``."""
    out = np.array(m, np.float64)
    out[:, 2] += (out[:, :2] - np.eye(2)) @ np.array([0.5, 0.5])
    return out


def view_affine(view: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine from cache pixels to the ``size``-pixel input of the view (cx, cy, side, rotation)."""
    cx, cy, side, rot = (float(v) for v in view)
    c, s = math.cos(rot), math.sin(rot)
    k = size / side
    a = k * np.array([[c, s], [-s, c]])  # R(rot)^T: the inverse of crop_to_image_affine's rotation
    return np.concatenate([a, (np.array([size / 2, size / 2]) - a @ np.array([cx, cy]))[:, None]], 1)


def make_batch(cache: Cache, idx: np.ndarray, size: int, aug: Augment, rng: np.random.Generator,
               mirror: np.ndarray | None = None, view: int | None = None) -> dict[str, np.ndarray]:
    """Student inputs (B, 3, size, size) float32 in [0, 1] and targets in the input's pixels.

    Each sample starts from one cached view (``view`` if given and the face has it, else the face ROI, or with
    probability ``aug.view`` another of its views): the view's ROI is the input square and the teacher's answer
    on that crop is the target. One affine ``m`` (the view, then rotation, scale, shift about the input centre,
    optional mirror) maps the cached crop to the input, applied to the landmarks as is and to the image through
    :func:`_pixel_centre_affine`. (Until this was made explicit, the mirror used OpenCV's ``x -> size - 1 - x``
    on the landmarks too, so every mirrored sample's labels were 1 input pixel, ~2% IOD, off.)"""
    b = len(idx)
    images = np.empty((b, 3, size, size), np.float32)
    teacher = np.empty((b, 478, 3), np.float32)
    score = np.empty(b, np.float32)
    for n, i in enumerate(idx):
        have = np.nonzero(~np.isnan(cache.views[i, :, 0]))[0]
        v = 0
        if view is not None:
            v = view if view in have else 0
        elif aug.view and len(have) > 1 and rng.random() < aug.view:
            v = int(rng.choice(have[1:]))
        mv = view_affine(cache.views[i, v], size)
        rot = math.radians(rng.uniform(-aug.rotation_deg, aug.rotation_deg)) if aug.rotation_deg else 0.0
        k = math.exp(rng.uniform(-aug.scale, aug.scale)) if aug.scale else 1.0
        dx, dy = (rng.uniform(-aug.shift, aug.shift) * size for _ in range(2)) if aug.shift else (0.0, 0.0)
        c, s = math.cos(rot) * k, math.sin(rot) * k
        a = np.array([[c, -s], [s, c]])
        t = np.array([size / 2 + dx, size / 2 + dy]) - a @ np.array([size / 2, size / 2])
        m = np.concatenate([a @ mv[:, :2], (a @ mv[:, 2] + t)[:, None]], 1)
        k = k * size / float(cache.views[i, v, 2])  # z scale: cache pixels -> input pixels
        flip = mirror is not None and rng.random() < aug.flip
        if flip:  # x -> size - x: the landmarks' convention (pixel i spans [i, i + 1)), not x -> size - 1 - x
            m = np.array([[-1.0, 0.0, float(size)], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
        crop = cv2.warpAffine(np.asarray(cache.crops[i]), _pixel_centre_affine(m), (size, size),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        exact_flip = flip and cache.view_teacher_flip is not None
        p = np.asarray((cache.view_teacher_flip if exact_flip else cache.view_teacher)[i, v], np.float64)
        score[n] = cache.view_score[i, v]
        q = np.empty_like(p)
        q[:, :2] = p[:, :2] @ m[:, :2].T + m[:, 2]
        q[:, 2] = p[:, 2] * k
        if flip:
            q = q[mirror]
        x = crop.astype(np.float32) * (1 / 255)
        if aug.color:
            g = aug.color
            x = (x - 0.5) * (1 + rng.uniform(-g, g)) + 0.5 + rng.uniform(-g, g) * 0.3
            x = x * (1 + rng.uniform(-g, g) * 0.3 * np.array([1, 0, -1], np.float32))[None, None]
        if aug.blur and rng.random() < aug.blur:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.3))
        if aug.occlusion and rng.random() < aug.occlusion:
            rh, rw = (int(rng.uniform(0.15, 0.35) * size) for _ in range(2))
            y0, x0 = int(rng.integers(0, size - rh)), int(rng.integers(0, size - rw))
            x[y0:y0 + rh, x0:x0 + rw] = rng.random(3)
        images[n] = np.clip(x, 0, 1).transpose(2, 0, 1)
        teacher[n] = q
    return {"image": images, "teacher": teacher, "expression": cache.expression[idx],
            "identity": cache.identity[idx], "is_face": cache.is_face[idx].astype(np.float32),
            "score": score}


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="cache teacher outputs for face-transformer distillation")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="out/ft_cache")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-views", action="store_true",
                   help="only the face ROI per face (no detector/perturbed/mirrored views: ~2.5x faster)")
    p.add_argument("--random-views", type=int, default=RANDOM_VIEWS,
                   help=f"perturbed ROIs per face besides the face and detector ROIs (default {RANDOM_VIEWS}; "
                        "each costs two teacher runs per face at build time and ~60 MB in the full cache)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.random_views < 0:
        p.error(f"--random-views must be >= 0, got {args.random_views}")
    items = collect(Path(args.data), limit=args.limit, threads=args.threads, views=not args.no_views,
                    random_views=args.random_views)
    save_cache(items, Path(args.out))
    print(f"{len(items)} items -> {args.out}")


if __name__ == "__main__":
    main()
