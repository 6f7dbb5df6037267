"""Batched GPU predictor: ROI crops on the GPU, big batches, fp16/bf16 autocast, optional torch.compile and
CUDA graphs.

NOT MEASURED: this was written on a machine without a GPU. Its crop is tested on CPU tensors against the
OpenCV crop (``tests/test_export.py``); its speed and fp16 deviation are for ``benchmarks/`` on a GPU.

    gp = GpuLandmarkPredictor(device="cuda", dtype=torch.float16)
    images = torch.stack([...])                       # (B, 3, H, W) uint8 or float, same size, on the GPU
    landmarks, scores = gp.predict_batch(images, rois, image_index)   # rois: (N, 4) cx, cy, size, rotation

:func:`crop_rois` is the GPU version of :func:`attnmesh.geometry.roi.crop_image`: the same crop-to-image
mapping (``center + R(rotation) * side * (u/size - 1/2, v/size - 1/2)``, pixel centres at integers),
bilinear, replicated border, via ``grid_sample``. It differs from OpenCV's fixed-point warp only by
OpenCV's 1/32-pixel coordinate and 1/1024 weight quantisation (about one grey level).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.roi import Roi
from ..models.attention_mesh import INPUT_SIZE, AttentionMesh
from ..models.face_landmark import FaceLandmarkModel
from ..topology import NUM_MESH_LANDMARKS, NUM_REFINED_LANDMARKS
from ..weights import load_model_weights


def rois_tensor(rois: Sequence[Roi], device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, 4) float64→float32 tensor ``center_x, center_y, size, rotation``."""
    return torch.tensor([r.as_tuple() for r in rois], dtype=torch.float32, device=device).reshape(-1, 4)


def crop_to_image_affines(rois: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 2, 3) affines mapping crop pixels (u, v) to image pixels, as
    :func:`attnmesh.geometry.roi.crop_to_image_affine`."""
    cx, cy, side, rot = rois.unbind(-1)
    c, s = torch.cos(rot), torch.sin(rot)
    k = side / size
    a = torch.stack([torch.stack([c * k, -s * k], -1), torch.stack([s * k, c * k], -1)], -2)
    t = torch.stack([cx, cy], -1) - a.sum(-1) * (size / 2)
    return torch.cat([a, t.unsqueeze(-1)], -1)


def crop_rois(images: torch.Tensor, rois: torch.Tensor, size: int = INPUT_SIZE,
              image_index: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear ``size x size`` crops with a replicated border.

    Args:
        images: (B, C, H, W), any float or uint8 dtype (uint8 is converted to float32 0..255).
        rois: (N, 4) ``center_x, center_y, size, rotation`` in image pixels.
        image_index: (N,) which image each ROI is cut from (default: ROI i from image i).
    Returns:
        (N, C, size, size) float crops on the images' scale (0..255 for uint8 input).
    """
    if images.dtype == torch.uint8:
        images = images.float()
    n = rois.shape[0]
    b, _, h, w = images.shape
    if image_index is None:
        image_index = torch.arange(n, device=images.device)
    m = crop_to_image_affines(rois.to(torch.float32), size)  # (N, 2, 3)
    # OpenCV samples destination pixel (u, v) at the image position of crop point (u, v) itself (pixel
    # centres at integers in both frames).
    ij = torch.arange(size, dtype=torch.float32, device=images.device)
    gy, gx = torch.meshgrid(ij, ij, indexing="ij")
    grid = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(1, -1, 3)
    pos = torch.einsum("nij,nkj->nki", m, grid.expand(n, -1, -1))  # (N, S*S, 2) image pixels
    # Replicated border = clamp the sampling position into the image before the bilinear lookup.
    px = pos[..., 0].clamp(0, w - 1)
    py = pos[..., 1].clamp(0, h - 1)
    norm = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1).reshape(n, size, size, 2)
    src = images if b == n and torch.equal(image_index, torch.arange(n, device=images.device)) \
        else images.index_select(0, image_index)
    return F.grid_sample(src, norm.to(src.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def project_points(points: torch.Tensor, rois: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Crop-pixel landmarks (N, K, 3) -> image pixels (z scaled like x), as
    :func:`attnmesh.geometry.roi.project_to_image`."""
    m = crop_to_image_affines(rois.to(torch.float32), size)
    xy = torch.einsum("nij,nkj->nki", m[..., :2], points[..., :2].float()) + m[..., 2].unsqueeze(1)
    z = points[..., 2:3].float() * (rois[:, 2] / size).view(-1, 1, 1)
    return torch.cat([xy, z], -1)


class GpuLandmarkPredictor:
    """Batched landmark model on a GPU (also runs on CPU for tests, where autocast is off).

    Args:
        refine: Attention Mesh (478) or face_landmark (468).
        device: ``"cuda"`` (or ``"cpu"`` for testing).
        dtype: ``torch.float16`` / ``torch.bfloat16`` (autocast) or ``torch.float32``.
        compile: wrap the network in ``torch.compile(mode="max-autotune")`` (CUDA graphs included).
        channels_last: NHWC memory format (faster convolutions on tensor cores).
    """

    def __init__(self, refine: bool = True, device: str | torch.device = "cuda", dtype: torch.dtype = torch.float16,
                 compile: bool = False, channels_last: bool = True) -> None:
        self.refine = refine
        self.device = torch.device(device)
        self.dtype = dtype if self.device.type == "cuda" else torch.float32
        self.input_size = INPUT_SIZE
        self.num_landmarks = NUM_REFINED_LANDMARKS if refine else NUM_MESH_LANDMARKS
        net = AttentionMesh() if refine else FaceLandmarkModel()
        net = load_model_weights(net, "attention_mesh" if refine else "face_landmark").eval().to(self.device)
        self.channels_last = channels_last and self.device.type == "cuda"
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self._forward = torch.compile(net, mode="max-autotune", dynamic=False) if compile else net

    @torch.inference_mode()
    def run_tensor(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 192, 192) crops in [0, 1] on ``device`` -> 192-space landmarks (N, K, 3) float32 and
        scores (N,). The region geometry runs inside autocast, but grid_sample and einsum are autocast to
        float32 by PyTorch's policy, so only the CNN trunks run in half precision."""
        x = crops.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        use_autocast = self.device.type == "cuda" and self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=use_autocast):
            out = self._forward(x)
        points = (out.landmarks if self.refine else out.mesh).float()
        return points, torch.sigmoid(out.face_logit.float())

    @torch.inference_mode()
    def predict_batch(self, images: torch.Tensor, rois: torch.Tensor, image_index: torch.Tensor | None = None,
                      chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-pixel landmarks (N, K, 3) and scores (N,) for ROIs of a batch of same-size images
        ((B, 3, H, W) uint8 or float 0..255, on the GPU); ROIs are processed ``chunk`` at a time."""
        images = images.to(self.device, non_blocking=True)
        rois = rois.to(self.device, torch.float32)
        if image_index is not None:
            image_index = image_index.to(self.device)
        outs, scores = [], []
        for i in range(0, rois.shape[0], chunk):
            idx = None if image_index is None else image_index[i:i + chunk]
            if idx is None and images.shape[0] != rois.shape[0]:
                raise ValueError("image_index is needed unless there is one ROI per image")
            crops = crop_rois(images, rois[i:i + chunk], self.input_size, idx).div_(255.0)
            p, s = self.run_tensor(crops)
            outs.append(project_points(p, rois[i:i + chunk], self.input_size))
            scores.append(s)
        if not outs:
            return torch.zeros(0, self.num_landmarks, 3), torch.zeros(0)
        return torch.cat(outs), torch.cat(scores)

    # The LandmarkRunner protocol (attnmesh.runtime.base), so this can stand in for FaceMesh's runner on a GPU:
    # FaceMesh(model=GpuLandmarkPredictor(), device="cuda").
    def crop(self, image: np.ndarray, rois: Sequence[Roi]) -> np.ndarray:
        t = torch.from_numpy(np.require(image, requirements=("C", "W"))).permute(2, 0, 1)[None].to(self.device)
        crops = crop_rois(t, rois_tensor(rois, self.device), self.input_size,
                          torch.zeros(len(rois), dtype=torch.long, device=self.device))
        return crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def predict(self, image: np.ndarray, rois: Sequence[Roi]) -> tuple[np.ndarray, np.ndarray]:
        if not rois:
            return np.zeros((0, self.num_landmarks, 3), np.float32), np.zeros((0,), np.float32)
        t = torch.from_numpy(np.require(image, requirements=("C", "W"))).permute(2, 0, 1)[None]
        idx = torch.zeros(len(rois), dtype=torch.long)
        p, s = self.predict_batch(t, rois_tensor(rois), idx)
        return p.cpu().numpy(), s.cpu().numpy()

    def predict_many(self, items: Sequence[tuple[np.ndarray, Roi]]) -> tuple[np.ndarray, np.ndarray]:
        """Image-pixel landmarks (N, K, 3) and scores (N,) for ``(image, roi)`` pairs; the ROIs of each image
        (consecutive pairs with the same image) go through :meth:`predict_batch` together."""
        points, scores = [], []
        k = 0
        while k < len(items):
            image = items[k][0]
            j = k
            while j < len(items) and items[j][0] is image:
                j += 1
            p, s = self.predict(image, [roi for _, roi in items[k:j]])
            points.append(p)
            scores.append(s)
            k = j
        if not points:
            return np.zeros((0, self.num_landmarks, 3), np.float32), np.zeros((0,), np.float32)
        return np.concatenate(points), np.concatenate(scores)

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 NHWC crops -> 192-space landmarks and scores (NumPy), as ``CropLandmarkRunner.run``."""
        if len(crops) == 0:
            return np.zeros((0, self.num_landmarks, 3), np.float32), np.zeros((0,), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        p, s = self.run_tensor(x)
        return p.cpu().numpy(), s.cpu().numpy()
