"""The face transformer vs the Attention Mesh (its teacher), side by side in one run.

    python benchmarks/face_transformer.py [--threads 1] [--checkpoint out/ft_xs/checkpoint.pt] [--json FILE]
        [--previous OLD.safetensors]     # rows for earlier weights too (accuracy, 300-W, torch speed)

1. **Accuracy against the teacher** on held-out faces (never trained on): the 20 photos and every 10th frame of
   ``talking-d14.mp4`` and ``multi-face-640x360.mp4``. Every face the detector finds (torch BlazeFace, ROI as
   ``FaceMesh``) is cropped once for each model from the same ROI; faces the teacher rejects (presence < 0.5)
   are dropped. Error of a face = mean over the 478 points of the 2D distance to the teacher's landmarks (image
   pixels) / the teacher's inter-ocular distance (33-263), in %. Rows: the transformer on torch fp32 (also with
   test-time mirror averaging), on ONNX
   Runtime INT8 (dynamic, and static QDQ), and the mean-shape baseline (the mean teacher shape of the training
   faces, placed in each ROI).
2. **300-W NME** on the validation split of ``300w-train`` (the training issue's hash split, never trained on),
   with the training issue's metric (:mod:`attnmesh.eval.metrics`, mesh -> 68 map of :mod:`attnmesh.eval.maps`)
   and :mod:`attnmesh.eval.evaluate`'s protocol (detector ROIs, the face whose mapped box overlaps the
   annotation with IoU >= 0.3, a missed face is a failure).
3. **Speed**, model only, batch 1 (one face), ``--threads`` intra-op threads: faces/s on torch CPU fp32, ONNX
   Runtime fp32 and INT8. Runners are timed interleaved (round robin), each cell the median over rounds.
4. **Other heads** (:mod:`research.face_transformer.evaluate`): verification on held-out YTF identities (with a
   random-init network as reference) and the expression head against its landmark-derived labels.
5. **Attention cost vs patch count**: one MobileViT block of the model's /8 stage (16x16 map, 48 channels,
   transformer width 64, 2 layers) with patch sides 1, 2, 4, 8: tokens per sequence ``N = 256 / p^2``, ``p^2``
   sequences; multiply-adds of the two attention products (``2 p^2 N^2 d`` per layer) and of the linear layers,
   and the measured time of the transformer layers and of the whole block.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/ (outside the package)
from _machine import describe  # noqa: E402

from attnmesh import topology  # noqa: E402
from attnmesh.geometry.roi import project_to_image  # noqa: E402
from attnmesh.models.face_transformer import FaceTransformer, MobileViTBlock, unfold_patches  # noqa: E402
from attnmesh.runtime.detector import FaceDetector  # noqa: E402
from attnmesh.pipeline.tracking import roi_from_detection  # noqa: E402
from attnmesh.registry import create_model  # noqa: E402
from attnmesh.runtime.base import CropLandmarkRunner  # noqa: E402
from attnmesh.runtime.pytorch import TorchLandmarkRunner  # noqa: E402
from attnmesh.weights.checkpoints import load_face_transformer_file  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
VAL_VIDEOS = ("talking-d14.mp4", "multi-face-640x360.mp4")
PREVIOUS = "previous weights (--previous), torch fp32"


def rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def held_out_images() -> dict[str, list[np.ndarray]]:
    sets = {"photos": [rgb(p) for p in sorted((DATA / "photos").iterdir())], "videos": []}
    for name in VAL_VIDEOS:
        cap = cv2.VideoCapture(str(DATA / "videos" / name))
        k = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if k % 10 == 0:
                sets["videos"].append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            k += 1
        cap.release()
    return sets


def iod_error(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(faces,) mean over the points of :func:`point_errors`, in %."""
    return point_errors(points, ref).mean(-1)


def stats(e: np.ndarray) -> dict[str, float]:
    return {"faces": int(len(e)), "mean": float(e.mean()), "median": float(np.median(e)),
            "p95": float(np.percentile(e, 95))}


class OrtStudent(CropLandmarkRunner):
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        from attnmesh.runtime.onnxruntime import session_options

        self.refine, self.num_landmarks, self.device = True, 478, torch.device("cpu")
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.input_size = int(self.session.get_inputs()[0].shape[-1])

    def run(self, crops):
        lm, fl = self.session.run(["landmarks", "face_logit"],
                                  {"image": crops.transpose(0, 3, 1, 2).astype(np.float32) / 255})
        return lm, 1 / (1 + np.exp(-fl))


def point_errors(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(faces, 478) distance of every point to the teacher's / the teacher's IOD, in %."""
    iod = np.linalg.norm(ref[:, 33, :2] - ref[:, 263, :2], axis=-1)
    return 100 * np.linalg.norm(points[..., :2] - ref[..., :2], axis=-1) / iod[:, None]


def region_table(per_point: np.ndarray) -> dict[str, float]:
    """Mean % IOD over the faces of each region of the mesh (the paper's per-region metric)."""
    regions = {"lips": topology.LIPS, "eyes": topology.RIGHT_EYE + topology.LEFT_EYE,
               "irises": topology.RIGHT_IRIS + topology.LEFT_IRIS}
    refined = set().union(*regions.values())
    regions["rest of the mesh"] = tuple(i for i in range(topology.NUM_MESH_LANDMARKS) if i not in refined)
    regions["all 478"] = tuple(range(topology.NUM_REFINED_LANDMARKS))
    return {k: float(per_point[:, list(v)].mean()) for k, v in regions.items()}


def accuracy(sets, teacher, students: dict, mean_shape: np.ndarray, detector) -> tuple[dict, dict]:
    out = {}
    pooled: dict[str, list] = {k: [] for k in students}
    for set_name, images in sets.items():
        errs: dict[str, list] = {k: [] for k in [*students, "mean shape"]}
        for image in images:
            rois = [roi_from_detection(d.box, d.keypoints) for d in detector.process(image)[:8]]
            if not rois:
                continue
            tp, ts = teacher.predict(image, rois)
            keep = ts >= 0.5
            if not keep.any():
                continue
            ref = tp[keep]
            for name, s in students.items():
                sp, _ = s.predict(image, rois)
                per_point = point_errors(sp[keep], ref)
                errs[name].append(per_point.mean(-1))
                pooled[name].append(per_point)
            ms = np.stack([project_to_image(mean_shape, r, 128) for r, k in zip(rois, keep) if k])
            errs["mean shape"].append(iod_error(ms, ref))
        out[set_name] = {k: stats(np.concatenate(v)) for k, v in errs.items()}
    return out, {k: region_table(np.concatenate(v)) for k, v in pooled.items() if "INT8" not in k}


def nme_300w(models: dict, detector) -> dict | None:
    """300-W NME of every landmark runner in ``models`` (name -> runner) on the validation split."""
    try:
        from attnmesh.eval import maps, metrics
        from attnmesh.eval.evaluate import MATCH_IOU, _box
        from attnmesh.geometry.roi import box_iou
        from attnmesh.train.datasets import w300_records

        maps.mesh_to_68()
    except Exception as e:  # the map file belongs to the training issue
        return {"error": f"300-W NME not measured: {e}"}
    records = w300_records(DATA / "300w-train", split="val")
    pred = {m: np.full((len(records), 68, 2), np.nan) for m in models}
    gt = np.stack([r.points68 for r in records])
    for i, r in enumerate(records):
        image = rgb(r.image_path)
        rois = [roi_from_detection(d.box, d.keypoints) for d in detector.process(image)[:4]]
        if not rois:
            continue
        for m, runner in models.items():
            pts, sc = runner.predict(image, rois)
            faces = [p for p, s in zip(pts, sc) if s >= 0.5]
            ious = [box_iou(_box(maps.to_68(p, "fixed")), _box(r.points68)) for p in faces]
            if ious and max(ious) >= MATCH_IOU:
                pred[m][i] = maps.to_68(faces[int(np.argmax(ious))], "fixed")
    return {m: metrics.summarize(pred[m], gt) for m in models}


def timed(runners: dict, rounds: int, iters: int) -> dict[str, float]:
    for f in runners.values():
        for _ in range(3):
            f()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for k, f in runners.items():
            t = time.perf_counter()
            for _ in range(iters):
                f()
            times[k].append((time.perf_counter() - t) / iters)
    return {k: float(np.median(v)) for k, v in times.items()}


def attention_cost(threads: int, rounds: int) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    x = torch.randn(1, 48, 16, 16)
    d, depth, hidden = 64, 2, 128
    for p in (1, 2, 4, 8):
        blk = MobileViTBlock(48, d, depth, heads=4, patch=p).eval()
        n, seqs = 256 // (p * p), p * p
        tokens = unfold_patches(blk.local(x), p).detach()
        with torch.inference_mode():
            t = timed({"transformer": lambda: blk.transformer(tokens), "block": lambda: blk(x)}, rounds, 20)
        rows.append({"patch": f"{p}x{p}", "sequences": seqs, "tokens_per_sequence": n,
                     "attention_MMAC": 2 * seqs * n * n * d * depth / 1e6,
                     "linear_MMAC": seqs * n * (4 * d * d + 2 * d * hidden) * depth / 1e6,
                     "transformer_ms": 1000 * t["transformer"], "block_ms": 1000 * t["block"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint instead of the shipped weights")
    ap.add_argument("--cache", type=Path, default=Path("out/ft_cache"), help="teacher cache (mean shape, calibration)")
    ap.add_argument("--previous", type=Path, default=None,
                    help="earlier weights (.pt checkpoint or shipped .safetensors) for comparison rows")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--skip-300w", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    header = describe()
    print(header, f"; {a.threads} thread(s)")
    model = load_face_transformer_file(a.checkpoint) if a.checkpoint else create_model("face_transformer_xs")
    previous = load_face_transformer_file(a.previous) if a.previous else None
    teacher = TorchLandmarkRunner("attention_mesh")
    student = TorchLandmarkRunner("face_transformer_xs", net=model)
    detector = FaceDetector()

    from research.face_transformer.data import Cache, make_batch, Augment
    from research.face_transformer.distill import mean_shape
    from attnmesh.export.transformer import export_face_transformer, quantize_dynamic_int8, quantize_static_int8

    cache = Cache(a.cache)
    train_faces = np.nonzero((cache.split == "train") & cache.is_face & (cache.score >= 0.5))[0]
    mshape = mean_shape(cache, train_faces, 128).numpy()
    tmp = Path(tempfile.mkdtemp())
    fp32 = export_face_transformer(model, tmp / "ft.onnx")
    dyn = quantize_dynamic_int8(fp32, tmp / "ft.int8.onnx")
    calib = make_batch(cache, np.random.default_rng(0).choice(train_faces, 64, replace=False), 128, Augment.none(),
                       np.random.default_rng(0))["image"]
    static = quantize_static_int8(fp32, tmp / "ft.int8-static.onnx", calib)
    students = {"transformer torch fp32": student,
                "transformer torch fp32, mirror-averaged": TorchLandmarkRunner("face_transformer_xs", net=model, mirror_average=True),
                "transformer ORT fp32": OrtStudent(fp32, a.threads),
                "transformer ORT INT8 dynamic": OrtStudent(dyn, a.threads),
                "transformer ORT INT8 static": OrtStudent(static, a.threads)}
    if previous is not None:
        students[PREVIOUS] = TorchLandmarkRunner("face_transformer_xs", net=previous)
    report: dict = {"machine": header, "threads": a.threads,
                    "weights": str(a.checkpoint) if a.checkpoint else "shipped face_transformer_xs",
                    "sizes_MB": {"onnx fp32": fp32.stat().st_size / 1e6, "onnx int8 dynamic": dyn.stat().st_size / 1e6,
                                 "onnx int8 static": static.stat().st_size / 1e6}}

    t0 = time.perf_counter()
    report["accuracy_vs_teacher_pct_iod"], report["regions_vs_teacher_pct_iod"] = accuracy(
        held_out_images(), teacher, students, mshape, detector)
    print(f"accuracy: {time.perf_counter() - t0:.0f} s")
    if not a.skip_300w:
        t0 = time.perf_counter()
        nme_models = {"attention mesh (teacher)": teacher, "face transformer xs": student,
                      "face transformer xs, mirror-averaged": students["transformer torch fp32, mirror-averaged"]}
        if previous is not None:
            nme_models[PREVIOUS] = students[PREVIOUS]
        report["nme_300w_val"] = nme_300w(nme_models, detector)
        print(f"300-W: {time.perf_counter() - t0:.0f} s")

    from research.face_transformer.evaluate import expression, verification

    torch.manual_seed(0)
    report["verification_ytf_held_out"] = {"face transformer xs": verification(model, cache),
                                           "random-init network (reference)": verification(
                                               FaceTransformer("xs").eval(), cache)}
    report["expression_held_out"] = expression(model, cache)

    # speed, model only, batch 1
    from attnmesh.runtime.onnxruntime import OrtGraph
    from attnmesh.export.onnx import build_module, default_cache_dir

    x192 = torch.rand(1, 3, 192, 192)
    x128 = torch.rand(1, 3, 128, 128)
    am = build_module("attention_mesh")
    runners = {("attention mesh", "torch fp32"): lambda: am(x192),
               ("transformer xs", "torch fp32"): lambda: model(x128)}
    g = OrtGraph("attention_mesh", default_cache_dir(), threads=a.threads)
    runners[("attention mesh", "ORT fp32")] = lambda: g(x192.numpy())
    if (default_cache_dir() / "attention_mesh.int8.onnx").is_file():
        g8 = OrtGraph("attention_mesh.int8", default_cache_dir(), threads=a.threads)
        runners[("attention mesh", "ORT INT8 static")] = lambda: g8(x192.numpy())
    for name, key in (("transformer ORT fp32", "ORT fp32"), ("transformer ORT INT8 dynamic", "ORT INT8 dynamic"),
                      ("transformer ORT INT8 static", "ORT INT8 static")):
        sess = students[name].session
        runners[("transformer xs", key)] = lambda s=sess: s.run(None, {"image": x128.numpy()})
    if previous is not None:
        runners[("transformer xs, previous", "torch fp32")] = lambda: previous(x128)
    pair = torch.cat([x128, x128.flip(-1)])
    runners[("transformer xs", "torch fp32 mirror-avg")] = lambda: model(pair)
    sess = students["transformer ORT fp32"].session
    runners[("transformer xs", "ORT fp32 mirror-avg")] = lambda: sess.run(None, {"image": pair.numpy()})
    with torch.inference_mode():
        t = timed(runners, a.rounds, a.iters)
    report["speed_faces_per_s"] = {f"{m} | {b}": 1.0 / v for (m, b), v in t.items()}
    report["attention_cost"] = attention_cost(a.threads, a.rounds)
    print_tables(report)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1))


def print_tables(r: dict) -> None:
    print("\n### Landmarks vs the teacher on held-out faces (% IOD, mean / median / p95)\n")
    acc = r["accuracy_vs_teacher_pct_iod"]
    sets = list(acc)
    print("| model | " + " | ".join(f"{s} ({next(iter(acc[s].values()))['faces']} faces)" for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for m in acc[sets[0]]:
        print(f"| {m} | " + " | ".join(f"{acc[s][m]['mean']:.2f} / {acc[s][m]['median']:.2f} / {acc[s][m]['p95']:.2f}"
                                      for s in sets) + " |")
    reg = r.get("regions_vs_teacher_pct_iod")
    if reg:
        names = list(next(iter(reg.values())))
        print("\n### Per region vs the teacher, held-out photos and video frames pooled (% IOD, mean)\n")
        print("| model | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
        for m, row in reg.items():
            print(f"| {m} | " + " | ".join(f"{row[k]:.2f}" for k in names) + " |")
    n = r.get("nme_300w_val")
    if n:
        print("\n### 300-W NME, validation split of 300w-train (%)\n")
        if "error" in n:
            print(n["error"])
        else:
            print("| model | faces | NME all | eyes | lips | fail@10 | AUC@10 | missed |\n|---|---|---|---|---|---|---|---|")
            for m, s in n.items():
                print(f"| {m} | {s['faces']} | {s['nme_all']:.2f} | {s['nme_eyes']:.2f} | {s['nme_lips']:.2f} | "
                      f"{s['failure_rate']:.2f} | {s['auc']:.2f} | {s['missed']} |")
    v = r.get("verification_ytf_held_out")
    if v:
        first = next(iter(v.values()))
        print(f"\n### Verification, held-out YTF identities ({first['identities']} people, {first['faces']} faces, "
              f"{first['genuine_pairs']} genuine / {first['impostor_pairs']} impostor pairs)\n")
        print("| embedding | TAR@FAR=1% | TAR@FAR=0.1% | ROC AUC | accuracy (balanced, 10-fold) |\n|---|---|---|---|---|")
        for m, s in v.items():
            print(f"| {m} | {100 * s['tar@far=1%']:.1f} | {100 * s['tar@far=0.1%']:.1f} | {s['roc_auc']:.3f} | "
                  f"{100 * s['accuracy_10fold_balanced']:.1f} |")
    e = r.get("expression_held_out")
    if e:
        print(f"\n### Expression head vs landmark-derived labels, held-out faces ({next(iter(e.values()))['faces']})\n")
        print("| output | MAE | MAE of the constant mean | Pearson r |\n|---|---|---|---|")
        for k, s in e.items():
            print(f"| {k} | {s['mae']:.3f} | {s['mae_constant_mean']:.3f} | {s['pearson_r']:.2f} |")
    print(f"\n### Speed, model only, batch 1, {r['threads']} thread(s) (faces/s)\n")
    sp = r["speed_faces_per_s"]
    models = sorted({k.split(" | ")[0] for k in sp})
    backends = ["torch fp32", "ORT fp32", "ORT INT8 static", "ORT INT8 dynamic", "torch fp32 mirror-avg",
                "ORT fp32 mirror-avg"]
    print("| model | " + " | ".join(backends) + " |\n|---|" + "---|" * len(backends))
    for m in models:
        print(f"| {m} | " + " | ".join(f"{sp[f'{m} | {b}']:.0f}" if f"{m} | {b}" in sp else "n/a" for b in backends) + " |")
    print("\n### Attention cost vs patch size (MobileViT block, 16x16x48 map, d=64, 2 layers, batch 1)\n")
    print("| patch | sequences | tokens/seq | attention MMAC | linear MMAC | transformer ms | block ms |\n"
          "|---|---|---|---|---|---|---|")
    for row in r["attention_cost"]:
        print(f"| {row['patch']} | {row['sequences']} | {row['tokens_per_sequence']} | {row['attention_MMAC']:.2f} | "
              f"{row['linear_MMAC']:.2f} | {row['transformer_ms']:.2f} | {row['block_ms']:.2f} |")
    print("\nONNX sizes (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in r["sizes_MB"].items()))


if __name__ == "__main__":
    main()
