"""Heatmap -> localization (peak, box, score): pure numpy, the official evaluation's conventions.

The 14x14 cosine map is upsampled to 224x224 with bilinear align_corners=True (the rule of the
Flickr and IS3 evaluations), min-max normalised, and thresholded at the official median
threshold; the box is the connected region of that mask around the peak.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from sslrt.config import EPSILON, IMAGE_SIZE, TAU


@lru_cache(maxsize=8)
def _align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) linear interpolation matrix of torch's bilinear with align_corners=True."""
    m = np.zeros((out_size, in_size), dtype=np.float64)
    if in_size == 1 or out_size == 1:
        m[:, 0] = 1.0
        return m
    src = np.arange(out_size) * (in_size - 1) / (out_size - 1)
    lo = np.minimum(np.floor(src).astype(int), in_size - 2)
    frac = src - lo
    m[np.arange(out_size), lo] = 1 - frac
    m[np.arange(out_size), lo + 1] += frac
    return m


def upsample_align_corners(heatmaps: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """(N, h, w) -> (N, size, size), bilinear with align_corners=True, as a pair of matrix products."""
    h = np.asarray(heatmaps, dtype=np.float64)
    my = _align_corners_matrix(h.shape[-2], size)
    mx = _align_corners_matrix(h.shape[-1], size)
    return (my @ h @ mx.T).astype(np.float32)


def minmax(maps: np.ndarray) -> np.ndarray:
    """Per-map min-max to [0, 1]; a constant map is left as is (the official rule)."""
    maps = np.asarray(maps, dtype=np.float32)
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1), flat.max(1)
    span = hi - lo
    scale = np.where(span > 0, span, 1.0)
    shift = np.where(span > 0, lo, 0.0)
    return ((flat - shift[:, None]) / scale[:, None]).reshape(maps.shape)


def median_threshold_mask(pred: np.ndarray) -> np.ndarray:
    """The official fixed threshold: thr = sort(pred)[int(H*W*0.5)], mask = pred > thr."""
    flat = pred.reshape(len(pred), -1)
    k = int(flat.shape[1] * 0.5)
    thr = np.partition(flat, k, axis=1)[:, k]
    return pred > thr.reshape((-1,) + (1,) * (pred.ndim - 1))


def av_similarity(heatmaps: np.ndarray) -> np.ndarray:
    """Global audio-visual similarity of training: sum(P*A)/sum(P), P = sigmoid((A-0.65)/0.03)."""
    a = np.asarray(heatmaps, dtype=np.float64).reshape(len(heatmaps), -1)
    p = 1.0 / (1.0 + np.exp(-(a - EPSILON) / TAU))
    return (p * a).sum(1) / np.maximum(p.sum(1), 1e-12)


def region_box(mask: np.ndarray, peak_yx: tuple[int, int]) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1) of the 8-connected component of `mask` holding the peak."""
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    label = labels[peak_yx]
    if label == 0:  # peak not in the mask (a constant map): the whole image
        return 0, 0, mask.shape[1], mask.shape[0]
    ys, xs = np.nonzero(labels == label)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def localize_heatmaps(heatmaps: np.ndarray, image_sizes: list[tuple[int, int]]) -> list[dict]:
    """Batch of raw heatmaps (N,1,14,14) + original (H, W) per sample -> peak, bbox, score.

    Coordinates are in original image pixels: the 224 grid is the whole image resized, so x scales
    by W/224 and y by H/224; the peak is the centre of its 224-grid cell.
    """
    raw = np.asarray(heatmaps, dtype=np.float32).reshape(len(heatmaps), heatmaps.shape[-2], heatmaps.shape[-1])
    pred = minmax(upsample_align_corners(raw))
    masks = median_threshold_mask(pred)
    scores = av_similarity(raw)
    out = []
    for i, (h, w) in enumerate(image_sizes):
        py, px = np.unravel_index(int(pred[i].argmax()), pred[i].shape)
        x0, y0, x1, y1 = region_box(masks[i], (py, px))
        sx, sy = w / IMAGE_SIZE, h / IMAGE_SIZE
        out.append({
            "peak": [round((px + 0.5) * sx, 1), round((py + 0.5) * sy, 1)],
            "bbox": [round(x0 * sx, 1), round(y0 * sy, 1), round(x1 * sx, 1), round(y1 * sy, 1)],
            "score": float(scores[i]),
        })
    return out
