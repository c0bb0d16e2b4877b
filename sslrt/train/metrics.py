"""The trainer's held-out numbers: the official IS3 evaluation of sslrt.measure.metrics, as fractions in
[0, 1] (the trainer's history and TRAINING.md report fractions; `sslrt eval` reports percent)."""
from __future__ import annotations

import numpy as np

from sslrt.measure import metrics

from sslrt.spec import get_spec

UPSAMPLE_RULE = get_spec("ours").eval_upsample["is3"]  # the paper's IS3 rule


def ciou_is3(heatmap: np.ndarray, box) -> float:
    """Per-sample ciou of the IS3 evaluation at the official median threshold."""
    h = np.asarray(heatmap, np.float32).reshape(1, *np.shape(heatmap)[-2:])
    fixed, _ = metrics.ciou_fixed_and_adaptive(metrics.heatmaps_to_predictions(h, UPSAMPLE_RULE), metrics.gt_map_is3(box)[None])
    return float(fixed[0])


def summarize(cious: list[float], names: list[str]) -> dict[str, float]:
    """cIoU@0.5, AUC, and the interactive iIoU@0.5 / iAUC (a picture succeeds at t only if every
    one of its samples has ciou >= t), all as fractions in [0, 1]."""
    c = np.asarray(cious, np.float64)
    groups = [metrics.is3_image_group(n) for n in names]
    return {
        "cIoU": metrics.ciou_percent(c) / 100,
        "AUC": metrics.auc_percent(c) / 100,
        "iIoU": metrics.iiou_percent(c, groups) / 100,
        "iAUC": metrics.iauc_percent(c, groups) / 100,
        "samples": int(c.size),
        "images": len(set(groups)),
    }
