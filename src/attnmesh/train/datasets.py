"""Training data: face records, teacher pseudo-labels, target meshes and augmented 192x192 crops.

Sources (:func:`load_records`):

* a **300-W style folder** (searched recursively): ``NAME.jpg`` (or .png) beside ``NAME.pts`` with 68 points
  (0-based pixel coordinates, iBUG scheme);
* a **landmark file** written by ``attnmesh images --out FILE.jsonl|.npz``: 478 points per face (image paths are
  resolved as written, else relative to the file's folder);
* an **unlabelled image folder**: faces are found by the detector and pseudo-labelled by the teacher.

**Deterministic split** (:func:`split_of`): a record belongs to the validation split when the first 8 hex digits
of ``sha256(key)`` read as a fraction of 2**32 are below ``val_fraction`` (default 0.15), where ``key`` is the
image's last two path components (``"lfpw/image_0001.jpg"``). It depends on nothing but the file name, so the
split is the same on every machine, in every run, and for any subset of the folder. On 300w-train it puts
269 of the 2,012 faces (13.4%) in the validation split.

**Teacher labels** (:func:`teacher_labels`): the imported Attention Mesh run twice per face, as in tracking:
first on a ROI from the annotation (68-point box, rotated by the outer eye corners, x1.8) or the detector,
then on ``roi_from_landmarks`` of that first result. The second ROI is the sample's base ROI and the second
result its teacher mesh (478 points, image pixels). Cached as ``.npz``.

**Target mesh** (:func:`corrected_targets`): the teacher mesh corrected by the annotations: each of the 68 mapped
vertices is moved onto its annotation, and every other vertex by a Gaussian-weighted average of the 68
residuals (weights by distance on the canonical face, ``sigma`` cm, falling to zero away from the annotated
points), so the mesh stays a smooth mesh.

**Crops** (:class:`FaceCrops`): the base ROI jittered (rotation, log-scale, shift), warped to 192x192 exactly as
:func:`attnmesh.geometry.roi.crop_image` (bilinear, replicated border), optional horizontal flip (image mirrored,
``u -> 191 - u``, points permuted by the mesh's and the 68-point scheme's mirror permutations), then colour
(brightness, contrast, saturation, gamma), Gaussian blur, Gaussian noise and a random occluding rectangle.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import topology
from ..geometry.roi import Roi, crop_to_image_affine, roi_from_points
from ..pipeline.tracking import roi_from_landmarks

CROP = 192
VAL_FRACTION = 0.15
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ROI68_SCALE = 1.8  # first-pass ROI from the 68-point box


# -- records and splits -----------------------------------------------------------------------------------


@dataclass
class FaceRecord:
    """One face: an image file and what is known about the face (image pixels)."""

    key: str
    image_path: Path
    points68: np.ndarray | None = None  # (68, 2) annotation
    points478: np.ndarray | None = None  # (478, 3) landmark-file labels
    extra: dict = field(default_factory=dict)


def split_key(path: Path) -> str:
    return "/".join(Path(path).parts[-2:])


def split_of(key: str, val_fraction: float = VAL_FRACTION) -> str:
    """``"val"`` or ``"train"``, from a fixed hash of ``key`` (see the module docstring)."""
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "val" if h < val_fraction else "train"


def _keep(key: str, split: str, val_fraction: float) -> bool:
    if split == "all":
        return True
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    return split_of(key, val_fraction) == split


def read_pts(path: Path) -> np.ndarray:
    """(K, 2) points of a ``.pts`` file."""
    text = Path(path).read_text()
    try:
        body = text.split("{", 1)[1].split("}", 1)[0]
        pts = np.array(body.split(), np.float64).reshape(-1, 2)
    except (IndexError, ValueError):
        raise ValueError(f"{path}: not a .pts file") from None
    return pts


def w300_records(root: Path, split: str = "all", val_fraction: float = VAL_FRACTION) -> list[FaceRecord]:
    """300-W style folder: every image with a 68-point ``.pts`` beside it (sorted by path)."""
    out = []
    for pts in sorted(Path(root).rglob("*.pts")):
        image = next((pts.with_suffix(e) for e in IMAGE_EXTENSIONS if pts.with_suffix(e).is_file()), None)
        if image is None:
            continue
        key = split_key(image)
        if _keep(key, split, val_fraction):
            p = read_pts(pts)
            if p.shape != (68, 2):
                raise ValueError(f"{pts}: expected 68 points, found {len(p)}")
            out.append(FaceRecord(key, image, points68=p))
    return out


def image_folder_records(root: Path, split: str = "all", val_fraction: float = VAL_FRACTION) -> list[FaceRecord]:
    """Unlabelled images (to be pseudo-labelled by the teacher)."""
    paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return [FaceRecord(split_key(p), p) for p in paths if _keep(split_key(p), split, val_fraction)]


def landmark_file_records(path: Path, split: str = "all", val_fraction: float = VAL_FRACTION) -> list[FaceRecord]:
    """Faces of an ``attnmesh images`` output (``.jsonl`` or ``.npz``), 478 points each."""
    path = Path(path)
    faces: list[tuple[str, list[np.ndarray]]] = []
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if not rec.get("error"):
                    lms = [np.asarray(f["landmarks"], np.float64) for f in rec.get("faces") or []]
                    faces.append((rec["path"], lms))
    elif path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for i, p in enumerate(z["path"]):
                n = int(z["num_faces"][i])
                faces.append((str(p), [z["landmarks"][i, j].astype(np.float64) for j in range(n)]))
    else:
        raise ValueError(f"{path}: landmark files must be .jsonl or .npz")
    out = []
    for image, lms in faces:
        image_path = Path(image)
        if not image_path.is_file() and (path.parent / image).is_file():
            image_path = path.parent / image
        key = split_key(image_path)
        if not _keep(key, split, val_fraction):
            continue
        for j, lm in enumerate(lms):
            if lm.shape != (topology.NUM_REFINED_LANDMARKS, 3):
                raise ValueError(f"{path}: {image}: expected 478 landmarks, found {lm.shape[0]}")
            out.append(FaceRecord(f"{key}#{j}", image_path, points478=lm))
    return out


def load_records(source: str | Path, split: str = "all", val_fraction: float = VAL_FRACTION) -> list[FaceRecord]:
    """Records of a 300-W folder, a landmark file or an unlabelled folder (chosen by what ``source`` is)."""
    source = Path(source)
    if source.is_file():
        return landmark_file_records(source, split, val_fraction)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if next(source.rglob("*.pts"), None) is not None:
        return w300_records(source, split, val_fraction)
    return image_folder_records(source, split, val_fraction)


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot read the image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# -- teacher labels ---------------------------------------------------------------------------------------


def roi_from_68(points68: np.ndarray, image_size: tuple[int, int], scale: float = ROI68_SCALE) -> Roi:
    """A first-pass face ROI from 68 annotated points: their box, rotated by the outer eye corners 36 -> 45."""
    return roi_from_points(points68, 36, 45, scale, image_size)


def _records_hash(records: Sequence[FaceRecord], model_tag: str) -> str:
    h = hashlib.sha256(model_tag.encode())
    for r in records:
        h.update(f"{r.key}|{r.image_path.name}|".encode())
        if r.points68 is not None:
            h.update(np.round(r.points68, 3).tobytes())
    return h.hexdigest()[:16]


def teacher_labels(records: Sequence[FaceRecord], net, cache_dir: Path | None = None, model_tag: str = "attention_mesh",
                   batch_size: int = 32, progress: bool = True) -> dict[str, np.ndarray]:
    """Base ROIs and teacher meshes of ``records``: ``{"roi": (N, 4), "teacher": (N, 478, 3), "ok": (N,)}``.

    Records with 478-point labels use them as their teacher mesh (no network run). Unlabelled records get
    their first-pass ROI from the face detector (the highest-scoring face; ``ok`` False if none).
    """
    import torch

    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"teacher-{_records_hash(records, model_tag)}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                return {k: z[k] for k in ("roi", "teacher", "ok")}
    n = len(records)
    rois = np.zeros((n, 4), np.float64)
    teacher = np.zeros((n, topology.NUM_REFINED_LANDMARKS, 3), np.float32)
    ok = np.ones(n, bool)
    detector = None
    first: list[Roi | None] = []
    sizes = []
    for i, r in enumerate(records):
        if r.points478 is not None:
            teacher[i] = r.points478
            size = _image_size(r.image_path)
            rois[i] = roi_from_landmarks(r.points478, size).as_tuple()
            first.append(None)
        elif r.points68 is not None:
            size = _image_size(r.image_path)
            first.append(roi_from_68(r.points68, size))
        else:
            if detector is None:
                from ..runtime.detector import FaceDetector
                from ..pipeline.tracking import roi_from_detection

                detector = FaceDetector()
            image = read_rgb(r.image_path)
            size = (image.shape[1], image.shape[0])
            dets = detector.process(image)
            first.append(roi_from_detection(dets[0].box, dets[0].keypoints) if dets else None)
            ok[i] = bool(dets)
        sizes.append(size)
    todo = [i for i in range(n) if first[i] is not None]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="teacher labels", unit="face", dynamic_ncols=True)
    for start in range(0, len(todo), batch_size):
        idx = todo[start:start + batch_size]
        images = [read_rgb(records[i].image_path) for i in idx]
        roi1 = [first[i] for i in idx]
        for _ in range(2):  # pass 1 on the first ROI, pass 2 on the ROI from pass-1 landmarks
            crops = np.stack([warp_crop(im, roi, CROP)[0] for im, roi in zip(images, roi1)])
            with torch.inference_mode():
                x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
                pts = net(x).landmarks.float().numpy()
            img_pts = [crop_to_image_points(p, roi) for p, roi in zip(pts, roi1)]
            prev, roi1 = roi1, [roi_from_landmarks(p, sizes[i]) for p, i in zip(img_pts, idx)]
        for j, i in enumerate(idx):
            rois[i] = prev[j].as_tuple()
            teacher[i] = img_pts[j]
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    out = {"roi": rois, "teacher": teacher, "ok": ok}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".part.npz")
        np.savez(tmp, **out)
        tmp.replace(cache)
    return out


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


# -- geometry ---------------------------------------------------------------------------------------------


def image_to_crop_affine(roi: Roi, size: int = CROP) -> np.ndarray:
    """2x3 affine: image pixels -> crop pixels (the inverse of :func:`crop_to_image_affine`)."""
    m = crop_to_image_affine(roi, size)
    a_inv = np.linalg.inv(m[:, :2])
    return np.concatenate([a_inv, -(a_inv @ m[:, 2])[:, None]], 1)


FLIP = np.array([[-1.0, 0.0, CROP - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # u -> 191 - u


def warp_crop(image: np.ndarray, roi: Roi, size: int = CROP, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(crop uint8 (size, size, 3), 2x3 image->crop affine) of ``roi``; ``flip`` mirrors the crop."""
    m = image_to_crop_affine(roi, size)
    if flip:
        m = (FLIP @ np.vstack([m, [0, 0, 1]]))[:2]
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, m


def apply_affine(points: np.ndarray, m: np.ndarray, z_scale: float = 1.0) -> np.ndarray:
    out = np.array(points, np.float64, copy=True)
    out[..., :2] = points[..., :2] @ m[:, :2].T + m[:, 2]
    if out.shape[-1] > 2:
        out[..., 2] = points[..., 2] * z_scale
    return out


def crop_to_image_points(points: np.ndarray, roi: Roi, size: int = CROP) -> np.ndarray:
    m = crop_to_image_affine(roi, size)
    return apply_affine(points, m, roi.size / size).astype(np.float32)


def mirror_points(points: np.ndarray, perm: np.ndarray, width: float = CROP) -> np.ndarray:
    """Points of the mirrored crop: ``u -> width - 1 - u`` and the left/right permutation."""
    out = np.array(points, copy=True)
    out[..., 0] = (width - 1) - out[..., 0]
    return out[..., perm, :]


# -- target meshes ----------------------------------------------------------------------------------------


def _vertex_positions() -> np.ndarray:
    """(478, 3) canonical-face positions (cm); iris slots at the mean of their eye's inner contour."""
    from importlib import resources

    d = json.loads(resources.files("attnmesh").joinpath("data/canonical_face_model.json").read_text())
    v = np.asarray(d["vertices_xyz"], np.float64)
    right = v[list(topology.RIGHT_IRIS_Z_AVERAGE)].mean(0)
    left = v[list(topology.LEFT_IRIS_Z_AVERAGE)].mean(0)
    return np.concatenate([v, np.repeat(right[None], 5, 0), np.repeat(left[None], 5, 0)])


def correction_kernel(index_map: np.ndarray, sigma: float = 0.8, floor: float = 0.5) -> np.ndarray:
    """(478, 68) weights spreading the 68 annotation residuals over the mesh: Gaussian in canonical-face
    distance (``sigma`` cm), normalised by ``sum + floor`` so that far from every annotated point the weights
    fall to zero; the mapped vertices themselves get exactly their own residual."""
    pos = _vertex_positions()
    d2 = ((pos[:, None, :] - pos[index_map][None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma**2))
    w = w / (w.sum(1, keepdims=True) + floor)
    w[index_map] = 0.0
    w[index_map, np.arange(len(index_map))] = 1.0
    return w


def corrected_targets(teacher: np.ndarray, points68: np.ndarray | None, index_map: np.ndarray,
                      kernel: np.ndarray) -> np.ndarray:
    """Teacher mesh (478, 3) corrected by the 68 annotations (image pixels); the teacher itself without them."""
    if points68 is None:
        return teacher.copy()
    residual = points68 - teacher[index_map, :2]
    out = teacher.astype(np.float64).copy()
    out[:, :2] += kernel @ residual
    return out.astype(np.float32)


# -- augmented crops --------------------------------------------------------------------------------------


@dataclass
class AugmentConfig:
    rotation_deg: float = 12.0  # uniform +-
    scale: float = 0.12  # log-uniform +- (x e^U)
    shift: float = 0.05  # uniform +- fraction of the ROI side, each axis
    flip: float = 0.5  # probability
    color: float = 0.25  # strength of brightness / contrast / saturation / gamma jitter
    blur: float = 0.15  # probability of a Gaussian blur (sigma 0.5..1.5 px)
    noise: float = 0.15  # probability of Gaussian noise (sigma 2..8 / 255)
    occlusion: float = 0.15  # probability of a random rectangle (10..35% of the side) of flat colour or noise

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(0, 0, 0, 0, 0, 0, 0, 0)


def photometric(crop: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    x = crop.astype(np.float32) / 255.0
    if cfg.color > 0:
        c = cfg.color
        gray = x.mean(-1, keepdims=True)
        x = gray + (x - gray) * (1 + rng.uniform(-c, c))  # saturation
        x = (x - x.mean()) * (1 + rng.uniform(-c, c)) + x.mean()  # contrast
        x = x + rng.uniform(-c, c) * 0.4  # brightness
        x = np.clip(x, 0, 1) ** math.exp(rng.uniform(-c, c))  # gamma
    if rng.random() < cfg.blur:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < cfg.noise:
        x = x + rng.normal(0, rng.uniform(2, 8) / 255.0, x.shape).astype(np.float32)
    if rng.random() < cfg.occlusion:
        h, w = x.shape[:2]
        rh, rw = (int(rng.uniform(0.1, 0.35) * s) for s in (h, w))
        y0, x0 = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
        if rng.random() < 0.5:
            x[y0:y0 + rh, x0:x0 + rw] = rng.random(3)
        else:
            x[y0:y0 + rh, x0:x0 + rw] = rng.random((rh, rw, 3))
    return np.clip(x, 0, 1)


class FaceCrops:
    """Augmented training samples of records with base ROIs, teacher and target meshes (image pixels).

    :meth:`sample` is a pure function of ``(index, rng)``: the same generator state gives the same sample.
    """

    def __init__(self, records: Sequence[FaceRecord], rois: np.ndarray, teacher: np.ndarray, target: np.ndarray,
                 augment: AugmentConfig | None = None, mirror478: np.ndarray | None = None,
                 mirror68: np.ndarray | None = None, cache_images: bool = True) -> None:
        self.records = list(records)
        self.rois = rois
        self.teacher = teacher
        self.target = target
        self.augment = augment or AugmentConfig()
        if mirror478 is None or mirror68 is None:
            from ..eval import maps

            mirror478, mirror68 = maps.mirror_478(), maps.mirror_68()
        self.mirror478, self.mirror68 = mirror478, mirror68
        self._images: dict[int, np.ndarray] = {}
        self.cache_images = cache_images

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> np.ndarray:
        if i in self._images:
            return self._images[i]
        im = read_rgb(self.records[i].image_path)
        if self.cache_images:
            self._images[i] = im
        return im

    def jittered_roi(self, i: int, rng: np.random.Generator) -> Roi:
        cx, cy, size, rot = self.rois[i]
        a = self.augment
        size2 = size * math.exp(rng.uniform(-a.scale, a.scale)) if a.scale else size
        dx, dy = (rng.uniform(-a.shift, a.shift) * size for _ in range(2)) if a.shift else (0.0, 0.0)
        rot2 = rot + math.radians(rng.uniform(-a.rotation_deg, a.rotation_deg)) if a.rotation_deg else rot
        return Roi(cx + dx, cy + dy, size2, rot2)

    def sample(self, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        r = self.records[i]
        roi = self.jittered_roi(i, rng)
        flip = bool(rng.random() < self.augment.flip)
        crop, m = warp_crop(self.image(i), roi, CROP, flip=flip)
        zs = CROP / roi.size
        target = apply_affine(self.target[i], m, zs)
        teacher = apply_affine(self.teacher[i], m, zs)
        has68 = r.points68 is not None
        gt68 = apply_affine(r.points68, m) if has68 else np.zeros((68, 2))
        if flip:  # the flipped affine mirrored the positions; relabel left <-> right
            # FLIP mirrors pixel centres (u -> 191 - u): right for the 300-W points, annotated on pixel
            # centres. The model's landmarks put the content of crop pixel u at u + 0.5 (pixel u spans
            # [u, u + 1)), so their mirror is u -> 192 - u: one pixel more.
            target[:, 0] += 1.0
            teacher[:, 0] += 1.0
            target, teacher = target[self.mirror478], teacher[self.mirror478]
            gt68 = gt68[self.mirror68]
        x = photometric(crop, self.augment, rng)
        return {"image": x.transpose(2, 0, 1).astype(np.float32), "target": target.astype(np.float32),
                "teacher": teacher.astype(np.float32), "gt68": gt68.astype(np.float32),
                "has68": np.float32(has68)}

    def batch(self, indices: Sequence[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        samples = [self.sample(int(i), rng) for i in indices]
        return {k: np.stack([s[k] for s in samples]) for k in samples[0]}
