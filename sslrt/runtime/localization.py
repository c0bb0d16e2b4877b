"""Heatmap -> localization: the core shared by `sslrt run` and `sslrt eval` (pure numpy).

    native heatmap (N, h, w) --upsample_heatmap (a test set's rule)--> (N, 224, 224)
    --prediction_map--> pred in [0, 1] --fixed_thresholds (official median)--> mask
    mask + peak --region_box--> box;  cosine map --av_similarity--> score

The evaluation metrics (sslrt.measure.metrics) build on these functions, so `sslrt run`
localizes exactly as `sslrt eval` scores. Float dtypes follow the official code (float32 maps,
float64 sums) wherever rounding could move a threshold tie.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from sslrt.errors import SslrtError

MAP_SIZE = 224  # localization maps (and the evaluation's ground truth) are 224x224
# Official fixed threshold: sort(pred.ravel())[int(224 * 224 * 0.5)].
FIXED_THRESHOLD_INDEX = int(MAP_SIZE * MAP_SIZE * 0.5)
# The official code's two ways to bring a native map to 224x224 (which one a family and a test set
# use is in the family's spec).
CV2_LINEAR = "cv2_linear"  # cv2.resize INTER_LINEAR, half-pixel centres
BILINEAR_ALIGN_CORNERS = "bilinear_align_corners"  # torch interpolate(bilinear, align_corners=True)
UPSAMPLE_RULES = (CV2_LINEAR, BILINEAR_ALIGN_CORNERS)


# -- native map -> 224x224 ----------------------------------------------------------------------
def _as_map_batch(maps: np.ndarray, name: str) -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) -> (N, H, W)."""
    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or maps.shape[1] == 0 or maps.shape[2] == 0:
        raise SslrtError(f"{name}: expected a batch of maps (N, H, W) or (N, 1, H, W), got shape {maps.shape}")
    return maps


def upsample_heatmap(heatmaps: np.ndarray, rule: str, size: int = MAP_SIZE) -> np.ndarray:
    """Batch of heatmaps (N, h, w) or (N, 1, h, w) -> (N, size, size) float32.

    rule 'cv2_linear': cv2.resize(INTER_LINEAR), what the official code used for VGG-SS.
    rule 'bilinear_align_corners': torch interpolate(mode='bilinear', align_corners=True), used
    for Flickr-SoundNet and IS3; computed here in numpy, bit for bit as torch's kernel.
    """
    maps = _as_map_batch(heatmaps, "heatmaps").astype(np.float32, copy=False)
    if rule == "cv2_linear":
        out = np.empty((maps.shape[0], size, size), dtype=np.float32)
        for i, m in enumerate(maps):  # cv2 has no batch resize; 14x14 -> 224x224 costs ~10 us
            out[i] = cv2.resize(np.ascontiguousarray(m), dsize=(size, size), interpolation=cv2.INTER_LINEAR)
        return out
    if rule == "bilinear_align_corners":
        return _bilinear_align_corners(maps, size, size)
    raise SslrtError(f"unknown upsampling rule {rule!r}; expected one of {', '.join(UPSAMPLE_RULES)}")


@lru_cache(maxsize=16)
def _align_corners_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and float32 weights (w0, w1) of one axis, as torch computes them.

    torch (CPU and CUDA alike): scale = float32(in - 1) / (out - 1); src = scale * dst in
    float32; i0 = floor(src) (clamped), i1 = i0 + 1 except at the last row; w1 = src - i0,
    w0 = 1 - w1.
    """
    f = np.float32
    scale = f(in_size - 1) / f(out_size - 1) if out_size > 1 else f(0)
    src = scale * np.arange(out_size, dtype=f)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    w1 = np.clip(src - i0.astype(f), f(0), f(1)).astype(f)
    i1 = i0 + (i0 < in_size - 1)
    w0 = (f(1) - w1).astype(f)
    return i0, i1, w0, w1


def _fma_float32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a * b + c of float32 arrays with one rounding, as a fused multiply-add gives.

    a * b is exact in float64 (24 + 24 bits), so rounding the float64 sum to float32 is already
    the fused result unless that sum sits exactly halfway between two float32 values while the
    float64 addition was inexact (double rounding). Those rare elements are redone with an
    error-free TwoSum: the float64 sum moved one ulp towards its rounding error (round-to-odd)
    then rounds correctly to float32 (53 >= 2 * 24 + 2).
    """
    p = np.multiply(a, b, dtype=np.float64)
    s = np.add(p, c, dtype=np.float64)
    out = s.astype(np.float32)
    # Bits dropped by float64 -> float32: 29; a halfway case is 1 followed by 28 zeros.
    flat_s = s.reshape(-1)
    idx = np.flatnonzero((flat_s.view(np.int64) & 0x1FFFFFFF) == 0x10000000)
    if idx.size:
        ps, ss = p.reshape(-1)[idx], flat_s[idx]
        cs = np.broadcast_to(c, s.shape).reshape(-1)[idx].astype(np.float64)
        bv = ss - ps
        err = (ps - (ss - bv)) + (cs - bv)
        ss = np.where(err != 0, np.nextafter(ss, np.where(err > 0, np.inf, -np.inf)), ss)
        out.reshape(-1)[idx] = ss.astype(np.float32)
    return out


def _bilinear_align_corners(maps: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """torch interpolate(bilinear, align_corners=True) of float32 (N, h, w), bit for bit.

    torch's kernel evaluates t0 * w0 + t1 * w1 per axis (width inside, height outside), and its
    builds contract that into fma(t0, w0, t1 * w1); plain float32 a * b + c * d differs from
    torch in ~40% of pixels by one ulp, which can move a tie at the cIoU threshold.
    """
    hi0, hi1, hw0, hw1 = _align_corners_taps(maps.shape[1], out_h)
    wi0, wi1, ww0, ww1 = _align_corners_taps(maps.shape[2], out_w)
    # The width pass depends only on the source row: do it on the h source rows, then gather.
    across = _fma_float32(maps[:, :, wi0], ww0, maps[:, :, wi1] * ww1)  # (N, h, out_w)
    out = np.empty((maps.shape[0], out_h, out_w), dtype=np.float32)
    hw0 = np.broadcast_to(hw0[:, None].astype(np.float64), (out_h, out_w))
    hw1 = hw1[:, None]
    for i, rows in enumerate(across):  # one sample at a time keeps the float64 temporaries in cache
        out[i] = _fma_float32(rows[hi0], hw0, rows[hi1] * hw1)
    return out


# -- normalisation and threshold ------------------------------------------------------------------
def minmax_normalize(maps: np.ndarray) -> np.ndarray:
    """Per-sample (x - min) / (max - min) over all axes but the first; a constant sample is
    returned unchanged (the official normalize_img leaves it as is). Keeps the float dtype."""
    maps = np.asarray(maps)
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    axes = tuple(range(1, maps.ndim))
    lo = maps.min(axis=axes, keepdims=True)
    hi = maps.max(axis=axes, keepdims=True)
    span = hi - lo
    flat = span == 0
    if not flat.any():
        return (maps - lo) / span
    # Divide by 1 where a sample is constant, then put its original values back.
    out = (maps - lo) / np.where(flat, np.ones_like(span), span)
    return np.where(flat, maps, out)


# The official evaluation loops normalise in two ways: validate_lvs/validate_ssltie write
# pred = 1 - normalize(-h), validate (EZ-VSL, SLAVC, FNAC) pred = normalize(h). Equal in exact
# arithmetic, not to the last bit, and the last bit decides which pixels tie with the threshold.
ONE_MINUS_NEGATED = "one_minus_negated"
MINMAX = "minmax"
NORMALIZE_RULES = (ONE_MINUS_NEGATED, MINMAX)


def prediction_map(heatmaps224: np.ndarray, normalize: str = ONE_MINUS_NEGATED) -> np.ndarray:
    """Upsampled heatmaps (N, 224, 224) -> the official prediction map, in [0, 1], with the float
    operations of the family's evaluation loop (see NORMALIZE_RULES)."""
    h = _as_map_batch(heatmaps224, "heatmaps")
    if normalize == ONE_MINUS_NEGATED:
        return 1 - minmax_normalize(-h)
    if normalize == MINMAX:
        return minmax_normalize(h)
    raise SslrtError(f"unknown normalisation {normalize!r}; expected one of {', '.join(NORMALIZE_RULES)}")


def heatmaps_to_predictions(heatmaps: np.ndarray, rule: str, normalize: str = ONE_MINUS_NEGATED) -> np.ndarray:
    """Model heatmaps (N, h, w) -> prediction maps (N, 224, 224) float32 under a test set's
    upsampling rule and the family's normalisation."""
    return prediction_map(upsample_heatmap(heatmaps, rule), normalize)


def fixed_thresholds(pred: np.ndarray) -> np.ndarray:
    """Per sample, sort(pred.ravel())[int(n_pixels * 0.5)]: the kth element exactly, as
    np.partition gives it (float32 maps by `_kth_float32`, 3x faster on 224x224 maps; a map with
    a NaN, which the pipeline refuses before this, goes to np.partition)."""
    flat = _as_map_batch(pred, "prediction maps").reshape(len(pred), -1)
    kth = int(flat.shape[1] * 0.5)
    if flat.dtype == np.float32 and flat.shape[1] > 1 and not np.isnan(flat).any():
        return np.array([_kth_float32(row, kth) for row in flat], dtype=np.float32)
    return np.partition(flat, kth, axis=1)[:, kth]


def _kth_float32(values: np.ndarray, kth: int) -> np.float32:
    """The kth smallest of 1-D float32 values without NaN: one counting pass into at most 4096
    buckets that split the values' range, then np.partition of the few values in the bucket that
    holds the kth (~0.1 vs ~0.32 ms for a 224x224 map). The float bits made unsigned and
    monotonic in the value (negatives: every bit flipped; the rest: the sign bit set) order the
    values as float comparison does, -0.0 below +0.0 (equal values either way)."""
    bits = values.view(np.uint32)
    keys = bits ^ ((np.uint32(0) - (bits >> np.uint32(31))) | np.uint32(0x80000000))
    lowest = keys.min()
    span = int(keys.max() - lowest)
    # few buckets: the counts stay small (32 KB), memory a process reuses without page faults
    buckets = (keys - lowest) >> np.uint32(max(0, span.bit_length() - _BUCKET_BITS))
    counts = np.cumsum(np.bincount(buckets))
    bucket = int(np.searchsorted(counts, kth, side="right"))
    below = int(counts[bucket - 1]) if bucket else 0
    return np.partition(values[buckets == bucket], kth - below)[kth - below]


_BUCKET_BITS = 12



def av_similarity(heatmaps: np.ndarray, epsilon: float = 0.65, tau: float = 0.03) -> np.ndarray:
    """Global audio-visual similarity of each pair (N,) float64: sum(P * A) / sum(P) over the
    heatmap's pixels, P = sigmoid((A - epsilon) / tau) -- the training objective's soft
    foreground average of the cosine map A."""
    a = np.asarray(heatmaps, dtype=np.float64)
    if a.ndim < 2:
        raise SslrtError(f"heatmaps: expected a batch (N, ...), got shape {a.shape}")
    a = a.reshape(len(a), -1)
    p = 1.0 / (1.0 + np.exp(-(a - epsilon) / tau))
    return (p * a).sum(axis=1) / p.sum(axis=1)



# -- peak, box, score ---------------------------------------------------------------------------
def region_box(mask: np.ndarray, peak_yx: tuple[int, int]) -> tuple[int, int, int, int]:
    """[x0, y0, x1, y1) of the 8-connected component of `mask` holding the peak: a flood fill
    from the peak (~0.04 ms on 224x224, where labelling every component took ~0.17 ms)."""
    py, px = int(peak_yx[0]), int(peak_yx[1])  # an index into the mask (argmax's): not negative
    # 0/1 in a C-ordered copy: the fill writes into it, and any non-zero value counts as "in"
    filled = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if not filled[py, px]:  # peak not in the mask (a constant map): the whole image
        return 0, 0, mask.shape[1], mask.shape[0]
    # 8-connectivity; a zero tolerance fills the pixels equal to the seed's (the mask's ones)
    _, _, _, (x, y, w, h) = cv2.floodFill(filled, None, (px, py), 2, 0, 0, 8)
    return int(x), int(y), int(x + w), int(y + h)


def localize_heatmaps(heatmaps: np.ndarray, image_sizes: list[tuple[int, int]], spec=None,
                      sounding_threshold: float | None = None) -> list[dict]:
    """Batch of native heatmaps (N,1,h,w) + original (H, W) per sample -> peak, bbox, score,
    sounding, under the family's rules (sslrt.spec.ModelSpec: upsampling, units, threshold).

    Coordinates are in original image pixels: the 224 grid is the whole image resized, so x scales
    by W/224 and y by H/224. The peak is the centre of the hottest heatmap cell (each of the 14x14
    cells covers 1/14 of the image); the official upsampling (align_corners=True) would put a border
    cell's maximum on the image's edge, which is not where a person would point.
    """
    if spec is None:
        from sslrt.spec import DEFAULT_FAMILY, get_spec

        spec = get_spec(DEFAULT_FAMILY)
    raw = np.asarray(heatmaps, dtype=np.float32).reshape(len(heatmaps), heatmaps.shape[-2], heatmaps.shape[-1])
    up = upsample_heatmap(raw, spec.run_upsample)
    pred = prediction_map(up, spec.eval_normalize)
    masks = pred > fixed_thresholds(pred)[:, None, None]
    scores = av_similarity(spec.to_cosine(raw), spec.score_epsilon, spec.score_tau)
    # "No sound source": the benchmark compares the maximum of its own 224x224 map with the threshold.
    sounding_maps = up if spec.sounding_upsample == spec.run_upsample else upsample_heatmap(raw, spec.sounding_upsample)
    sounding_max = sounding_maps.reshape(len(raw), -1).max(axis=1)
    threshold = spec.sounding_threshold if sounding_threshold is None else sounding_threshold
    out = []
    rows, cols = raw.shape[1:]
    for i, (h, w) in enumerate(image_sizes):
        py, px = np.unravel_index(int(pred[i].argmax()), pred[i].shape)
        x0, y0, x1, y1 = region_box(masks[i], (py, px))
        cy, cx = np.unravel_index(int(raw[i].argmax()), raw[i].shape)
        sx, sy = w / MAP_SIZE, h / MAP_SIZE
        value = spec.sounding_value(float(sounding_max[i]))
        out.append({
            "peak": [round((cx + 0.5) * w / cols, 1), round((cy + 0.5) * h / rows, 1)],
            "bbox": [round(x0 * sx, 1), round(y0 * sy, 1), round(x1 * sx, 1), round(y1 * sy, 1)],
            "score": float(scores[i]),
            "sounding": None if threshold is None else bool(value > threshold),
            "sounding_value": value,
            "sounding_threshold": threshold,
        })
    return out
