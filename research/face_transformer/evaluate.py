"""Held-out evaluation of the non-landmark heads from the teacher cache (:mod:`research.face_transformer.data`).

* **Verification** (embedding head): all pairs of the held-out YTF identities' faces (identities with
  ``sha1(name) % 10 == 0``, never trained on); cosine similarity; TAR at FAR 1% and 0.1%, ROC AUC, and the
  accuracy of a threshold chosen by 10-fold cross-validation on all genuine pairs plus as many random impostor
  pairs (LFW-style, balanced). Caveat: the frames of
  one YTF identity often come from the same video, so genuine pairs are easier than in LFW.
* **Expression**: mean absolute error and Pearson correlation of each output against the labels derived from
  the teacher's landmarks, on all held-out faces.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import Augment, Cache, make_batch


@torch.no_grad()
def head_outputs(model, cache: Cache, idx: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    model.eval()
    emb, expr = [], []
    for s in range(0, len(idx), batch):
        b = make_batch(cache, idx[s:s + batch], model.input_size, Augment.none(), np.random.default_rng(0))
        out = model(torch.from_numpy(b["image"]))
        emb.append(out.embedding.numpy())
        expr.append(out.expression.numpy())
    return {"embedding": np.concatenate(emb), "expression": np.concatenate(expr)}


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    scores = np.concatenate([genuine, impostor])
    ranks = scores.argsort().argsort() + 1.0
    return float((ranks[: len(genuine)].sum() - len(genuine) * (len(genuine) + 1) / 2) / (len(genuine) * len(impostor)))


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    thr = np.quantile(impostor, 1.0 - far)
    return float((genuine > thr).mean())


def cv_accuracy(sim: np.ndarray, same: np.ndarray, folds: int = 10, seed: int = 0) -> float:
    order = np.random.default_rng(seed).permutation(len(sim))
    parts = np.array_split(order, folds)
    accs = []
    for k in range(folds):
        test = parts[k]
        train = np.concatenate([parts[j] for j in range(folds) if j != k])
        cands = np.unique(sim[train])
        cands = cands[:: max(1, len(cands) // 400)]
        acc = [((sim[train] > t) == same[train]).mean() for t in cands]
        t = cands[int(np.argmax(acc))]
        accs.append(((sim[test] > t) == same[test]).mean())
    return float(np.mean(accs))


def verification(model, cache: Cache) -> dict[str, float]:
    idx = np.nonzero((cache.source == "ytf") & (cache.split == "val"))[0]
    names = np.array([cache.meta[i]["identity"] for i in idx])
    emb = head_outputs(model, cache, idx)["embedding"]
    sim = emb @ emb.T
    iu = np.triu_indices(len(idx), 1)
    s, same = sim[iu], (names[:, None] == names[None, :])[iu]
    g, imp = s[same], s[~same]
    return {"identities": int(len(set(names))), "faces": int(len(idx)), "genuine_pairs": int(len(g)),
            "impostor_pairs": int(len(imp)), "tar@far=1%": tar_at_far(g, imp, 1e-2),
            "tar@far=0.1%": tar_at_far(g, imp, 1e-3), "roc_auc": roc_auc(g, imp),
            "accuracy_10fold_balanced": balanced_accuracy(g, imp)}


def balanced_accuracy(genuine: np.ndarray, impostor: np.ndarray, seed: int = 0) -> float:
    """LFW-style: all genuine pairs and as many impostor pairs drawn at random; threshold by 10-fold CV."""
    imp = np.random.default_rng(seed).choice(impostor, len(genuine), replace=False)
    sim = np.concatenate([genuine, imp])
    same = np.concatenate([np.ones(len(genuine), bool), np.zeros(len(imp), bool)])
    return cv_accuracy(sim, same, seed=seed)


def expression(model, cache: Cache) -> dict[str, dict[str, float]]:
    from attnmesh.models.face_transformer import EXPRESSIONS

    idx = np.nonzero((cache.split == "val") & cache.is_face & (cache.score >= 0.5))[0]
    pred = head_outputs(model, cache, idx)["expression"]
    lab = cache.expression[idx]
    out = {}
    for k, name in enumerate(EXPRESSIONS):
        r = np.corrcoef(pred[:, k], lab[:, k])[0, 1] if lab[:, k].std() > 0 else float("nan")
        out[name] = {"faces": int(len(idx)), "mae": float(np.abs(pred[:, k] - lab[:, k]).mean()),
                     "mae_constant_mean": float(np.abs(lab[:, k] - lab[:, k].mean()).mean()), "pearson_r": float(r)}
    return out
