"""Training data: face records, teacher pseudo-labels, target meshes and augmented 192x192 crops.

Records and the deterministic train / validation split are :mod:`attnmesh.eval.datasets`'s (re-exported here).

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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import topology
from ..geometry.roi import Roi, crop_to_image_affine, roi_from_points
from ..pipeline.tracking import roi_from_landmarks
from ..eval.datasets import (VAL_FRACTION, FaceRecord, image_folder_records, landmark_file_records,  # noqa: F401
                             load_records, read_pts, read_rgb, split_key, split_of, w300_records)

CROP = 192
ROI68_SCALE = 1.8  # first-pass ROI from the 68-point box


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
    occlusion: float = 0.15  # probability of an occluder: a rectangle, hand-like polygon, glasses or a face mask
    motion_blur: float = 0.0  # probability of a linear motion blur (3..9 px, any direction)
    jpeg: float = 0.0  # probability of JPEG artefacts (quality 15..60)
    low_res: float = 0.0  # probability of a low-resolution copy (downscaled to 25..60%, then back)

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
    if rng.random() < cfg.low_res:
        h, w = x.shape[:2]
        f = rng.uniform(0.25, 0.6)
        small = cv2.resize(x, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < cfg.blur:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < cfg.motion_blur:
        x = motion_blur(x, int(rng.integers(3, 10)), rng.uniform(0, math.pi))
    if rng.random() < cfg.noise:
        x = x + rng.normal(0, rng.uniform(2, 8) / 255.0, x.shape).astype(np.float32)
    if rng.random() < cfg.occlusion:
        x = occlude(x, rng)
    if rng.random() < cfg.jpeg:
        x = jpeg_artefacts(x, int(rng.integers(15, 61)))
    return np.clip(x, 0, 1)


def motion_blur(x: np.ndarray, length: int, angle: float) -> np.ndarray:
    """``x`` (H, W, 3) float in [0, 1] blurred along a line of ``length`` pixels at ``angle`` (radians)."""
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    d = np.array([math.cos(angle), math.sin(angle)]) * c
    cv2.line(kernel, (round(c - d[0]), round(c - d[1])), (round(c + d[0]), round(c + d[1])), 1.0, 1)
    return cv2.filter2D(x, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)


def jpeg_artefacts(x: np.ndarray, quality: int) -> np.ndarray:
    """``x`` (H, W, 3) float in [0, 1] through a JPEG encode and decode at ``quality`` (1..100)."""
    pixels = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0 if ok else x


def occlude(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A synthetic occluder on a (H, W, 3) float crop of a face (the face fills the middle): a rectangle, a
    hand-like polygon, a pair of glasses (two lens rings and a bridge, tinted or clear) or a face mask over
    the nose and mouth; flat colour or noise."""
    h, w = x.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    kind = rng.integers(4)
    if kind == 0:  # rectangle, 10..35% of the side
        rh, rw = (int(rng.uniform(0.1, 0.35) * s) for s in (h, w))
        y0, x0 = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
        mask[y0:y0 + rh, x0:x0 + rw] = 1
    elif kind == 1:  # hand: a blob of 5..9 points around a centre anywhere on the face
        cx, cy, r = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.9) * h, rng.uniform(0.12, 0.3) * w
        angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(5, 10))))
        radii = r * rng.uniform(0.5, 1.0, len(angles))
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    elif kind == 2:  # glasses at eye height
        ey, dx = rng.uniform(0.36, 0.46) * h, rng.uniform(0.17, 0.22) * w
        axes = (int(rng.uniform(0.1, 0.14) * w), int(rng.uniform(0.06, 0.09) * h))
        thick = int(rng.integers(2, 6))
        lens = -1 if rng.random() < 0.4 else thick  # sunglasses are filled
        for sx in (-1, 1):
            cv2.ellipse(mask, (round(w / 2 + sx * dx), round(ey)), axes, 0, 0, 360, 1, lens)
        cv2.line(mask, (round(w / 2 - dx + axes[0]), round(ey)), (round(w / 2 + dx - axes[0]), round(ey)), 1, thick)
    else:  # face mask from below the nose bridge down
        top = rng.uniform(0.5, 0.62) * h
        pts = np.array([[0.15 * w, top], [0.85 * w, top], [0.8 * w, 0.88 * h], [0.5 * w, 0.98 * h],
                        [0.2 * w, 0.88 * h]])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    fill = rng.random(3) if rng.random() < 0.6 else rng.random((h, w, 3))
    m = mask.astype(bool)
    x = x.copy()
    x[m] = (np.broadcast_to(fill, x.shape) if np.ndim(fill) == 1 else fill)[m]
    return x


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
