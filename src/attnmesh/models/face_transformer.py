"""A small real-time face transformer (MobileViT-style) with four task heads, distilled from the Attention Mesh.

Diagram, top to bottom (NCHW; "input space" = pixel coordinates of the ``input_size`` x ``input_size`` crop)::

    image (N, 3, 128, 128), RGB in [0, 1], the same face ROI as the Attention Mesh (resized)
      └─ stem: Conv3x3/2 + BN + SiLU ─────────────────────────► (N, c0, 64, 64)
      └─ InvertedResidual (MobileNetV2) /2 + one more ────────► (N, c1, 32, 32)
      └─ InvertedResidual /2 + MobileViTBlock (patch 2x2) ────► (N, c2, 16, 16)   64 patches per position
      └─ InvertedResidual /2 + MobileViTBlock (patch 2x2) ────► (N, c3, 8, 8)     16 patches per position
      └─ InvertedResidual /2 + Conv1x1 ───────────────────────► features (N, c5, 4, 4)
           ├─ coarse landmarks: Conv1x1 -> flatten -> Linear ─► (N, 478, 3), input space (x, y; z on x's scale)
           │    └─ point refinement (optional, ``refine_dim``): sample the /2, /4, /8 and /16 maps at every
           │       coarse point (bilinear, one spatial-transformer sample per landmark), per-point MLP ──►
           │       offsets (N, 478, 3) added to the coarse points ─► landmarks
           └─ global average pool ─┬─ embedding:  Linear -> BN -> L2 norm ─► (N, 128)
                                   ├─ expression: Linear -> SiLU -> Linear -> sigmoid ─► (N, 3) in [0, 1]
                                   │             (mouth open, smile, eyes closed)
                                   ├─ spoof_logit:  Linear -> SiLU -> Linear ─► (N,) live/spoof logit
                                   └─ face_logit:   Linear ─► (N,) face presence logit

**MobileViT block** (Mehta & Rastegari, 2022): a local 3x3 conv and a 1x1 projection to ``dim``; the map is
*unfolded* into non-overlapping ``p x p`` patches, so that the ``P = p*p`` pixels at the same position of every
patch form one sequence of ``N = H*W/P`` tokens; a pre-norm transformer (multi-head self-attention, MLP) runs
over each sequence (global receptive field, cost ``O(P * N^2 * dim) = O(H*W * N * dim)``); the sequences are
*folded* back into the map, projected back to ``C`` channels and fused with the block input (concat + 3x3 conv).

**Point refinement** (:class:`PointRefiner`): the global head regresses all 478 points from a 4x4 map, whose
cells are 32 input pixels wide. The refiner reads the higher-resolution maps where each coarse point landed
(``grid_sample`` at the point, the spatial transformer of the Attention Mesh reduced to one sample per
landmark), adds a learned per-landmark embedding, and a shared MLP followed by a per-landmark linear layer
predicts a (dx, dy, dz) correction. Its last layer starts at zero, so a refiner added to a trained model
starts as the identity. The sampling positions are detached: the refiner learns a residual, the coarse head
keeps its own loss.

Landmarks are in the crop's own pixels: ``teacher_192 * input_size / 192`` for the same ROI, so output
distillation from the Attention Mesh is a direct regression.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import topology

NUM_LANDMARKS = topology.NUM_REFINED_LANDMARKS  # 478
EMBEDDING_DIM = 128
EXPRESSIONS = ("mouth_open", "smile", "eyes_closed")
DEFAULT_INPUT_SIZE = 128


@dataclass(frozen=True)
class FaceTransformerConfig:
    """Widths and depths of one model size."""

    channels: tuple[int, int, int, int, int]  # stem, /4, /8, /16, /32 stages
    vit_dims: tuple[int, int]  # transformer width of the /8 and /16 MobileViT blocks
    vit_depths: tuple[int, int]
    final: int  # channels of the 4x4 feature map
    heads: int = 4
    patch: int = 2
    expand: int = 2  # inverted-residual expansion
    mlp_ratio: float = 2.0
    landmark_channels: int = 64
    input_size: int = DEFAULT_INPUT_SIZE
    refine_dim: int = 0  # width of the point refiner's sampled features; 0 = no refinement
    refine_steps: int = 1  # point refiners applied one after the other, each at the last one's points


SIZES: dict[str, FaceTransformerConfig] = {
    "xs": FaceTransformerConfig(channels=(16, 24, 48, 64, 96), vit_dims=(64, 80), vit_depths=(2, 2), final=192,
                                refine_dim=64),
    "s": FaceTransformerConfig(channels=(16, 32, 64, 96, 128), vit_dims=(96, 128), vit_depths=(2, 3), final=256,
                               expand=3, refine_dim=64),
}


def conv_bn(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(out_ch)]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 2) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        self.block = nn.Sequential(conv_bn(in_ch, hidden), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                   conv_bn(hidden, out_ch, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


def unfold_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, D, H, W) -> (B * patch * patch, H*W / patch^2, D): sequence ``k`` of image ``b`` holds the pixel at
    offset ``k = (i, j)`` inside every ``patch x patch`` patch, in raster order of the patches. H and W must be
    multiples of ``patch``. Pure reshapes/permutes: :func:`fold_patches` inverts it exactly."""
    b, d, h, w = x.shape
    gh, gw = h // patch, w // patch
    x = x.reshape(b, d, gh, patch, gw, patch).permute(0, 3, 5, 2, 4, 1)  # b, i, j, gh, gw, d
    return x.reshape(b * patch * patch, gh * gw, d)


def fold_patches(tokens: torch.Tensor, patch: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`unfold_patches`: (B * patch^2, H*W / patch^2, D) -> (B, D, H, W)."""
    bp, n, d = tokens.shape
    gh, gw = h // patch, w // patch
    x = tokens.reshape(-1, patch, patch, gh, gw, d).permute(0, 5, 3, 1, 4, 2)  # b, d, gh, i, gw, j
    return x.reshape(-1, d, h, w)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, heads, n, head_dim)
        attn = torch.softmax((q * self.head_dim ** -0.5) @ k.transpose(-2, -1), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    """Pre-norm encoder layer: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTBlock(nn.Module):
    """Local conv + 1x1 projection, unfold into patches, transformer over patches, fold, project back, fuse."""

    def __init__(self, channels: int, dim: int, depth: int, heads: int = 4, patch: int = 2,
                 mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.patch = patch
        self.local = nn.Sequential(conv_bn(channels, channels, 3), nn.Conv2d(channels, dim, 1, bias=False))
        self.transformer = nn.Sequential(*[TransformerLayer(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.project = conv_bn(dim, channels)
        self.fuse = conv_bn(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if torch.jit.is_tracing():  # ONNX export: the map size is fixed per model, export constant reshapes
            h, w = int(h), int(w)
        y = self.local(x)
        tokens = self.norm(self.transformer(unfold_patches(y, self.patch)))
        y = self.project(fold_patches(tokens, self.patch, h, w))
        return self.fuse(torch.cat([x, y], 1))


def sample_points(feature: torch.Tensor, points: torch.Tensor, input_size: int) -> torch.Tensor:
    """Bilinear samples of ``feature`` (N, C, h, w), covering the whole ``input_size`` crop, at ``points``
    (N, P, 2+) in input pixels (pixel ``i`` spans ``[i, i + 1)``, the landmarks' convention) -> (N, P, C).
    Outside the map the border value is used."""
    grid = (points[..., :2] * (2.0 / input_size) - 1.0).unsqueeze(1)  # (N, 1, P, 2), align_corners=False frame
    out = F.grid_sample(feature, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.squeeze(2).transpose(1, 2)


class PointRefiner(nn.Module):
    """Per-landmark correction from features sampled where the coarse landmarks fell.

    Every map in ``in_channels`` is sampled at each coarse point (:func:`sample_points`); a linear layer
    projects the concatenated samples to ``dim`` (the same as a 1x1 conv on each map before sampling, since
    bilinear sampling is linear, at a fraction of the cost) and a learned embedding of the landmark is added; a
    shared LayerNorm -> Linear -> SiLU -> Linear -> SiLU turns that into ``hidden`` features, and one linear map
    per landmark (``weight`` (P, hidden, 3), zero at start) gives its (dx, dy, dz) in input pixels."""

    def __init__(self, in_channels: tuple[int, ...], num_points: int = NUM_LANDMARKS, dim: int = 64,
                 hidden: int = 64) -> None:
        super().__init__()
        self.project = nn.Linear(sum(in_channels), dim)
        self.point_embedding = nn.Parameter(torch.randn(num_points, dim) * 0.02)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU())
        self.weight = nn.Parameter(torch.zeros(num_points, hidden, 3))
        self.bias = nn.Parameter(torch.zeros(num_points, 3))

    def forward(self, features: list[torch.Tensor], coarse: torch.Tensor, input_size: int) -> torch.Tensor:
        """``features``: the maps of ``in_channels``; ``coarse``: (N, P, 3) input pixels -> refined (N, P, 3)."""
        where = coarse.detach()
        sampled = torch.cat([sample_points(feature, where, input_size) for feature in features], -1)
        h = self.mlp(self.project(sampled) + self.point_embedding)  # (N, P, hidden)
        offset = (h.unsqueeze(-1) * self.weight).sum(-2) + self.bias
        return coarse + offset


class FaceTransformerOutput(NamedTuple):
    """Outputs of :class:`FaceTransformer`.

    ``landmarks``: (N, 478, 3) in input-space pixels (x, y; z relative depth on x's scale), the Attention Mesh's
    points scaled by ``input_size / 192``; ``embedding``: (N, 128) L2-normalised identity embedding;
    ``expression``: (N, 3) in [0, 1] (:data:`EXPRESSIONS`); ``spoof_logit``: (N,) live(-)/spoof(+) logit
    (UNTRAINED in the shipped weights: no live/spoof data); ``face_logit``: (N,) face presence logit;
    ``features``: (N, C, 4, 4) last feature map (for feature distillation or new heads); ``coarse_landmarks``:
    the global head's landmarks before point refinement (equal to ``landmarks`` without a refiner).
    """

    landmarks: torch.Tensor
    embedding: torch.Tensor
    expression: torch.Tensor
    spoof_logit: torch.Tensor
    face_logit: torch.Tensor
    features: torch.Tensor
    coarse_landmarks: torch.Tensor


class FaceTransformer(nn.Module):
    """MobileViT-style face model; ``size`` is ``"xs"`` or ``"s"`` (see :data:`SIZES`)."""

    def __init__(self, size: str = "xs", input_size: int | None = None, refine_dim: int | None = None,
                 refine_steps: int | None = None) -> None:
        """``input_size``: crop side in pixels (a multiple of 32; default the size's); ``refine_dim``: width of
        the point refiner, 0 for none; ``refine_steps``: refiners in sequence (defaults: the size's)."""
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        cfg = SIZES[size]
        if refine_dim is not None:
            cfg = replace(cfg, refine_dim=refine_dim)
        if refine_steps is not None:
            cfg = replace(cfg, refine_steps=refine_steps)
        self.size = size
        self.config = cfg
        self.input_size = input_size or cfg.input_size
        if self.input_size % 32:
            raise ValueError("input_size must be a multiple of 32")
        c0, c1, c2, c3, c4 = cfg.channels
        e = cfg.expand
        self.stem = conv_bn(3, c0, 3, 2)
        self.stage2 = nn.Sequential(InvertedResidual(c0, c1, 2, e), InvertedResidual(c1, c1, 1, e))
        self.stage3 = nn.Sequential(InvertedResidual(c1, c2, 2, e),
                                    MobileViTBlock(c2, cfg.vit_dims[0], cfg.vit_depths[0], cfg.heads, cfg.patch,
                                                   cfg.mlp_ratio))
        self.stage4 = nn.Sequential(InvertedResidual(c2, c3, 2, e),
                                    MobileViTBlock(c3, cfg.vit_dims[1], cfg.vit_depths[1], cfg.heads, cfg.patch,
                                                   cfg.mlp_ratio))
        self.stage5 = nn.Sequential(InvertedResidual(c3, c4, 2, e), conv_bn(c4, cfg.final))
        grid = self.input_size // 32
        self.landmark_reduce = conv_bn(cfg.final, cfg.landmark_channels)
        self.landmark_out = nn.Linear(cfg.landmark_channels * grid * grid, 3 * NUM_LANDMARKS)
        self.embedding_out = nn.Sequential(nn.Linear(cfg.final, EMBEDDING_DIM, bias=False),
                                           nn.BatchNorm1d(EMBEDDING_DIM))
        self.expression_out = nn.Sequential(nn.Linear(cfg.final, 64), nn.SiLU(), nn.Linear(64, len(EXPRESSIONS)))
        self.spoof_out = nn.Sequential(nn.Linear(cfg.final, 64), nn.SiLU(), nn.Linear(64, 1))
        self.face_out = nn.Linear(cfg.final, 1)
        steps = cfg.refine_steps if cfg.refine_dim else 0
        self.refiners = nn.ModuleList(PointRefiner((c0, c1, c2, c3), NUM_LANDMARKS, cfg.refine_dim)
                                      for _ in range(steps))
        nn.init.normal_(self.landmark_out.weight, std=1e-3)
        nn.init.zeros_(self.landmark_out.bias)

    def init_mean_shape(self, mean_shape: torch.Tensor) -> None:
        """Start the landmark head at ``mean_shape`` (478, 3), input-space pixels."""
        with torch.no_grad():
            self.landmark_out.bias.copy_(mean_shape.reshape(-1).to(self.landmark_out.bias))

    def forward(self, image: torch.Tensor) -> FaceTransformerOutput:
        """``image``: (N, 3, S, S) RGB in [0, 1], S = ``input_size``."""
        f1 = self.stem(image * 2.0 - 1.0)
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        x = self.stage5(f4)
        coarse = self.landmark_out(self.landmark_reduce(x).flatten(1)).reshape(-1, NUM_LANDMARKS, 3)
        landmarks = coarse
        for refiner in self.refiners:
            landmarks = refiner([f1, f2, f3, f4], landmarks, self.input_size)
        pooled = x.mean((2, 3))
        embedding = F.normalize(self.embedding_out(pooled), dim=-1)
        expression = torch.sigmoid(self.expression_out(pooled))
        spoof = self.spoof_out(pooled).reshape(-1)
        face = self.face_out(pooled).reshape(-1)
        return FaceTransformerOutput(landmarks, embedding, expression, spoof, face, x, coarse)


def attention_flops(tokens: int, dim: int, sequences: int) -> int:
    """Multiply-adds of the two attention products (QK^T and AV) of one layer: ``2 * sequences * tokens^2 * dim``."""
    return 2 * sequences * tokens * tokens * dim


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["EMBEDDING_DIM", "EXPRESSIONS", "SIZES", "FaceTransformer", "FaceTransformerConfig",
           "FaceTransformerOutput", "MobileViTBlock", "PointRefiner", "TransformerLayer", "attention_flops", "count_parameters",
           "fold_patches", "sample_points", "unfold_patches"]
