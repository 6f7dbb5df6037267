"""``attnmesh train CONFIG``: the paper's two training phases, with distillation from the imported model.

**Phase 1** (``ideal_crops = true``): "ideal crops from the ground truth with slight augmentations, all
submodels trained independently". The region crops (lips, eyes) are cut from the feature map with transforms
computed from the **target mesh** (the teacher mesh corrected by the annotations, see
:func:`attnmesh.train.datasets.corrected_targets`), jittered slightly (``crop_jitter``: rotation, scale and
shift of the 16x16 crop), instead of from the model's own mesh; the mesh sub-model learns the mesh at the
same time. **Phase 2** (``ideal_crops = false``): "crop locations from the model itself": the ordinary forward
pass, end to end through the differentiable spatial transformer (``detach_transforms`` cuts that gradient).

Losses, each a mean point distance divided by the target's inter-ocular distance (vertices 33-263) in the
192x192 crop, weighted by ``[loss]``:

* ``mesh``: the 468-point mesh head against the target mesh (x, y; plus ``mesh_z`` x the z error);
* ``lips``, ``eyes``, ``iris``: each region sub-model's points against the target mesh's;
* ``ann68``: the 68 annotated points, through the fixed mesh->68 index map, on the refined 478 landmarks;
* ``distill``: all 478 refined landmarks against the imported model's (the teacher's) own landmarks;
* ``presence``: binary cross-entropy of the face flag towards "face" (every training crop holds a face).

Runs are deterministic: batch ``s`` draws its faces and augmentation from ``numpy.random.default_rng([seed,
s])``; checkpoints hold the model, the optimiser and the step, so a resumed run repeats the same next steps.
Logs: ``log.csv`` (one row per step), TensorBoard (``tensorboard = true``, if installed), a tqdm progress bar.
Mixed precision (float16 autocast with a gradient scaler) on CUDA; float32 on CPU.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..io.atomic import atomic_path
from .. import topology
from ..models.attention_mesh import AttentionMesh, AttentionMeshOutput
from ..models.spatial import CROP_SIZE
from ..weights.checkpoints import load_attention_mesh_file
from .datasets import AugmentConfig

# -- configuration ----------------------------------------------------------------------------------------


@dataclass
class PhaseConfig:
    name: str = "end_to_end"
    steps: int = 100
    lr: float = 1e-4
    warmup: int = 10  # linear warm-up steps, then cosine decay to lr * final_lr
    final_lr: float = 0.1
    ideal_crops: bool = False  # phase 1: region crops from the target mesh
    crop_jitter: float = 0.05  # phase 1: scale/shift (fraction of the crop) and rotation (x 0.5 rad) jitter
    detach_transforms: bool = False  # phase 2: no gradient through the crop transforms


@dataclass
class LossWeights:
    mesh: float = 1.0
    mesh_z: float = 0.1
    lips: float = 1.0
    eyes: float = 1.0
    iris: float = 0.5
    ann68: float = 1.0
    distill: float = 0.5
    presence: float = 0.01


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # 300-W folders, landmark files, unlabelled folders
    out: str = "out/train"
    init: str = "attention_mesh"  # shipped weights name or a .safetensors / .pt path
    teacher: str = "attention_mesh"
    split: str = "train"  # train | val | all (of the deterministic split)
    val_fraction: float = 0.15
    max_faces: int = 0  # use only the first N faces (0: all), for tiny runs
    batch_size: int = 16
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    amp: bool = True  # CUDA only
    grad_clip: float = 1.0
    freeze: list[str] = field(default_factory=lambda: ["backbone.stem", "backbone.stage96"])
    correction_sigma: float = 0.8  # cm on the canonical face
    correction_floor: float = 0.5
    checkpoint_every: int = 50
    keep_checkpoints: bool = False  # also keep step-N.pt files
    tensorboard: bool = False
    progress: bool = True
    cache: str = ""  # teacher-label cache folder (default: OUT/cache)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    phases: list[PhaseConfig] = field(default_factory=lambda: [
        PhaseConfig("regions", 100, 3e-4, ideal_crops=True), PhaseConfig("end_to_end", 300, 1e-4)])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    pass


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _fits(value: Any, kind: Any) -> bool:
    """Whether a config value has the type of a field annotated ``kind`` (an int is a fine float; a bool is
    not a number)."""
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    return True


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return f"a list of {_describe(typing.get_args(kind)[0]).removeprefix('a ')}s"
    return _TYPE_WORDS.get(kind, getattr(kind, "__name__", str(kind)))


def build_config(cls: type, values: Any, where: str) -> Any:
    """Dataclass ``cls`` from the table ``values``: unknown keys and values of the wrong type are a
    :class:`ConfigError` naming ``where`` (e.g. ``[loss]``), the key and the allowed keys or the expected type.
    Fields whose type is not a plain bool/int/float/str (or list of them), e.g. nested tables, are passed as
    given: build those first."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: must be a table of keys and values, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _fits(value, hints[key]):
            raise ConfigError(f"{where}: {key} must be {_describe(hints[key])}, got {value!r} "
                              f"({type(value).__name__})")
    return cls(**values)


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    if isinstance(d.get("data"), str):
        d["data"] = [d["data"]]
    aug = build_config(AugmentConfig, d.pop("augment", {}) or {}, "[augment]")
    loss = build_config(LossWeights, d.pop("loss", {}) or {}, "[loss]")
    phases = d.pop("phases", None)
    cfg = build_config(TrainConfig, d, "config")
    cfg.augment, cfg.loss = aug, loss
    if phases is not None and not isinstance(phases, list):
        raise ConfigError(f"config: phases must be a list of tables ([[phases]]), got {phases!r}")
    if phases is not None:
        cfg.phases = [build_config(PhaseConfig, p, f"[[phases]] #{i + 1}") for i, p in enumerate(phases)]
    if isinstance(cfg.data, str):
        cfg.data = [cfg.data]
    if not cfg.data:
        raise ConfigError("config: 'data' lists no data source")
    if not cfg.phases or any(p.steps < 0 for p in cfg.phases):
        raise ConfigError("config: give at least one phase with steps >= 0")
    if cfg.batch_size < 1:
        raise ConfigError("config: batch_size must be at least 1")
    return cfg


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The table of a config file: ``.toml``, ``.json`` or ``.yaml``/``.yml`` (YAML needs PyYAML). A file of
    another kind, or one whose top level is not a table, is a :class:`ConfigError`. The one config reader:
    ``attnmesh train``'s configs and the research recipes (``research/``) both go through it."""
    path = Path(path)
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib

        d = tomllib.loads(text)
    elif suffix == ".json":
        d = json.loads(text)
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("YAML configs need PyYAML (pip install pyyaml); or use .toml / .json") from None
        d = yaml.safe_load(text) or {}
    else:
        raise ConfigError(f"{path}: config must be .toml, .json or .yaml")
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: the config must be a table / mapping")
    return d


def load_config(path: str | Path) -> TrainConfig:
    """A training config from ``.toml``, ``.json`` or ``.yaml``/``.yml`` (:func:`read_config_file`). Relative
    paths in ``data``, ``out`` and ``cache`` are taken relative to the config file's folder."""
    path = Path(path)
    cfg = config_from_dict(read_config_file(path))
    base = path.resolve().parent

    def rel(p: str) -> str:
        return p if not p or os.path.isabs(p) else str(base / p)

    cfg.data = [rel(p) for p in cfg.data]
    cfg.out = rel(cfg.out)
    cfg.cache = rel(cfg.cache)
    for attr in ("init", "teacher"):
        v = getattr(cfg, attr)
        if v.endswith((".pt", ".safetensors")):
            setattr(cfg, attr, rel(v))
    return cfg


# -- models -----------------------------------------------------------------------------------------------



def jitter_transforms(t: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Compose crop transforms (N, 2, 3) with a crop-frame similarity ``u -> c + s R(a) (u - c) + d``;
    ``params`` (N, 4): angle (rad), log-scale, dx, dy (crop pixels)."""
    a, ls, dx, dy = params.unbind(-1)
    s = torch.exp(ls)
    cos, sin = torch.cos(a) * s, torch.sin(a) * s
    c = CROP_SIZE / 2
    tx = c - (cos * c - sin * c) + dx
    ty = c - (sin * c + cos * c) + dy
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    j = torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1),
                     torch.stack([zero, zero, one], -1)], -2)
    return t @ j


def forward(net: AttentionMesh, image: torch.Tensor, ideal: torch.Tensor | None = None,
            jitter: torch.Tensor | None = None, detach_transforms: bool = False) -> AttentionMeshOutput:
    """:meth:`AttentionMesh.forward` with the region crops optionally taken from ``ideal`` (N, 468+, 2+) points
    (192-space) instead of the predicted mesh (phase 1), jittered by ``jitter`` (N, 3, 4) (see
    :func:`jitter_transforms`)."""
    features48, features6 = net.backbone(image)
    mesh, face_logit = net.predict_mesh(features6)
    source = mesh if ideal is None else ideal[:, : topology.NUM_MESH_LANDMARKS].to(mesh.dtype)
    transforms = net.region_transforms(source)
    if detach_transforms:
        transforms = transforms.detach()
    if jitter is not None:
        transforms = torch.stack([jitter_transforms(transforms[:, k], jitter[:, k]) for k in range(3)], 1)
    return net.refine_regions(features48, mesh, face_logit, transforms)


def freeze(net: torch.nn.Module, prefixes: list[str]) -> list[torch.nn.Parameter]:
    """Freeze parameters whose name starts with one of ``prefixes``; return the trainable ones."""
    trainable = []
    for name, p in net.named_parameters():
        frozen = any(name == q or name.startswith(q + ".") for q in prefixes)
        p.requires_grad_(not frozen)
        if not frozen:
            trainable.append(p)
    return trainable


# -- losses -----------------------------------------------------------------------------------------------


def _pdist(a: torch.Tensor, b: torch.Tensor, iod: torch.Tensor) -> torch.Tensor:
    """(N,) mean point distance / iod (a smooth norm: sqrt(d^2 + 1e-4))."""
    d = torch.sqrt(((a - b) ** 2).sum(-1) + 1e-4)
    return d.mean(-1) / iod


def losses(out: AttentionMeshOutput, batch: dict[str, torch.Tensor], w: LossWeights,
           index_map: torch.Tensor) -> dict[str, torch.Tensor]:
    target, teacher = batch["target"], batch["teacher"]
    iod = torch.linalg.norm(target[:, 33, :2] - target[:, 263, :2], dim=-1).clamp_min(1.0)
    out_f = [x.float() for x in out]
    o = AttentionMeshOutput(*out_f)
    terms: dict[str, torch.Tensor] = {}
    n_mesh = topology.NUM_MESH_LANDMARKS
    terms["mesh"] = (_pdist(o.mesh[..., :2], target[:, :n_mesh, :2], iod)
                     + w.mesh_z * (o.mesh[..., 2] - target[:, :n_mesh, 2]).abs().mean(-1) / iod).mean()
    terms["lips"] = _pdist(o.lips, target[:, list(topology.LIPS), :2], iod).mean()
    terms["eyes"] = 0.5 * (_pdist(o.right_eye, target[:, list(topology.RIGHT_EYE), :2], iod)
                           + _pdist(o.left_eye, target[:, list(topology.LEFT_EYE), :2], iod)).mean()
    terms["iris"] = 0.5 * (_pdist(o.right_iris, target[:, list(topology.RIGHT_IRIS), :2], iod)
                           + _pdist(o.left_iris, target[:, list(topology.LEFT_IRIS), :2], iod)).mean()
    has = batch["has68"]
    ann = _pdist(o.landmarks[:, index_map, :2], batch["gt68"], iod)
    terms["ann68"] = (ann * has).sum() / has.sum().clamp_min(1.0)
    terms["distill"] = _pdist(o.landmarks[..., :2], teacher[..., :2], iod).mean()
    terms["presence"] = F.binary_cross_entropy_with_logits(o.face_logit, torch.ones_like(o.face_logit))
    terms["loss"] = sum(getattr(w, k) * v for k, v in terms.items())
    return terms


# -- training ---------------------------------------------------------------------------------------------

LOG_FIELDS = ["step", "phase", "lr", "loss", "mesh", "lips", "eyes", "iris", "ann68", "distill", "presence",
              "seconds"]


def lr_at(phase: PhaseConfig, k: int) -> float:
    if k < phase.warmup:
        return phase.lr * (k + 1) / phase.warmup
    span = max(1, phase.steps - phase.warmup)
    frac = min(1.0, (k - phase.warmup) / span)
    return phase.lr * (phase.final_lr + (1 - phase.final_lr) * 0.5 * (1 + math.cos(math.pi * frac)))


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def export_weights(net: torch.nn.Module, path: Path, dtype: torch.dtype = torch.float32,
                   metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"architecture": "attention_mesh", **(metadata or {})})


class Trainer:
    """Builds data and model from a :class:`TrainConfig`; :meth:`run` trains (resuming from ``OUT/last.pt``)."""

    def __init__(self, cfg: TrainConfig) -> None:
        from ..eval import maps
        from .datasets import FaceCrops, correction_kernel, corrected_targets, load_records, teacher_labels

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.threads)
        self.device = torch.device(cfg.device)
        records = []
        for src in cfg.data:
            records += load_records(src, cfg.split, cfg.val_fraction)
        if cfg.max_faces:
            records = records[: cfg.max_faces]
        if not records:
            raise ConfigError(f"no faces found in {', '.join(cfg.data)} (split {cfg.split!r})")
        teacher = load_attention_mesh_file(cfg.teacher).eval()
        labels = teacher_labels(records, teacher, Path(cfg.cache) if cfg.cache else self.out / "cache",
                                model_tag=cfg.teacher, progress=cfg.progress)
        keep = np.flatnonzero(labels["ok"])
        records = [records[i] for i in keep]
        rois, teach = labels["roi"][keep], labels["teacher"][keep]
        self.index_map = maps.mesh_to_68()
        kernel = correction_kernel(self.index_map, cfg.correction_sigma, cfg.correction_floor)
        target = np.stack([corrected_targets(t, r.points68, self.index_map, kernel) for t, r in zip(teach, records)])
        self.data = FaceCrops(records, rois, teach, target, cfg.augment)
        self.net = load_attention_mesh_file(cfg.init).to(self.device).train()
        self.params = freeze(self.net, cfg.freeze)
        self.step = 0
        self._opt_state: dict | None = None
        self._opt_phase = -1

    # -- checkpoints --

    def phase_of(self, step: int) -> tuple[int, int]:
        """(phase index, step within the phase) of global ``step``."""
        start = 0
        for i, p in enumerate(self.cfg.phases):
            if step < start + p.steps:
                return i, step - start
            start += p.steps
        return len(self.cfg.phases), 0

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.cfg.phases)

    def save(self, optimizer: torch.optim.Optimizer | None, phase_index: int, scaler=None) -> Path:
        ckpt = {"architecture": "attention_mesh", "model": self.net.state_dict(), "step": self.step,
                "phase": phase_index,
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "config": self.cfg.to_dict()}
        path = self.out / "last.pt"
        _atomic_save(ckpt, path)
        if self.cfg.keep_checkpoints:
            _atomic_save(ckpt, self.out / f"step-{self.step:06d}.pt")
        return path

    def load(self, path: Path) -> None:
        from ..weights import read_weights_file

        ckpt = read_weights_file(path)  # on the CPU: load_state_dict copies to the model's and optimiser's device
        self.net.load_state_dict(ckpt["model"])
        self.step = int(ckpt["step"])
        self._opt_state, self._opt_phase = ckpt.get("optimizer"), int(ckpt.get("phase", -1))
        self._scaler_state = ckpt.get("scaler")

    # -- one step --

    def make_batch(self, step: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rng = np.random.default_rng([self.cfg.seed, step])
        n = len(self.data)
        idx = rng.choice(n, self.cfg.batch_size, replace=n < self.cfg.batch_size)
        b = self.data.batch(idx, rng)
        jitter = rng.uniform(-1, 1, (len(idx), 3, 4))
        batch = {k: torch.from_numpy(v).to(self.device) for k, v in b.items()}
        return batch, torch.from_numpy(jitter).float().to(self.device)

    def run(self, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
        """Train to the end of the last phase (or until global step ``stop_after``); returns a summary."""
        cfg = self.cfg
        last = self.out / "last.pt"
        if resume and last.is_file():
            self.load(last)
        (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
        log_path = self.out / "log.csv"
        rows = []
        if log_path.is_file():  # keep the rows up to the resumed step
            with open(log_path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        with open(log_path, "w", newline="") as f:
            wr = csv.DictWriter(f, LOG_FIELDS)
            wr.writeheader()
            wr.writerows(rows)
        tb = None
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(self.out / "tb"))
            except ImportError:
                tb = None
        index_map = torch.as_tensor(self.index_map, device=self.device)
        use_amp = cfg.amp and self.device.type == "cuda"
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        history: list[dict[str, float]] = []
        start_time = time.time()
        end = self.total_steps if stop_after is None else min(stop_after, self.total_steps)
        optimizer, scaler, opt_phase = None, None, -1
        while self.step < end:
            pi, k = self.phase_of(self.step)
            phase = cfg.phases[pi]
            if pi != opt_phase:
                optimizer = torch.optim.Adam(self.params, lr=phase.lr)
                scaler = torch.amp.GradScaler("cuda") if use_amp else None
                if self._opt_state is not None and self._opt_phase == pi:
                    optimizer.load_state_dict(self._opt_state)
                    if scaler is not None and getattr(self, "_scaler_state", None):
                        scaler.load_state_dict(self._scaler_state)
                self._opt_state, opt_phase = None, pi
            lr = lr_at(phase, k)
            for g in optimizer.param_groups:
                g["lr"] = lr
            t0 = time.time()
            batch, jitter = self.make_batch(self.step)
            jitter = jitter * torch.tensor([0.5 * phase.crop_jitter, phase.crop_jitter,
                                            phase.crop_jitter * CROP_SIZE, phase.crop_jitter * CROP_SIZE],
                                           device=self.device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                out = forward(self.net, batch["image"], ideal=batch["target"] if phase.ideal_crops else None,
                              jitter=jitter if phase.ideal_crops else None,
                              detach_transforms=phase.detach_transforms)
            terms = losses(out, batch, cfg.loss, index_map)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(terms["loss"]).backward()
                scaler.unscale_(optimizer)
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                terms["loss"].backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                optimizer.step()
            self.step += 1
            row = {"step": self.step, "phase": phase.name, "lr": lr, "seconds": round(time.time() - t0, 3)}
            row.update({k2: float(v.detach()) for k2, v in terms.items()})
            history.append(row)
            with open(log_path, "a", newline="") as f:
                csv.DictWriter(f, LOG_FIELDS).writerow({k2: (round(v, 6) if isinstance(v, float) else v)
                                                        for k2, v in row.items()})
            if tb is not None:
                for k2, v in row.items():
                    if isinstance(v, float):
                        tb.add_scalar(f"{k2}", v, self.step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(phase=phase.name, loss=f"{row['loss']:.4f}", ann68=f"{row['ann68']:.4f}")
            phase_done = self.phase_of(self.step)[0] != pi
            if self.step % cfg.checkpoint_every == 0 or phase_done or self.step == end:
                self.save(optimizer, pi, scaler)
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
        if self.step >= self.total_steps:
            export_weights(self.net, self.out / "model.safetensors")
        return {"steps": self.step, "seconds": time.time() - start_time, "history": history}


def train(cfg: TrainConfig, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    return Trainer(cfg).run(resume=resume, stop_after=stop_after)
