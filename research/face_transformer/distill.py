"""Distillation of the face transformer from the imported Attention Mesh, plus the other heads' losses.

    python -m research.face_transformer.data --out out/ft_cache            # once: teacher outputs cached
    python -m research.face_transformer.distill STAGE.toml                 # one stage's settings
    python -m research.face_transformer.recipe --run stage1                # a stage of recipe.toml

Losses (weights in the config's ``[loss]``):

* ``landmarks``: output distillation: per point, the 2D distance between the student's and the teacher's
  landmarks (input pixels), divided by the teacher's inter-ocular distance (33-263), averaged; plus
  ``landmarks_z`` x the same for z. Only faces the teacher accepts (presence >= 0.5).
* ``expression``: binary cross-entropy against the [0, 1] labels derived from the teacher's landmarks
  (:func:`research.face_transformer.data.expression_measures`).
* ``embedding``: ArcFace (additive angular margin ``arc_margin``, scale ``arc_scale``) over the training
  identities of YTF (the person name in the file name); other samples do not enter it.
* ``presence``: BCE of the face logit against the teacher's presence probability (faces and the random
  non-face crops of the cache).
* ``spoof``: BCE against live(0)/spoof(1) labels. Weight 0: there is no live/spoof data in this project, so
  the shipped head is untrained. :func:`train_spoof` is the entry point for when such data exists.

Phase 2 (:func:`refit_heads`, ``refit_epochs``): the backbone frozen, the embedding and expression heads are
refitted on cached pooled features of a few augmented views of every training face (seconds per epoch).

The learning rate follows a warm-up then a cosine over the *wall-clock* budget (``minutes``), so a run ends on
time on a shared CPU whatever its speed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnmesh.models.face_transformer import EMBEDDING_DIM, FaceTransformer
from attnmesh.topology import mirror_478
from attnmesh.train.trainer import build_config, read_config_file
from attnmesh.weights import read_weights_file
from attnmesh.weights.checkpoints import model_from_checkpoint, read_checkpoint

from .composite import BETWEEN_VIEWS
from .data import (COMPOSITE_SOURCE, DEGRADED_SOURCE, DETECTOR_VIEW, MORPHED_SOURCE, ROTATED_SOURCE,
                   SYNTHETIC_SOURCES, Augment, Cache, make_batch)


@dataclass
class LossWeights:
    landmarks: float = 1.0
    coarse: float = 0.5  # the global head's landmarks before point refinement (models with a refiner)
    landmarks_z: float = 0.2
    expression: float = 0.05
    embedding: float = 0.02
    presence: float = 0.02
    spoof: float = 0.0


@dataclass
class DistillConfig:
    cache: str = "out/ft_cache"
    out: str = "out/ft_run"
    size: str = "xs"
    input_size: int = 128
    refine_dim: int = -1  # point refiner width; -1: the size's default, 0: none
    refine_steps: int = -1  # point refiners in sequence; -1: the size's default
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.02
    warmup_steps: int = 50
    minutes: float = 20.0
    max_steps: int = 0  # 0: until the time budget is spent
    stop_step: int = 0  # > 0: stop after this step, the schedule unchanged (stage 2 of the shipped recipe)
    seed: int = 0
    threads: int = 1
    arc_margin: float = 0.3
    arc_scale: float = 30.0
    identity_fraction: float = 0.25  # share of each batch drawn from YTF identities (the embedding's signal)
    log_every: int = 20
    checkpoint_every: int = 200
    refit_epochs: int = 60  # phase 2 (frozen backbone): embedding and expression heads; 0 = skip
    refit_copies: int = 3
    init: str = ""  # optional checkpoint to continue from (weights only; a fresh warm-up + cosine schedule)
    augment: Augment = field(default_factory=Augment)
    loss: LossWeights = field(default_factory=LossWeights)

    @classmethod
    def from_table(cls, table: dict, base: Path | str, where: str = "config") -> DistillConfig:
        """The config of a table of settings (``[augment]`` and ``[loss]`` as sub-tables), checked key by key
        by :func:`attnmesh.train.trainer.build_config` (unknown keys and wrong types are a ``ConfigError``);
        ``cache``, ``out`` and ``init`` are taken relative to the folder ``base``."""
        raw = dict(table)
        aug = build_config(Augment, raw.pop("augment", {}), f"{where} [augment]")
        loss = build_config(LossWeights, raw.pop("loss", {}), f"{where} [loss]")
        cfg = build_config(cls, raw, where)
        cfg.augment, cfg.loss = aug, loss
        for key in ("cache", "out", "init"):  # relative to the config file
            p = Path(getattr(cfg, key))
            if getattr(cfg, key) and not p.is_absolute():
                setattr(cfg, key, str((Path(base).resolve() / p).resolve()))
        return cfg

    @classmethod
    def from_file(cls, path: Path | str) -> DistillConfig:
        """The config in a ``.toml`` / ``.json`` / ``.yaml`` file (:func:`attnmesh.train.trainer.read_config_file`),
        paths relative to the file's folder."""
        return cls.from_table(read_config_file(path), Path(path).parent)


class ArcFace(nn.Module):
    """Additive angular margin softmax (Deng et al., 2019) over ``classes`` identity centres."""

    def __init__(self, classes: int, dim: int = EMBEDDING_DIM, margin: float = 0.3, scale: float = 30.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = embedding @ F.normalize(self.weight, dim=-1).T
        theta = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
        target = torch.cos(theta + self.margin)
        onehot = F.one_hot(labels, cos.shape[1]).bool()
        logits = torch.where(onehot, target, cos) * self.scale
        return F.cross_entropy(logits, labels)


def landmark_loss(pred: torch.Tensor, teacher: torch.Tensor, z_weight: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-face mean 2D distance / teacher IOD) for (B, 478, 3) tensors."""
    iod = (teacher[:, 33, :2] - teacher[:, 263, :2]).norm(dim=-1).clamp_min(1.0)
    d = (pred[..., :2] - teacher[..., :2]).norm(dim=-1).mean(-1) / iod
    dz = (pred[..., 2] - teacher[..., 2]).abs().mean(-1) / iod
    return (d + z_weight * dz).mean(), d.detach()


def load_init(model: FaceTransformer, state: dict[str, torch.Tensor], log=print) -> None:
    """Load a checkpoint's weights into ``model``. A checkpoint of a model without a point refiner may start a
    model with one (the refiner starts as the identity); any other missing or unexpected key is an error."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith("refiners.")]
    if bad or unexpected:
        raise ValueError(f"init checkpoint does not fit: missing {bad}, unexpected {unexpected}")
    if missing:
        log(f"init checkpoint has no point refiner: {len(missing)} refiner tensors start fresh (identity)")


def save_checkpoint(model: FaceTransformer, step: int, path: Path) -> None:
    """Weights, size, input size and step (the point-refiner settings are read off the weights on loading,
    :func:`attnmesh.weights.checkpoints.read_checkpoint`)."""
    torch.save({"architecture": "face_transformer", "model": model.state_dict(), "size": model.size,
                "input_size": model.input_size, "step": step}, path)


def spoof_loss(logit: torch.Tensor, is_spoof: torch.Tensor) -> torch.Tensor:
    """Live (0) / spoof (1) binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(logit, is_spoof.float())


def lr_at(cfg: DistillConfig, step: int, progress: float) -> float:
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    return cfg.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _sample_indices(cache: Cache, train: np.ndarray, with_id: np.ndarray, cfg: DistillConfig,
                    rng: np.random.Generator) -> np.ndarray:
    k = int(round(cfg.batch_size * cfg.identity_fraction)) if len(with_id) else 0
    return np.concatenate([rng.choice(train, cfg.batch_size - k), rng.choice(with_id, k) if k else []]).astype(int)


@torch.no_grad()
def evaluate_landmarks(model: FaceTransformer, cache: Cache, idx: np.ndarray, batch: int = 64,
                       view: int = 0) -> np.ndarray:
    """Per-face mean distance to the teacher / teacher IOD on the un-augmented crops of ``idx``: the face ROI
    (``view`` 0) or another cached view (``DETECTOR_VIEW``: the detector's ROI), against the teacher's answer on
    that crop."""
    model.eval()
    errs = []
    for s in range(0, len(idx), batch):
        b = make_batch(cache, idx[s:s + batch], model.input_size, Augment.none(), np.random.default_rng(0),
                       view=view)
        out = model(torch.from_numpy(b["image"]))
        errs.append(landmark_loss(out.landmarks, torch.from_numpy(b["teacher"]))[1].numpy())
    return np.concatenate(errs) if errs else np.zeros(0)


def hard_views(cache: Cache, source: str) -> tuple[str, range]:
    """What a synthetic source's items are for: (name, the views of each item that hold the hard case).
    Composites: the last ``BETWEEN_VIEWS`` (drawn between two faces); rotated items: every view but the face
    ROI; degraded and morphed items: every view (the whole crop is edited)."""
    n = cache.views.shape[1]
    return {COMPOSITE_SOURCE: ("between views", range(n - BETWEEN_VIEWS, n)),
            ROTATED_SOURCE: ("rotated views", range(1, n)),
            DEGRADED_SOURCE: ("all views", range(n)),
            MORPHED_SOURCE: ("all views", range(n))}[source]


def evaluate_views(model: FaceTransformer, cache: Cache, idx: np.ndarray, views: range) -> float:
    """Mean error (fraction of IOD) over the items ``idx`` on their ``views``, where the teacher finds a face
    (presence >= 0.5)."""
    errs = []
    for v in views:
        ok = idx[cache.view_score[idx, v] >= 0.5]
        errs.append(evaluate_landmarks(model, cache, ok, view=v))
    return float(np.concatenate(errs).mean())


def synthetic_report(model: FaceTransformer, cache: Cache, synthetic_val: dict[str, np.ndarray]) -> dict[str, float]:
    """{"<source> <hard views>": mean % IOD} over the validation items of each synthetic source."""
    out = {}
    for source, idx in synthetic_val.items():
        name, views = hard_views(cache, source)
        out[f"{source} {name}"] = 100 * evaluate_views(model, cache, idx, views)
    return out


def mean_shape(cache: Cache, idx: np.ndarray, size: int) -> torch.Tensor:
    k = size / (cache.crops.shape[1] / 1.25)
    t = cache.teacher[idx].mean(0).astype(np.float64)
    out = t.copy()
    out[:, :2] = (t[:, :2] - cache.crops.shape[1] / 2) * k + size / 2
    out[:, 2] = t[:, 2] * k
    return torch.from_numpy(out).float()


def train(cfg: DistillConfig, log=print) -> tuple[FaceTransformer, list[dict]]:
    """Run the distillation recipe ``cfg``; returns the model (eval mode) and the log records."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    cache = Cache(Path(cfg.cache))
    faces = cache.is_face & (cache.score >= 0.5)
    train_idx = np.nonzero((cache.split == "train") & (faces | ~cache.is_face))[0]
    with_id = np.nonzero((cache.identity >= 0) & faces)[0]
    synthetic = np.isin(cache.source, SYNTHETIC_SOURCES)
    val_idx = np.nonzero((cache.split == "val") & faces & ~synthetic)[0]
    synthetic_val = {src: np.nonzero((cache.split == "val") & faces & (cache.source == src))[0]
                     for src in SYNTHETIC_SOURCES}
    synthetic_val = {src: idx for src, idx in synthetic_val.items() if len(idx)}
    mirror = mirror_478() if cfg.augment.flip else None
    model = FaceTransformer(cfg.size, cfg.input_size, None if cfg.refine_dim < 0 else cfg.refine_dim,
                            None if cfg.refine_steps < 0 else cfg.refine_steps)
    if cfg.init:
        ck = read_checkpoint(cfg.init)
        if (ck["size"], ck["input_size"]) != (cfg.size, model.input_size):
            raise ValueError(f"init checkpoint is {ck['size']}@{ck['input_size']}, config wants "
                             f"{cfg.size}@{model.input_size}")
        load_init(model, ck["model"], log)
    else:
        model.init_mean_shape(mean_shape(cache, np.nonzero(faces & (cache.split == "train"))[0], model.input_size))
    arc = ArcFace(max(len(cache.identities), 1), margin=cfg.arc_margin, scale=cfg.arc_scale)
    params = [{"params": [p for n, p in model.named_parameters() if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in model.named_parameters() if p.ndim <= 1], "weight_decay": 0.0},
              {"params": arc.parameters(), "weight_decay": 0.0}]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    detector_view = cache.views.shape[1] > DETECTOR_VIEW
    if cfg.init and len(val_idx):
        err0 = evaluate_landmarks(model, cache, val_idx)
        msg = f"continuing from {cfg.init}: validation mean {100 * err0.mean():.3f}% IOD"
        if detector_view:
            err_det = evaluate_landmarks(model, cache, val_idx, view=DETECTOR_VIEW)
            msg += f" (face ROI), {100 * err_det.mean():.3f}% (detector ROI)"
        for name, err in synthetic_report(model, cache, synthetic_val).items():
            msg += f"; {name} {err:.3f}%"
        log(msg)
    log(f"train {len(train_idx)} samples ({len(with_id)} with identity, {len(cache.identities)} identities), "
        f"val {len(val_idx)} faces; flips {'on' if mirror is not None else 'off'}")
    records: list[dict] = []
    t0 = time.perf_counter()
    step = 0
    budget = cfg.minutes * 60.0
    running: dict[str, float] = {}
    while True:
        elapsed = time.perf_counter() - t0
        if (cfg.max_steps and step >= cfg.max_steps) or (not cfg.max_steps and elapsed >= budget):
            break
        if cfg.stop_step and step >= cfg.stop_step:
            break
        progress = step / cfg.max_steps if cfg.max_steps else elapsed / budget
        lr = lr_at(cfg, step, progress)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        idx = _sample_indices(cache, train_idx, with_id, cfg, rng)
        b = make_batch(cache, idx, model.input_size, cfg.augment, rng, mirror)
        out = model(torch.from_numpy(b["image"]))
        face_mask = torch.from_numpy((b["is_face"] > 0) & (b["score"] >= 0.5))
        teacher = torch.from_numpy(b["teacher"])
        losses = {}
        if face_mask.any():
            losses["landmarks"], _ = landmark_loss(out.landmarks[face_mask], teacher[face_mask], cfg.loss.landmarks_z)
            if len(model.refiners) and cfg.loss.coarse:
                losses["coarse"], _ = landmark_loss(out.coarse_landmarks[face_mask], teacher[face_mask],
                                                    cfg.loss.landmarks_z)
            losses["expression"] = F.binary_cross_entropy(out.expression[face_mask].clamp(1e-6, 1 - 1e-6),
                                                          torch.from_numpy(b["expression"])[face_mask])
        ident = torch.from_numpy(b["identity"]).long()
        has_id = ident >= 0
        if has_id.any() and cfg.loss.embedding:
            losses["embedding"] = arc(out.embedding[has_id], ident[has_id])
        losses["presence"] = F.binary_cross_entropy_with_logits(out.face_logit, torch.from_numpy(b["score"]))
        total = sum(getattr(cfg.loss, k) * v for k, v in losses.items())
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        for k, v in {"total": total, **losses}.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if step % cfg.log_every == 0:
            rec = {"step": step, "s": round(time.perf_counter() - t0, 1), "lr": lr,
                   **{k: v / cfg.log_every for k, v in running.items()}}
            running = {}
            records.append(rec)
            log(json.dumps(rec))
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save_checkpoint(model, step, out_dir / "checkpoint.pt")
    model.eval()
    save_checkpoint(model, step, out_dir / "checkpoint.pt")
    err = evaluate_landmarks(model, cache, val_idx)
    summary = {"steps": step, "seconds": round(time.perf_counter() - t0, 1),
               "val_faces": int(len(val_idx)), "val_mean_iod_pct": float(100 * err.mean()) if len(err) else None}
    if detector_view and len(val_idx):
        err_det = evaluate_landmarks(model, cache, val_idx, view=DETECTOR_VIEW)
        summary["val_detector_roi_mean_iod_pct"] = float(100 * err_det.mean())
    for src, idx in synthetic_val.items():
        summary[f"val_{src}_items"] = len(idx)
    for name, err in synthetic_report(model, cache, synthetic_val).items():
        summary[f"val_{name.replace(' ', '_')}_mean_iod_pct"] = float(err)
    log(json.dumps(summary))
    (out_dir / "log.json").write_text(json.dumps({"records": records, "summary": summary}, indent=1))
    return model, records


@torch.no_grad()
def pooled_features(model: FaceTransformer, cache: Cache, idx: np.ndarray, aug: Augment, rng: np.random.Generator,
                    mirror: np.ndarray | None = None, batch: int = 64) -> np.ndarray:
    """(len(idx), C) globally pooled last features (the input of the embedding/expression/spoof heads)."""
    model.eval()
    feats = []
    for s in range(0, len(idx), batch):
        b = make_batch(cache, idx[s:s + batch], model.input_size, aug, rng, mirror)
        feats.append(model(torch.from_numpy(b["image"])).features.mean((2, 3)).numpy())
    return np.concatenate(feats)


def refit_heads(model: FaceTransformer, cfg: DistillConfig, copies: int = 3, epochs: int = 60, log=print) -> dict:
    """Phase 2: with the backbone frozen, refit the embedding head (ArcFace over the YTF training identities)
    and the expression head (BCE) on the pooled features of ``copies`` augmented views of every training face
    (computed once, so hundreds of epochs cost seconds). Returns the final losses."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    cache = Cache(Path(cfg.cache))
    faces = np.nonzero((cache.split == "train") & cache.is_face & (cache.score >= 0.5)
                       & ~np.isin(cache.source, SYNTHETIC_SOURCES))[0]  # heads refit on the real faces only
    mirror = mirror_478() if cfg.augment.flip else None
    views = [Augment.none()] + [cfg.augment] * (copies - 1)
    feats = np.concatenate([pooled_features(model, cache, faces, v, rng, mirror) for v in views])
    idx = np.tile(faces, len(views))
    x = torch.from_numpy(feats)
    ident = torch.from_numpy(cache.identity[idx]).long()
    expr = torch.from_numpy(cache.expression[idx])
    arc = ArcFace(max(len(cache.identities), 1), margin=cfg.arc_margin, scale=cfg.arc_scale)
    heads = [model.embedding_out, model.expression_out]
    opt = torch.optim.AdamW([p for h in heads for p in h.parameters()] + list(arc.parameters()), lr=3e-3,
                            weight_decay=1e-3)
    has_id = ident >= 0
    losses = {}
    for epoch in range(epochs):
        for h in heads:
            h.train()
        perm = torch.randperm(len(x))
        for s in range(0, len(x), 256):
            j = perm[s:s + 256]
            e_loss = F.binary_cross_entropy(torch.sigmoid(model.expression_out(x[j])).clamp(1e-6, 1 - 1e-6), expr[j])
            k = j[has_id[j]]
            a_loss = arc(F.normalize(model.embedding_out(x[k]), dim=-1), ident[k]) if len(k) > 1 else x.new_zeros(())
            loss = e_loss + a_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses = {"expression": e_loss.item(), "embedding": a_loss.item()}
        if (epoch + 1) % 10 == 0:
            log(json.dumps({"refit_epoch": epoch + 1, **losses}))
    model.eval()
    return losses


def train_spoof(model: FaceTransformer, live: np.ndarray, spoof: np.ndarray, steps: int = 200, lr: float = 1e-3,
                batch: int = 32, seed: int = 0) -> FaceTransformer:
    """Fit the anti-spoofing head only (backbone frozen) on (N, 3, S, S) float crops in [0, 1] of live and
    spoof faces. Entry point for when real live/spoof data exists; the shipped head was never trained."""
    if not len(live) or not len(spoof):
        raise ValueError("train_spoof needs live and spoof crops (there are none in this project's data)")
    rng = np.random.default_rng(seed)
    x = np.concatenate([live, spoof]).astype(np.float32)
    y = np.concatenate([np.zeros(len(live)), np.ones(len(spoof))]).astype(np.float32)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.spoof_out.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.spoof_out.parameters(), lr=lr)
    model.eval()  # frozen BN statistics
    for _ in range(steps):
        i = rng.choice(len(x), batch)
        loss = spoof_loss(model(torch.from_numpy(x[i])).spoof_logit, torch.from_numpy(y[i]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def run_stage(cfg: DistillConfig, refit_only: bool = False, keep_before_refit: str = "", log=print) -> Path:
    """One stage of a recipe: distil (:func:`train`; skipped if ``refit_only``: the model is ``<out>/checkpoint.pt``,
    e.g. a soup), then refit the heads (:func:`refit_heads`, if ``cfg.refit_epochs``) into the same checkpoint.
    ``keep_before_refit``: a file name in ``out`` that keeps a copy of the checkpoint before the refit. Returns
    the checkpoint's path."""
    import shutil

    torch.set_num_threads(cfg.threads)
    path = Path(cfg.out) / "checkpoint.pt"
    if refit_only:
        ck = read_checkpoint(path)
        model = model_from_checkpoint(ck)
        step = ck["step"]
    else:
        model, _ = train(cfg, log=log)
        step = None
    if keep_before_refit:
        shutil.copyfile(path, Path(cfg.out) / keep_before_refit)
    if cfg.refit_epochs:
        refit_heads(model, cfg, copies=cfg.refit_copies, epochs=cfg.refit_epochs, log=log)
        ck = read_weights_file(path)
        torch.save({**ck, "model": model.state_dict(), "refit": True}, path)
        log(f"refit heads saved to {path} (distillation step {step or ck['step']})")
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m research.face_transformer.distill",
                                description="distil the face transformer from the Attention Mesh")
    p.add_argument("config", help="a stage's settings (.toml/.json/.yaml); the shipped stages are in recipe.toml")
    p.add_argument("--minutes", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--refit-only", action="store_true",
                   help="skip distillation: load <out>/checkpoint.pt and run only the head refit (phase 2)")
    args = p.parse_args(argv)
    try:
        cfg = DistillConfig.from_file(args.config)
    except (OSError, ValueError) as e:  # ConfigError, TOML/JSON syntax, a missing file
        raise SystemExit(f"error: {args.config}: {e}") from None
    if args.minutes is not None:
        cfg.minutes = args.minutes
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    run_stage(cfg, args.refit_only, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
