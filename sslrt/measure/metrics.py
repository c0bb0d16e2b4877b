"""Heatmap -> localization scores, exactly as the paper's official evaluation computes them.

The chain (../shared/PAPER_FACTS.md, "Turning the heatmap into a localization"):

    14x14 heatmap --upsample_heatmap--> 224x224 --prediction_map--> pred in [0, 1]
    boxes --gt_map_*--> gt (224x224)
    (pred, gt) --ciou_fixed_and_adaptive--> per-sample cIoU at the two thresholds
    per-sample cIoUs --summarize_localization_percent--> cIoU, AUC, ... in percent (x100)

Everything is pure numpy on batches (first axis = sample) so that the metrics stay a small
fraction of an evaluation of thousands of samples. Float dtypes follow the official code
(float32 maps, float64 sums) wherever rounding could move a threshold tie.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from sslrt.errors import SslrtError
# The localization core (upsampling, min-max, the median threshold, the pair score) lives in the
# runtime; the metrics build on it, so evaluation scores exactly what `sslrt run` localizes.
from sslrt.runtime.localization import (  # noqa: F401  (part of this module's API)
    FIXED_THRESHOLD_INDEX, MAP_SIZE, UPSAMPLE_RULES, _as_map_batch, av_similarity, fixed_thresholds,
    heatmaps_to_predictions, minmax_normalize, prediction_map, upsample_heatmap,
)

N_PIXELS = MAP_SIZE * MAP_SIZE
# Official cIoU thresholds of the success curves: [0.05 * i for i in range(21)]. Written as the
# same products (not i / 20) so that a cIoU equal to, e.g., 0.15 meets the same comparison.
CIOU_THRESHOLDS = 0.05 * np.arange(21, dtype=np.float64)
SUCCESS_CIOU = 0.5


# ----------------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------------
def _box_count_map(boxes_px: Iterable[Sequence[int]]) -> np.ndarray:
    """How many boxes cover each pixel; a box paints gt[ymin:ymax, xmin:xmax] (numpy slicing)."""
    count = np.zeros((MAP_SIZE, MAP_SIZE), dtype=np.float64)
    for box in boxes_px:
        xmin, ymin, xmax, ymax = box
        count[ymin:ymax, xmin:xmax] += 1
    return count


def _boxes_array(boxes, name: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise SslrtError(f"{name}: expected boxes [[x0, y0, x1, y1], ...], got shape {arr.shape}")
    return arr


def vggss_boxes_px(boxes_fractions) -> list[tuple[int, int, int, int]]:
    """VGG-SS boxes in [0, 1] fractions -> 224-pixel ints: int(clip(b, 0, 1) * 224)."""
    arr = _boxes_array(boxes_fractions, "VGG-SS boxes")
    px = (np.clip(arr, 0, 1) * MAP_SIZE).astype(int)
    return [tuple(int(v) for v in row) for row in px]


def flickr_boxes_px(boxes_256px) -> list[tuple[int, int, int, int]]:
    """Flickr-SoundNet boxes in 256-pixel units -> 224-pixel ints: int(224 * v / 256)."""
    return [tuple(int(MAP_SIZE * int(v) / 256) for v in box) for box in boxes_256px]


def is3_box_px(box_224px) -> tuple[int, int, int, int]:
    """IS3 gt_box, already in 224 pixels (floats like 47.0) -> ints."""
    if len(box_224px) != 4:
        raise SslrtError(f"IS3 gt_box: expected [x0, y0, x1, y1], got {list(box_224px)}")
    return tuple(int(v) for v in box_224px)


def gt_map_vggss(boxes_fractions) -> np.ndarray:
    """VGG-SS ground truth (224, 224) uint8: union of the boxes."""
    return (_box_count_map(vggss_boxes_px(boxes_fractions)) > 0).astype(np.uint8)


def gt_map_flickr(boxes_256px) -> np.ndarray:
    """Flickr-SoundNet ground truth (224, 224) float32 in {0, 0.5, 1}: annotator consensus.

    Every annotator's box adds 1; the sum is halved and clipped to 1, so a pixel that two
    annotators agree on is 1 and a pixel that only one marked is 0.5.
    """
    consensus = _box_count_map(flickr_boxes_px(boxes_256px)) / 2
    consensus[consensus > 1] = 1
    return consensus.astype(np.float32)


def gt_map_is3(box_224px) -> np.ndarray:
    """IS3 ground truth (224, 224) uint8: one box in 224 pixels."""
    return (_box_count_map([is3_box_px(box_224px)]) > 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Per-sample cIoU
# ----------------------------------------------------------------------------------------------
def _flat_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = _as_map_batch(pred, "prediction maps")
    gt = _as_map_batch(gt, "ground-truth maps")
    if pred.shape != gt.shape:
        raise SslrtError(f"prediction maps {pred.shape} and ground-truth maps {gt.shape} differ in shape")
    return pred.reshape(len(pred), -1), gt.reshape(len(gt), -1)


def adaptive_k(gt: np.ndarray) -> np.ndarray:
    """Pixels the adaptive threshold lets through: count(gt != 0), or half the map if gt is empty."""
    flat = np.asarray(gt).reshape(len(gt), -1)
    k = np.count_nonzero(flat, axis=1)
    return np.where(k == 0, flat.shape[1] // 2, k)


def adaptive_thresholds(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per sample, sort(pred.ravel())[n_pixels - k] with k = adaptive_k(gt)."""
    flat, gflat = _flat_pair(pred, gt)
    kth = flat.shape[1] - adaptive_k(gflat)
    return np.array([np.partition(row, k)[k] for row, k in zip(flat, kth)], dtype=flat.dtype)


def ciou_at_thresholds(pred: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per-sample cIoU (N,) float64 of infer = pred > threshold against gt.

    ciou = sum(infer * gt) / (sum(gt) + sum(infer * (gt == 0))). A sample with an empty gt and an
    empty infer gives 0 / 0 = nan, as in the official code; nan never counts as a success.
    """
    flat, gflat = _flat_pair(pred, gt)
    return _ciou_flat(flat, gflat, np.asarray(thresholds))


def _ciou_flat(flat: np.ndarray, gflat: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    infer = flat > thresholds.reshape(-1, 1)
    # Every term is 0, 0.5 or 1, so these float64 sums are exact, as the official float64 sums are.
    if gflat.dtype == np.bool_ or np.issubdtype(gflat.dtype, np.integer) and gflat.max(initial=0) <= 1:
        inter = np.count_nonzero(infer & (gflat != 0), axis=1).astype(np.float64)
        gt_area = np.count_nonzero(gflat, axis=1).astype(np.float64)
    else:
        inter = np.multiply(infer, gflat, dtype=np.float64).sum(axis=1)
        gt_area = gflat.sum(axis=1, dtype=np.float64)
    spill = np.count_nonzero(infer & (gflat == 0), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (gt_area + spill)


def ciou_fixed_and_adaptive(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample cIoU at the fixed (median) and at the adaptive threshold: two (N,) float64."""
    flat, gflat = _flat_pair(pred, gt)
    n = flat.shape[1]
    kth_fixed = int(n * 0.5)
    kth_adaptive = n - adaptive_k(gflat)
    part = np.partition(flat, kth_fixed, axis=1)
    thr_fixed = part[:, kth_fixed]
    # After partitioning at the median, the adaptive element lies in one known half of each row.
    thr_adaptive = thr_fixed.copy()
    for i, k in enumerate(kth_adaptive):
        if k < kth_fixed:
            thr_adaptive[i] = np.partition(part[i, :kth_fixed], k)[k]
        elif k > kth_fixed:
            thr_adaptive[i] = np.partition(part[i, kth_fixed + 1:], k - kth_fixed - 1)[k - kth_fixed - 1]
    return _ciou_flat(flat, gflat, thr_fixed), _ciou_flat(flat, gflat, thr_adaptive)


# ----------------------------------------------------------------------------------------------
# Summaries (percent, as the paper reports them)
# ----------------------------------------------------------------------------------------------
def success_curve(cious: np.ndarray, thresholds: np.ndarray = CIOU_THRESHOLDS) -> np.ndarray:
    """Fraction of samples with ciou >= t, for each t (float64, in [0, 1])."""
    cious = np.asarray(cious, dtype=np.float64).ravel()
    if cious.size == 0:
        raise SslrtError("no samples to summarize")
    return np.count_nonzero(cious[None, :] >= np.asarray(thresholds)[:, None], axis=1) / cious.size


def trapezoid_auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under y(x) by the trapezoid rule, as sklearn.metrics.auc (np.trapz) computes it for
    increasing x: sum(diff(x) * (y[1:] + y[:-1]) / 2)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise SslrtError(f"trapezoid_auc: need two 1-D arrays of equal length >= 2, got {x.shape} and {y.shape}")
    if np.any(np.diff(x) < 0):
        raise SslrtError("trapezoid_auc: x must be increasing")
    return float(np.add.reduce(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def ciou_percent(cious: np.ndarray) -> float:
    """The paper's cIoU: percent (x100) of samples with ciou >= 0.5."""
    return float(success_curve(cious, np.array([SUCCESS_CIOU]))[0] * 100)


def auc_percent(cious: np.ndarray) -> float:
    """The paper's AUC: area under the success curve over t = 0, 0.05, ..., 1, in percent (x100)."""
    return trapezoid_auc(CIOU_THRESHOLDS, success_curve(cious)) * 100


def is3_image_group(name: str) -> str:
    """The image an IS3 sample belongs to: its file stem minus the last `_category` token.

    'accordion_baby_10467_accordion' (or '.../accordion_baby_10467_accordion.jpg') ->
    'accordion_baby_10467'.
    """
    stem = name.replace("\\", "/").rsplit("/", 1)[-1]
    if stem.lower().endswith((".jpg", ".jpeg", ".png", ".wav")):
        stem = stem.rsplit(".", 1)[0]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def image_success_curve(cious: np.ndarray, groups: Sequence[str],
                        thresholds: np.ndarray = CIOU_THRESHOLDS) -> np.ndarray:
    """Fraction of images (groups) whose every sample has ciou >= t, for each t.

    An image's worst sample decides it; a nan cIoU fails its image at every t.
    """
    cious = np.asarray(cious, dtype=np.float64).ravel()
    if len(groups) != cious.size:
        raise SslrtError(f"{cious.size} cIoU values but {len(groups)} group names")
    if cious.size == 0:
        raise SslrtError("no samples to summarize")
    _, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    worst = np.full(inverse.max() + 1, np.inf)
    np.minimum.at(worst, inverse, np.where(np.isnan(cious), -np.inf, cious))
    return np.count_nonzero(worst[None, :] >= np.asarray(thresholds)[:, None], axis=1) / worst.size


def iiou_percent(cious: np.ndarray, groups: Sequence[str]) -> float:
    """IS3 iIoU: percent (x100) of images whose every sample has ciou >= 0.5."""
    return float(image_success_curve(cious, groups, np.array([SUCCESS_CIOU]))[0] * 100)


def iauc_percent(cious: np.ndarray, groups: Sequence[str]) -> float:
    """IS3 iAUC: area under the image success curve over t = 0, 0.05, ..., 1, in percent (x100)."""
    return trapezoid_auc(CIOU_THRESHOLDS, image_success_curve(cious, groups)) * 100


def summarize_localization_percent(ciou_fixed: np.ndarray, ciou_adaptive: np.ndarray,
                                   groups: Sequence[str] | None = None) -> dict[str, float]:
    """The paper's table columns, every value in percent (x100).

    Keys: cIoU, AUC, cIoU_adap, AUC_adap; with groups (IS3) also iIoU, iAUC, iIoU_adap, iAUC_adap.
    """
    summary = {
        "cIoU": ciou_percent(ciou_fixed),
        "AUC": auc_percent(ciou_fixed),
        "cIoU_adap": ciou_percent(ciou_adaptive),
        "AUC_adap": auc_percent(ciou_adaptive),
    }
    if groups is not None:
        summary.update({
            "iIoU": iiou_percent(ciou_fixed, groups),
            "iAUC": iauc_percent(ciou_fixed, groups),
            "iIoU_adap": iiou_percent(ciou_adaptive, groups),
            "iAUC_adap": iauc_percent(ciou_adaptive, groups),
        })
    return summary


# ----------------------------------------------------------------------------------------------
# Pair scores and retrieval
# ----------------------------------------------------------------------------------------------
def retrieval_recall_percent(similarity: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Cross-modal retrieval recall@k in percent (x100).

    similarity[i, j] scores audio i against image j; the diagonal holds the true pairs.
    audio->image ranks row i, image->audio ranks column j. The rank of a true pair is the number
    of other candidates scoring >= it, so ties count against it (a constant score earns no
    credit) and a nan true score is never retrieved.
    Keys: 'audio_to_image_R@k' and 'image_to_audio_R@k' for each k.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] == 0:
        raise SslrtError(f"similarity: expected a square (N, N) matrix, got shape {sim.shape}")
    n = sim.shape[0]
    true = np.diag(sim)
    off_diagonal = ~np.eye(n, dtype=bool)

    def ranks(scores: np.ndarray) -> np.ndarray:  # rows are queries
        r = np.count_nonzero((scores >= true[:, None]) & off_diagonal, axis=1)
        return np.where(np.isnan(true), n, r)

    rank_a2v, rank_v2a = ranks(sim), ranks(sim.T)
    out = {}
    for direction, r in (("audio_to_image", rank_a2v), ("image_to_audio", rank_v2a)):
        for k in ks:
            out[f"{direction}_R@{k}"] = float(np.count_nonzero(r < k) / n * 100)
    return out
