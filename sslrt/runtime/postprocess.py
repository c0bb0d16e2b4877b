"""Heatmap -> localization (peak, box, score): pure numpy, on the official evaluation's functions.

The 14x14 cosine map becomes the IS3/Flickr prediction map (bilinear align_corners=True to
224x224, min-max), which is thresholded at the official median threshold; the box is the
connected region of that mask around the peak. The score is the training objective's global
audio-visual similarity. Using sslrt.metrics here means `sslrt run` localizes exactly as
`sslrt eval` scores.
"""
from __future__ import annotations

import cv2
import numpy as np

from sslrt.config import IMAGE_SIZE
from sslrt.metrics import av_similarity, fixed_thresholds, heatmaps_to_predictions

UPSAMPLE_RULE = "bilinear_align_corners"


def region_box(mask: np.ndarray, peak_yx: tuple[int, int]) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1) of the 8-connected component of `mask` holding the peak."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    label = labels[peak_yx]
    if label == 0:  # peak not in the mask (a constant map): the whole image
        return 0, 0, mask.shape[1], mask.shape[0]
    x, y, w, h = (int(v) for v in stats[label, :4])
    return x, y, x + w, y + h


def localize_heatmaps(heatmaps: np.ndarray, image_sizes: list[tuple[int, int]]) -> list[dict]:
    """Batch of raw heatmaps (N,1,14,14) + original (H, W) per sample -> peak, bbox, score.

    Coordinates are in original image pixels: the 224 grid is the whole image resized, so x scales
    by W/224 and y by H/224. The peak is the centre of the hottest heatmap cell (each of the 14x14
    cells covers 1/14 of the image); the official upsampling (align_corners=True) would put a border
    cell's maximum on the image's edge, which is not where a person would point.
    """
    raw = np.asarray(heatmaps, dtype=np.float32).reshape(len(heatmaps), heatmaps.shape[-2], heatmaps.shape[-1])
    pred = heatmaps_to_predictions(raw, UPSAMPLE_RULE)
    masks = pred > fixed_thresholds(pred)[:, None, None]
    scores = av_similarity(raw)
    out = []
    rows, cols = raw.shape[1:]
    for i, (h, w) in enumerate(image_sizes):
        py, px = np.unravel_index(int(pred[i].argmax()), pred[i].shape)
        x0, y0, x1, y1 = region_box(masks[i], (py, px))
        cy, cx = np.unravel_index(int(raw[i].argmax()), raw[i].shape)
        sx, sy = w / IMAGE_SIZE, h / IMAGE_SIZE
        out.append({
            "peak": [round((cx + 0.5) * w / cols, 1), round((cy + 0.5) * h / rows, 1)],
            "bbox": [round(x0 * sx, 1), round(y0 * sy, 1), round(x1 * sx, 1), round(y1 * sy, 1)],
            "score": float(scores[i]),
        })
    return out
