"""Train the blendshape network (:mod:`attnmesh.apps.blendshape_net`) by distilling the solver.

    python -m research.blendshape_net.train [--samples 8000] [--seed 0] [--out-dir src/attnmesh/apps]

Data: synthetic faces (:func:`attnmesh.apps.blendshapes.synthetic_face`): random identities (Laplacian morph of
the canonical face with random anchor offsets and per-axis scale), each seen in a neutral frame and in several
expression frames with random known coefficients, every frame in a random head pose, projected through
MediaPipe's camera, half of them with 0.2-0.5 px landmark noise. Each expression frame goes through the same
path as real landmarks (pose removal, neutral from the neutral frame by Laplacian morph); its label is the
bounded least-squares solver's answer (distillation). Half of the expression frames also get random rigid shifts
of the regions in :func:`~attnmesh.apps.blendshapes.nuisance_basis` (eyes, lips, chin; sigma ``SHIFT_CM``),
which the solver fits and discards, so the network learns to ignore them too (what pose removal leaves on real
video). Deterministic for a seed (single-threaded torch).
Takes a few minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from attnmesh.apps.blendshape_net import HIDDEN, INPUT_SCALE, MANIFEST_NAME, WEIGHTS_NAME, BlendshapeNet, apps_dir
from attnmesh.apps.blendshapes import (BLENDSHAPE_NAMES, NUM_EXTENDED, BlendshapeSolver, metric_landmarks,
                                       neutral_from_landmarks, nuisance_basis, solver_ids, synthetic_face)

IMAGE_SIZE = (640, 480)
SHIFT_CM = 0.1  # sigma of the random rigid region shifts (measured on real video: up to ~0.3 cm)
OFF_MODEL_CM = 0.05  # sigma of the smooth random deformations that no blendshape explains


def off_model_fields(rng: np.random.Generator, count: int = 64, anchors: int = 30) -> np.ndarray:
    """(count, 478, 3) smooth random displacement fields (cm, unit sigma at the anchors): the canonical face
    morphed by Laplacian editing with ``anchors`` random feature vertices displaced by N(0, 1 cm). Scaled and
    mixed per sample, they stand for the motion real faces show that no blendshape models (lip shapes of
    speech, asymmetries); the solver's weighted fit decides how much of it each coefficient takes, and the
    network learns to do the same."""
    from attnmesh.apps.blendshapes import _mesh_feature_ids
    from attnmesh.apps.laplacian import LaplacianEditor, canonical_editing_mesh

    v, tri = canonical_editing_mesh()
    out = np.zeros((count, NUM_EXTENDED, 3))
    for k in range(count):
        ids = rng.choice(_mesh_feature_ids(), anchors, replace=False)
        out[k, : len(v)] = LaplacianEditor(v, tri, ids, 1e3).solve(v[ids] + rng.normal(0, 1.0, (anchors, 3))) - v
    return out


def make_data(samples: int, seed: int, per_identity: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (N, 3 x solver points) scaled, solver labels (N, 24), true coefficients (N, 24))."""
    rng = np.random.default_rng(seed)
    ids = solver_ids()  # the solver's points: not the brows, which no shape models
    shifts = nuisance_basis()[1]
    off_model = off_model_fields(rng)
    xs, ys, ts = [], [], []
    while len(xs) < samples:
        noise = float(rng.uniform(0.2, 0.5)) if rng.random() < 0.5 else 0.0
        first = synthetic_face(rng, IMAGE_SIZE, noise)
        neutral = neutral_from_landmarks(metric_landmarks(first["neutral_landmarks"], IMAGE_SIZE))
        solver = BlendshapeSolver(neutral)
        for k in range(per_identity):
            face = first if k == 0 else synthetic_face(rng, IMAGE_SIZE, noise, identity=first["identity"])
            metric = metric_landmarks(face["landmarks"], IMAGE_SIZE)
            if rng.random() < 0.5:
                metric = metric + np.tensordot(rng.normal(0.0, SHIFT_CM, len(shifts)), shifts, axes=1)
            if rng.random() < 0.5:
                mix = rng.normal(0.0, OFF_MODEL_CM, 4)
                metric = metric + np.tensordot(mix, off_model[rng.choice(len(off_model), 4, replace=False)], axes=1)
            xs.append(((metric[ids] - neutral[ids]).ravel() * INPUT_SCALE).astype(np.float32))
            ys.append(solver.solve(metric).astype(np.float32))
            ts.append(face["coefficients"].astype(np.float32))
    return np.stack(xs[:samples]), np.stack(ys[:samples]), np.stack(ts[:samples])


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> tuple[BlendshapeNet, float]:
    torch.manual_seed(seed)
    net = BlendshapeNet(x.shape[1], y.shape[1], HIDDEN)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), 128):
            idx = perm[start:start + 128]
            loss = torch.nn.functional.smooth_l1_loss(net(xt[idx]), yt[idx], beta=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return net.eval(), float(loss.item())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m research.blendshape_net.train",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=8000)
    ap.add_argument("--val-samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=apps_dir())
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    x, y, _ = make_data(args.samples, args.seed)
    xv, yv, tv = make_data(args.val_samples, args.seed + 1000)
    print(f"data: {len(x)} train, {len(xv)} validation samples in {time.time() - t0:.0f} s", flush=True)
    t0 = time.time()
    net, last = train(x, y, args.epochs, args.seed)
    with torch.no_grad():
        pred = net(torch.from_numpy(xv)).clamp(0, 1).numpy()
    mae_solver = float(np.abs(pred - yv).mean())
    mae_true = float(np.abs(pred - tv).mean())
    solver_true = float(np.abs(yv - tv).mean())
    print(f"trained in {time.time() - t0:.0f} s; validation MAE vs solver {mae_solver:.4f}, vs truth {mae_true:.4f} "
          f"(solver vs truth {solver_true:.4f})")
    from safetensors.torch import save_file

    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights = args.out_dir / WEIGHTS_NAME
    save_file({k: v.detach().half().contiguous() for k, v in net.state_dict().items()}, str(weights))
    manifest = {
        "model": "attnmesh.apps.blendshape_net.BlendshapeNet",
        "file": WEIGHTS_NAME, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "dtype": "float16",
        "num_inputs": int(x.shape[1]), "hidden": HIDDEN, "input_scale": INPUT_SCALE,
        "input": "(metric_landmarks - neutral)[feature_ids] in cm, flattened (x, y, z per point), times input_scale",
        "feature_ids": solver_ids().tolist(), "outputs": list(BLENDSHAPE_NAMES),
        "training": {"script": "python -m research.blendshape_net.train", "seed": args.seed,
                     "samples": args.samples, "epochs": args.epochs, "labels": "BlendshapeSolver (distillation)",
                     "final_batch_loss": round(last, 6), "validation_mae_vs_solver": round(mae_solver, 4),
                     "validation_mae_vs_truth": round(mae_true, 4), "solver_mae_vs_truth": round(solver_true, 4)},
    }
    (args.out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size // 1024} KiB) and {MANIFEST_NAME}")


if __name__ == "__main__":
    main()
