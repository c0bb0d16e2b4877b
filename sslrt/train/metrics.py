"""The IS3 evaluation rule of the official code, in numpy (PAPER_FACTS.md, "Turning the heatmap
into a localization"), used for the trainer's held-out numbers.

heatmap (14, 14) -> bilinear upsample to 224 with align_corners=True -> min-max -> threshold at
the median (`sort(pred)[224*224//2]`) -> infer = pred > thr -> ciou against the gt box.
"""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache

import numpy as np

from sslrt.config import IMAGE_SIZE

THRESHOLDS = np.linspace(0.0, 1.0, 21)  # 0, 0.05, ..., 1.0 as the official AUC


@lru_cache(maxsize=4)
def _align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of linear interpolation with align_corners=True (src = i*(in-1)/(out-1))."""
    src = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(src).astype(int), n_in - 2)
    frac = src - lo
    m = np.zeros((n_out, n_in), np.float64)
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] += frac
    return m.astype(np.float32)


def upsample_heatmap(heatmap: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """(h, w) -> (size, size) bilinear, align_corners=True (separable, so two small matmuls)."""
    h = np.asarray(heatmap, np.float32).reshape(heatmap.shape[-2:])
    return _align_corners_matrix(h.shape[0], size) @ h @ _align_corners_matrix(h.shape[1], size).T


def box_mask(box, size: int = IMAGE_SIZE) -> np.ndarray:
    """gt[y0:y1, x0:x1] = 1 for a box [x0, y0, x1, y1] in 224 px (ints, as the official code casts)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    gt = np.zeros((size, size), np.float32)
    gt[y0:y1, x0:x1] = 1
    return gt


def ciou_is3(heatmap: np.ndarray, box) -> float:
    """Per-sample ciou of the IS3 evaluation at the median threshold."""
    pred = upsample_heatmap(heatmap)
    lo, hi = pred.min(), pred.max()
    if hi > lo:
        pred = (pred - lo) / (hi - lo)
    thr = np.sort(pred.ravel())[int(IMAGE_SIZE * IMAGE_SIZE * 0.5)]
    infer = (pred > thr).astype(np.float32)
    gt = box_mask(box)
    return float((infer * gt).sum() / (gt.sum() + (infer * (gt == 0)).sum()))


def _auc(fractions: np.ndarray) -> float:
    # sklearn.metrics.auc is the trapezoid rule over x
    return float(np.trapezoid(fractions, THRESHOLDS) if hasattr(np, "trapezoid") else np.trapz(fractions, THRESHOLDS))


def image_group(name: str) -> str:
    """IS3 groups samples by picture: the file stem minus its last `_category` token."""
    return name.rsplit("_", 1)[0]


def summarize(cious: list[float], names: list[str]) -> dict[str, float]:
    """cIoU@0.5, AUC, and the interactive iIoU@0.5 / iAUC (a picture succeeds at t only if every
    one of its samples has ciou >= t), all as fractions in [0, 1]."""
    cious_arr = np.asarray(cious, np.float64)
    by_image: dict[str, list[float]] = defaultdict(list)
    for c, n in zip(cious_arr, names):
        by_image[image_group(n)].append(c)
    worst = np.array([min(v) for v in by_image.values()])
    sample_curve = np.array([(cious_arr >= t).mean() for t in THRESHOLDS])
    image_curve = np.array([(worst >= t).mean() for t in THRESHOLDS])
    return {
        "cIoU": float((cious_arr >= 0.5).mean()),
        "AUC": _auc(sample_curve),
        "iIoU": float((worst >= 0.5).mean()),
        "iAUC": _auc(image_curve),
        "samples": int(cious_arr.size),
        "images": int(worst.size),
    }
