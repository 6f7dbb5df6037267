"""The paper's Table 2 metric on the iBUG 68 points, with failure rate, AUC and CED.

For one face with predicted points ``p`` and annotation ``g`` (68 x 2, image pixels):

* **all**: ``mean_k |p_k - g_k| / |g_36 - g_45|`` (inter-ocular distance, outer eye corners);
* **eyes**: for each eye the mean over its 6 points divided by that eye's corner distance (``|g_36 - g_39|``,
  ``|g_42 - g_45|``), then the mean of the two eyes;
* **lips**: the mean over the 20 mouth points (48..67) divided by the mouth-corner distance ``|g_48 - g_54|``.

Over a data set: the mean of each column over the faces found, the **failure rate** (share of faces whose
"all" error exceeds 10%, a missed face counting as a failure), **AUC@10%** (area under the cumulative error
distribution of "all" from 0 to 10%, divided by 10%, missed faces never reaching it) and the CED curve.
Errors are fractions (0.05 = 5%); reports print them as percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .maps import IBUG_LEFT_EYE, IBUG_LIPS, IBUG_RIGHT_EYE

THRESHOLD = 0.10


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)


def face_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Per-face normalised errors of (N, 68, 2) predictions (NaN rows = missed) against (N, 68, 2) annotations:
    ``{"all", "eyes", "lips"}`` -> (N,) (NaN where missed)."""
    pred = np.asarray(pred, np.float64)[..., :2]
    gt = np.asarray(gt, np.float64)
    d = _dist(pred, gt)  # (N, 68)
    iod = _dist(gt[:, 36], gt[:, 45])
    right = d[:, list(IBUG_RIGHT_EYE)].mean(1) / _dist(gt[:, 36], gt[:, 39])
    left = d[:, list(IBUG_LEFT_EYE)].mean(1) / _dist(gt[:, 42], gt[:, 45])
    lips = d[:, list(IBUG_LIPS)].mean(1) / _dist(gt[:, 48], gt[:, 54])
    return {"all": d.mean(1) / iod, "eyes": (right + left) / 2, "lips": lips}


def ced(errors: np.ndarray, threshold: float = THRESHOLD, steps: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: (thresholds (steps,), fraction of faces with error <= t). NaN (missed)
    counts in the denominator and never below a threshold."""
    e = np.where(np.isnan(errors), np.inf, errors)
    t = np.linspace(0.0, threshold, steps)
    frac = (e[None, :] <= t[:, None]).mean(1) if len(e) else np.zeros_like(t)
    return t, frac


def auc(errors: np.ndarray, threshold: float = THRESHOLD, steps: int = 1001) -> float:
    """Area under the CED from 0 to ``threshold``, divided by ``threshold`` (1 = every face perfect)."""
    t, frac = ced(errors, threshold, steps)
    return float(np.trapezoid(frac, t) / threshold)


def failure_rate(errors: np.ndarray, threshold: float = THRESHOLD) -> float:
    e = np.where(np.isnan(errors), np.inf, errors)
    return float((e > threshold).mean()) if len(e) else float("nan")


def summarize(pred: np.ndarray, gt: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float | int]:
    """Table 2 columns (means over found faces, percent), failure rate and AUC (over all faces, percent)."""
    errs = face_errors(pred, gt)
    found = ~np.isnan(errs["all"])
    out: dict[str, float | int] = {"faces": int(len(found)), "missed": int((~found).sum())}
    for k, v in errs.items():
        out[f"nme_{k}"] = float(100 * np.nanmean(v)) if found.any() else float("nan")
    out["median_nme_all"] = float(100 * np.nanmedian(errs["all"])) if found.any() else float("nan")
    out["failure_rate"] = 100 * failure_rate(errs["all"], threshold)
    out["auc"] = 100 * auc(errs["all"], threshold)
    return out


def plot_ced(curves: dict[str, np.ndarray], path: str, threshold: float = THRESHOLD, title: str = "") -> None:
    """CED plot PNG of the "all" errors of each named model (needs matplotlib: ``pip install attnmesh[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--ced needs matplotlib (pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, errors in curves.items():
        t, frac = ced(errors, threshold)
        ax.plot(100 * t, 100 * frac, label=f"{name} (AUC {100 * auc(errors, threshold):.1f})")
    ax.set_xlabel("NME, all 68 points (% inter-ocular distance)")
    ax.set_ylabel("faces (%)")
    ax.set_xlim(0, 100 * threshold)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def mesh_drift(a: Sequence[np.ndarray], b: Sequence[np.ndarray], exclude: Sequence[int]) -> dict[str, float]:
    """How far model ``b``'s landmarks are from model ``a``'s on the same faces (lists of (478, 2+) or (468, 2+) arrays;
    a 468-point mesh is compared on its 468 vertices),
    over the vertices not in ``exclude``, in percent of ``a``'s inter-ocular distance (vertices 33-263):
    mean over faces of the per-face mean, the 95th percentile of per-face means, and the mean of per-face
    maxima."""
    per_face, per_max = [], []
    for pa, pb in zip(a, b):
        keep = np.setdiff1d(np.arange(min(len(pa), len(pb))), np.asarray(exclude))  # 468 with the base mesh
        iod = float(np.linalg.norm(pa[33, :2] - pa[263, :2]))
        d = np.linalg.norm(pa[keep, :2] - pb[keep, :2], axis=-1) / iod
        per_face.append(d.mean())
        per_max.append(d.max())
    if not per_face:
        return {"faces": 0, "mean": float("nan"), "p95": float("nan"), "mean_max": float("nan")}
    return {"faces": len(per_face), "mean": float(100 * np.mean(per_face)),
            "p95": float(100 * np.percentile(per_face, 95)), "mean_max": float(100 * np.mean(per_max))}
