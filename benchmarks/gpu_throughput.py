"""Throughput of the batched predictor (:mod:`attnmesh.runtime.gpu`): faces/s against batch size, model only
and end to end, peak memory, and the half-precision deviation from float32 on real faces.

    python benchmarks/gpu_throughput.py                      # on a CUDA machine: batch 1 ... 1024, fp32 + fp16
    python benchmarks/gpu_throughput.py --device cpu --max-batch 16 --rounds 2   # CPU smoke run (fp32 + bf16)
    options: --dtype fp32,fp16,bf16  --compile  --max-batch N  --rounds N  --images N  --side PX

Runs on CUDA when it is present, else on CPU (there the default batch cap is 64, fp16 is not run and bf16 is
run only where CPU autocast supports it; a skipped precision shows a dash).

* Inputs: ``--images`` real 300-W training faces (``../shared/data/300w-train``), decoded once, shrunk so
  the longer side is at most ``--side`` pixels and centred on a common zero-padded square canvas; a batch of
  B tiles them (B images, one face each). Decoding and the upload to the device are not timed.
* Model only: ``GpuLandmarkPredictor.run_tensor`` on B real 192x192 face crops already on the device.
* End to end: B images on the device -> detector (letterbox crop on the device, BlazeFace, anchor decoding,
  MediaPipe's weighted NMS for the best face, all on the device) -> face ROI -> ``predict_batch`` (crops on
  the device with ``grid_sample``, mesh, projection to image pixels). One face per image (max_num_faces=1).
* Timing: warm-up calls first; each round times enough calls to cover at least ``--min-faces`` faces (CUDA:
  ``torch.cuda.synchronize`` before reading the clock); the median over rounds is reported.
* Peak memory: ``torch.cuda.max_memory_allocated`` during the end-to-end run, canvas batch included
  (CUDA only; '—' on CPU).
* Deviation: per face, mean 2D distance of the 478 end-to-end landmarks in half precision from those in
  float32, in % of the float32 inter-ocular distance (outer eye corners 33-263); mean and max over the faces of
  the batch; also model only (the mesh on the same crops, detector and ROIs excluded). The issue's bar:
  <= 0.3% IOD.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from attnmesh.runtime.gpu import GpuLandmarkPredictor, crop_rois  # noqa: E402
from attnmesh.models.detector import decode_boxes, scores_from_logits  # noqa: E402
from attnmesh.runtime.detector import NMS_IOU, FaceDetector  # noqa: E402
from attnmesh.pipeline.tracking import ROI_SCALE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
W300 = ROOT.parent / "shared" / "data" / "300w-train"
BATCHES = (1, 4, 16, 64, 256, 1024)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
EYE_R, EYE_L = 33, 263


# -- data ---------------------------------------------------------------------------------------------------

def load_images(count: int, side: int) -> list[np.ndarray]:
    """``count`` RGB 300-W images spread over lfpw, helen and afw, longer side shrunk to <= ``side``."""
    paths = sorted(W300.rglob("*.jpg"))
    if not paths:
        raise SystemExit(f"no images under {W300}")
    step = max(1, len(paths) // count)
    out = []
    for p in paths[::step][:count]:
        im = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        s = side / max(im.shape[:2])
        if s < 1:
            im = cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)), interpolation=cv2.INTER_AREA)
        out.append(im)
    return out


def canvas_batch(images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, S, S) uint8 canvas with each image centred on zeros, the images' letterbox ROIs on the canvas
    (N, 4) (the detector's input square; inside the canvas, so the replicated border reads zeros as the
    detector's zero border does), and each image's (x, y) offset on the canvas (N, 2)."""
    s = max(max(im.shape[:2]) for im in images)
    canvas = np.zeros((len(images), s, s, 3), np.uint8)
    rois, offsets = [], []
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        ox, oy = (s - w) // 2, (s - h) // 2
        canvas[i, oy:oy + h, ox:ox + w] = im
        rois.append((ox + w / 2, oy + h / 2, float(max(w, h)), 0.0))
        offsets.append((ox, oy))
    return (torch.from_numpy(canvas).permute(0, 3, 1, 2).contiguous(), torch.tensor(rois, dtype=torch.float32),
            torch.tensor(offsets, dtype=torch.float32))


def tile(t: torch.Tensor, n: int) -> torch.Tensor:
    reps = math.ceil(n / t.shape[0])
    return t.repeat(reps, *([1] * (t.ndim - 1)))[:n]


# -- the device pipeline ------------------------------------------------------------------------------------

def autocast_wrapped(f: Callable, device: torch.device, dtype: torch.dtype) -> Callable:
    """``f`` under autocast (used for the detector, and for the mesh on CPU, where the predictor itself runs
    float32 only); an inner autocast re-enables what the predictor's own ``enabled=False`` context turns off."""
    if dtype == torch.float32:
        return f

    def g(x):
        with torch.autocast(device.type, dtype=dtype):
            return f(x)
    return g


class DevicePipeline:
    """Images on the device -> best face per image -> 478 landmarks in canvas pixels, without leaving the
    device (the same steps as ``FaceMesh(static_image_mode=True, max_num_faces=1)``)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, compile: bool, min_confidence: float = 0.5):
        self.device = device
        self.gp = GpuLandmarkPredictor(refine=True, device=device, dtype=dtype, compile=compile)
        if device.type != "cuda" and dtype != torch.float32:
            self.gp._forward = autocast_wrapped(self.gp._forward, device, dtype)
        det = FaceDetector(min_confidence, device=device)
        self.detector_net = det.net
        self.detect_forward = autocast_wrapped(det.net, device, dtype)
        self.det_size = det.input_size
        self.min_confidence = min_confidence

    @torch.inference_mode()
    def rois(self, canvas: torch.Tensor, letterbox: torch.Tensor) -> torch.Tensor:
        """Face ROIs (N, 4) ``cx, cy, size, rotation`` in canvas pixels, the best face of each image."""
        x = crop_rois(canvas, letterbox, self.det_size) * (2.0 / 255.0) - 1.0
        out = self.detect_forward(x)
        boxes = decode_boxes(out.offsets.float(), self.detector_net.anchors.float())  # (N, A, 16), [0, 1]
        scores = scores_from_logits(out.logits.float())  # (N, A)
        valid = (scores >= self.min_confidence) & (boxes[..., 2] >= boxes[..., 0]) & \
            (boxes[..., 3] >= boxes[..., 1]) & torch.isfinite(boxes).all(-1)
        best = torch.where(valid, scores, -1.0).argmax(1)
        best_box = boxes.gather(1, best.view(-1, 1, 1).expand(-1, 1, 16))  # (N, 1, 16)
        iw = (torch.minimum(best_box[..., 2], boxes[..., 2]) - torch.maximum(best_box[..., 0], boxes[..., 0]))
        ih = (torch.minimum(best_box[..., 3], boxes[..., 3]) - torch.maximum(best_box[..., 1], boxes[..., 1]))
        inter = torch.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
        union = area.gather(1, best.view(-1, 1)) + area - inter
        iou = torch.where(union > 0, inter / union.clamp_min(1e-12), 0.0)
        members = (valid & (iou > NMS_IOU)) | torch.nn.functional.one_hot(best, boxes.shape[1]).bool()
        w = torch.where(members, scores, 0.0).double()
        merged = ((boxes.double() * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)).float()  # (N, 16)
        pts = (merged.view(-1, 8, 2) - 0.5) * letterbox[:, 2].view(-1, 1, 1) + letterbox[:, None, :2]
        (x0, y0), (x1, y1), eye_r, eye_l = pts[:, 0].unbind(-1), pts[:, 1].unbind(-1), pts[:, 2], pts[:, 3]
        rotation = torch.atan2(eye_l[:, 1] - eye_r[:, 1], eye_l[:, 0] - eye_r[:, 0])
        size = ROI_SCALE * torch.maximum(x1 - x0, y1 - y0)
        return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, size, rotation], -1)

    @torch.inference_mode()
    def __call__(self, canvas: torch.Tensor, letterbox: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gp.predict_batch(canvas, self.rois(canvas, letterbox))


# -- timing -------------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(f: Callable[[], object], device: torch.device, batch: int, rounds: int, warmup: int,
              min_faces: int) -> float:
    """Faces/s: median over ``rounds`` rounds, each of enough calls to cover ``min_faces`` faces."""
    for _ in range(warmup):
        f()
    sync(device)
    calls = max(1, math.ceil(min_faces / batch))
    rates = []
    for _ in range(rounds):
        sync(device)
        t = time.perf_counter()
        for _ in range(calls):
            f()
        sync(device)
        rates.append(calls * batch / (time.perf_counter() - t))
    return float(np.median(rates))


def deviation_iod(half: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """Per face: mean 2D landmark distance of ``half`` from ``ref`` in % of ``ref``'s IOD."""
    half, ref = half.float().cpu(), ref.float().cpu()
    iod = (ref[:, EYE_R, :2] - ref[:, EYE_L, :2]).norm(dim=-1)
    return ((half[..., :2] - ref[..., :2]).norm(dim=-1).mean(1) / iod * 100).numpy()


def cpu_supports(dtype: torch.dtype) -> bool:
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
            y = torch.nn.functional.conv2d(torch.ones(1, 4, 8, 8), torch.ones(4, 1, 3, 3), groups=4)
        return y.dtype == dtype
    except (RuntimeError, TypeError):
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    p.add_argument("--dtype", default=None, help="comma list of fp32, fp16, bf16 (default: fp32,fp16 on CUDA, "
                   "fp32,bf16 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the mesh network (mode=max-autotune)")
    p.add_argument("--max-batch", type=int, default=None, help="largest batch (default 1024 on CUDA, 64 on CPU)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--min-faces", type=int, default=None,
                   help="faces per timed round at least (default 1024 on CUDA, 16 on CPU)")
    p.add_argument("--images", type=int, default=128, help="distinct 300-W images (tiled up to the batch size)")
    p.add_argument("--side", type=int, default=640, help="longer image side after shrinking, pixels")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = p.parse_args()

    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    max_batch = a.max_batch or (1024 if cuda else 64)
    min_faces = a.min_faces or (1024 if cuda else 16)
    batches = [b for b in BATCHES if b <= max_batch]
    names = (a.dtype or ("fp32,fp16" if cuda else "fp32,bf16")).split(",")
    for n in names:
        if n not in DTYPES:
            raise SystemExit(f"unknown dtype {n!r}; choose from {list(DTYPES)}")
    if "fp32" not in names:
        names.insert(0, "fp32")  # the deviation's reference
    skipped: dict[str, str] = {}
    for n in names[1:]:
        if not cuda and (n == "fp16" or not cpu_supports(DTYPES[n])):
            skipped[n] = "not run on CPU" if n == "fp16" else "CPU autocast does not support it here"
        elif cuda and n == "bf16" and not torch.cuda.is_bf16_supported():
            skipped[n] = "this GPU does not support it"
    run_names = [n for n in names if n not in skipped]

    images = load_images(min(a.images, max(batches)) if not cuda else a.images, a.side)
    canvas_host, letterbox_host, offsets = canvas_batch(images)
    pipes = {n: DevicePipeline(device, DTYPES[n], a.compile) for n in run_names}

    # Real face crops for the model-only runs: the float32 pipeline's ROIs on the distinct images.
    canvas_all = canvas_host.to(device)
    face_rois = pipes["fp32"].rois(canvas_all, letterbox_host.to(device))
    crops_all = crop_rois(canvas_all, face_rois, pipes["fp32"].gp.input_size).div_(255.0)
    del canvas_all

    model_fps: dict[tuple[str, int], float] = {}
    e2e_fps: dict[tuple[str, int], float] = {}
    peak: dict[tuple[str, int], float] = {}
    dev: dict[tuple[str, int], np.ndarray] = {}
    dev_model: dict[tuple[str, int], np.ndarray] = {}
    for b in batches:
        canvas = tile(canvas_host, b).to(device)
        letterbox = tile(letterbox_host, b).to(device)
        crops = tile(crops_all, b)
        out: dict[str, torch.Tensor] = {}
        out_model: dict[str, torch.Tensor] = {}
        for n in run_names:
            pipe = pipes[n]
            timing = dict(device=device, batch=b, rounds=a.rounds, warmup=a.warmup, min_faces=min_faces)
            model_fps[(n, b)] = time_call(lambda pipe=pipe, crops=crops: pipe.gp.run_tensor(crops), **timing)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            e2e_fps[(n, b)] = time_call(lambda pipe=pipe, c=canvas, lb=letterbox: pipe(c, lb), **timing)
            if cuda:
                peak[(n, b)] = torch.cuda.max_memory_allocated(device) / 2**20
            out[n] = pipe(canvas, letterbox)[0]
            out_model[n] = pipe.gp.run_tensor(crops)[0]
        for n in run_names[1:]:
            dev[(n, b)] = deviation_iod(out[n], out["fp32"])
            dev_model[(n, b)] = deviation_iod(out_model[n], out_model["fp32"])
        del canvas, letterbox, crops, out, out_model
        if cuda:
            torch.cuda.empty_cache()

    # Sanity check of the device pipeline against FaceMesh (torch, CPU, OpenCV crops) on a few images.
    check = min(8, len(images))
    import attnmesh

    with attnmesh.FaceMesh(static_image_mode=True, backend="torch") as fm:
        ref_faces = fm.process_batch(images[:check])
    ours = pipes["fp32"](canvas_host[:check].to(device), letterbox_host[:check].to(device))[0].cpu().clone()
    ours[..., :2] -= offsets[:check, None, :]
    agree = [float(deviation_iod(ours[i:i + 1], torch.from_numpy(f[0].landmarks)[None])[0])
             for i, f in enumerate(ref_faces) if f]

    def col(d: dict, n: str, b: int, fmt: str) -> str:
        return format(d[(n, b)], fmt) if (n, b) in d else "—"

    half = names[1:]
    header = ["batch"] + [f"model {n} faces/s" for n in names] + [f"end to end {n} faces/s" for n in names] + \
        [f"peak MiB {n}" for n in names] + [f"{n} vs fp32 end to end, % IOD mean / max" for n in half] + \
        [f"{n} vs fp32 model only, % IOD mean / max" for n in half]
    print(f"machine: {describe()}; torch {torch.__version__}; device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if cuda else f", {torch.get_num_threads()} threads")
          + f"; compile {a.compile}\n")
    print(f"{len(images)} distinct 300-W images, longer side <= {a.side} px, on a {canvas_host.shape[-1]} px "
          f"square canvas, tiled to the batch; one face per image; median of {a.rounds} rounds of >= "
          f"{min_faces} faces after {a.warmup} warm-up calls")
    for n, why in skipped.items():
        print(f"{n}: skipped ({why})")
    print()
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for b in batches:
        cells = [str(b)] + [col(model_fps, n, b, ".0f") for n in names] + [col(e2e_fps, n, b, ".0f") for n in names]
        cells += [col(peak, n, b, ".0f") for n in names]
        cells += [f"{d[(n, b)].mean():.3f} / {d[(n, b)].max():.3f}" if (n, b) in d else "—"
                  for d in (dev, dev_model) for n in half]
        print("| " + " | ".join(cells) + " |")
    print()
    print("end to end = images on the device -> detector -> face ROI -> crops on the device (grid_sample) -> "
          "mesh -> image pixels; peak = torch.cuda.max_memory_allocated in the end-to-end run (canvas batch "
          "included); deviation end to end: detector and mesh in half precision; model only: the mesh on the "
          "same crops; the issue's bar for half precision: <= 0.3% IOD")
    if agree:
        print(f"check: device pipeline fp32 vs FaceMesh(backend='torch', CPU) on {len(agree)} images: "
              f"{np.mean(agree):.3f}% IOD mean, {np.max(agree):.3f}% max")


if __name__ == "__main__":
    main()
