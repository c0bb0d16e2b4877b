"""sslrt.measure.metrics against slow, literal transcriptions of the official evaluation.

The `literal_*` helpers below are deliberately naive: Python loops, sorted(), list slicing,
written line by line from ../shared/PAPER_FACTS.md ("Turning the heatmap into a localization")
and the official test code. The vectorized functions must give exactly their numbers.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from sslrt.measure import metrics as M
from sslrt.errors import SslrtError

S = 224
N_PIX = S * S


# ----------------------------------------------------------------------------------------------
# Literal transcriptions
# ----------------------------------------------------------------------------------------------
def literal_paint(boxes_px) -> list[list[float]]:
    """Sum of boxes, each painting gt[ymin:ymax, xmin:xmax] with Python slicing."""
    grid = [[0.0] * S for _ in range(S)]
    for xmin, ymin, xmax, ymax in boxes_px:
        for row in grid[ymin:ymax]:
            for x in range(S)[xmin:xmax]:
                row[x] += 1.0
    return grid


def literal_gt_vggss(boxes):
    px = [[int(min(max(v, 0.0), 1.0) * 224) for v in b] for b in boxes]
    return np.array([[1.0 if v > 0 else 0.0 for v in row] for row in literal_paint(px)])


def literal_gt_flickr(boxes_256):
    px = [[int(224 * int(v) / 256) for v in b] for b in boxes_256]
    return np.array([[min(v / 2, 1.0) for v in row] for row in literal_paint(px)])


def literal_gt_is3(box):
    return np.array([[1.0 if v > 0 else 0.0 for v in row] for row in literal_paint([[int(v) for v in box]])])


def literal_ciou(pred: np.ndarray, gt: np.ndarray, adaptive: bool) -> float:
    values = [float(v) for v in pred.ravel()]  # float32 -> Python float is exact
    gts = [float(v) for v in gt.ravel()]
    ordered = sorted(values)
    if adaptive:
        k = sum(1 for g in gts if g != 0)
        if k == 0:
            k = 224 * 224 // 2
        thr = ordered[224 * 224 - k]
    else:
        thr = ordered[int(224 * 224 * 0.5)]
    infer = [1.0 if v > thr else 0.0 for v in values]
    inter = sum(i * g for i, g in zip(infer, gts))
    union = sum(gts) + sum(i for i, g in zip(infer, gts) if g == 0)
    return inter / union if union else math.nan


def literal_success(cious, t) -> float:
    return sum(1 for c in cious if c >= t) / len(cious)


def literal_auc(cious) -> float:
    """sklearn.metrics.auc(x, y) is np.trapz(y, x) for increasing x."""
    x = [0.05 * i for i in range(21)]
    y = [literal_success(cious, t) for t in x]
    return float(np.trapezoid(y, x))


def literal_image_success(cious, names, t) -> float:
    by_image: dict[str, list[float]] = {}
    for c, n in zip(cious, names):
        by_image.setdefault("_".join(n.split("_")[:-1]), []).append(c)
    return sum(1 for cs in by_image.values() if all(c >= t for c in cs)) / len(by_image)


def literal_minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return x if hi - lo == 0 else (x - lo) / (hi - lo)


# ----------------------------------------------------------------------------------------------
# Upsampling and normalisation
# ----------------------------------------------------------------------------------------------
def test_thresholds_are_the_official_products_and_linspace():
    assert M.CIOU_THRESHOLDS.tolist() == [0.05 * i for i in range(21)]
    np.testing.assert_array_equal(M.CIOU_THRESHOLDS, np.linspace(0, 1, 21))


def test_cv2_linear_is_cv2_resize_per_sample():
    h = np.random.default_rng(0).standard_normal((3, 1, 14, 14)).astype(np.float32)
    out = M.upsample_heatmap(h, "cv2_linear")
    assert out.shape == (3, S, S) and out.dtype == np.float32
    for i in range(3):
        np.testing.assert_array_equal(out[i], cv2.resize(h[i, 0], dsize=(S, S), interpolation=cv2.INTER_LINEAR))


@pytest.mark.parametrize("shape,scale", [((6, 14, 14), 1.0), ((4, 14, 14), 0.015), ((2, 7, 9), 30.0)])
def test_bilinear_align_corners_equals_torch_bit_for_bit(shape, scale):
    torch = pytest.importorskip("torch")
    h = (np.random.default_rng(1).standard_normal(shape) * scale + 0.5).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(h)[:, None], size=(S, S), mode="bilinear", align_corners=True)[:, 0].numpy()
    np.testing.assert_array_equal(M.upsample_heatmap(h, "bilinear_align_corners"), expected)


def test_unknown_upsampling_rule_is_refused():
    with pytest.raises(SslrtError, match="unknown upsampling rule"):
        M.upsample_heatmap(np.zeros((1, 14, 14), np.float32), "nearest")


def test_minmax_per_sample_and_constant_sample_left_as_is():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 5)).astype(np.float32)
    x[1] = 0.25  # constant: the official normalize_img returns it unchanged
    out = M.minmax_normalize(x)
    for i in range(3):
        np.testing.assert_array_equal(out[i], literal_minmax(x[i]))
    np.testing.assert_array_equal(out[1], x[1])


def test_prediction_map_is_the_official_one_minus_normalized_negative():
    h = M.upsample_heatmap(np.random.default_rng(3).standard_normal((3, 14, 14)).astype(np.float32),
                           "bilinear_align_corners")
    pred = M.prediction_map(h)
    assert pred.dtype == np.float32
    for i in range(3):
        np.testing.assert_array_equal(pred[i], 1 - literal_minmax(-h[i]))
    # In exact arithmetic that is minmax(h); in float32 they agree to rounding only.
    np.testing.assert_allclose(pred, M.minmax_normalize(h), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Ground truth
# ----------------------------------------------------------------------------------------------
def test_gt_vggss_clips_fractions_and_takes_the_union():
    # Two overlapping boxes (overlap stays 1, not 2) and one with out-of-range values like the
    # -2.9e16 in the real vggss.json: clip(b, 0, 1) * 224 -> int.
    boxes = [[0.1, 0.2, 0.5, 0.6], [0.3, 0.4, 0.9, 0.95], [-2.8823037615171174e16, 0.9, 1.7, 1.0]]
    gt = M.gt_map_vggss(boxes)
    assert gt.dtype == np.uint8 and gt.max() == 1
    np.testing.assert_array_equal(gt, literal_gt_vggss(boxes))
    # by hand: box 1 is x 22..111, y 44..134 (int(0.1*224) = 22, int(0.5*224) = 112, ...)
    assert gt[44, 22] == 1 and gt[43, 22] == 0 and gt[44, 21] == 0 and gt[134, 111] == 1 and gt[44, 112] == 0
    assert M.vggss_boxes_px([[0.403125, 0.253125, 0.6, 0.75]]) == [(90, 56, 134, 168)]


def test_gt_flickr_annotator_consensus():
    # 256-pixel units -> int(224 * v / 256): 0 -> 0, 128 -> 112, 256 -> 224, 100 -> 87 (87.5).
    a = [0, 0, 128, 128]      # 224 px: x 0..111, y 0..111
    b = [0, 0, 256, 128]      # x 0..223, y 0..111, overlaps a on a's whole area
    c = [100, 200, 256, 256]  # x 87..223, y 175..223, alone
    gt = M.gt_map_flickr([a, b, c])
    assert gt.dtype == np.float32
    np.testing.assert_array_equal(gt, literal_gt_flickr([a, b, c]))
    assert gt[10, 10] == 1.0    # two annotators agree -> 2 / 2
    assert gt[10, 150] == 0.5   # only b -> 1 / 2
    assert gt[200, 87] == 0.5 and gt[200, 86] == 0.0  # only c, edge at int(87.5) = 87
    assert gt[150, 10] == 0.0
    three = M.gt_map_flickr([a, a, a])  # 3 / 2 is clipped to 1
    assert three.max() == 1.0 and three[0, 0] == 1.0


def test_gt_is3_one_box_in_224_pixels():
    box = [47.0, 99.0, 154.0, 185.0]
    gt = M.gt_map_is3(box)
    np.testing.assert_array_equal(gt, literal_gt_is3(box))
    assert gt.sum() == (154 - 47) * (185 - 99)


# ----------------------------------------------------------------------------------------------
# Per-sample cIoU
# ----------------------------------------------------------------------------------------------
def _ramp() -> np.ndarray:
    """Pixel value = its row-major index (unique values, no ties)."""
    return (np.arange(N_PIX, dtype=np.float32) / np.float32(N_PIX - 1)).reshape(S, S)


def test_ciou_by_hand_on_a_ramp():
    pred = _ramp()[None]
    gt = np.zeros((1, S, S), np.uint8)
    gt[0, 200:] = 1  # 24 rows = 5376 pixels, indices 44800..50175
    fixed, adaptive = M.ciou_fixed_and_adaptive(pred, gt)
    # fixed: thr = value of index 25088; infer = indices 25089..50175 (25087 px) contains the gt.
    assert fixed[0] == 5376 / (5376 + (25087 - 5376))
    # adaptive: k = 5376, thr = value of index 50176 - 5376 = 44800; infer = 44801.. (5375 px).
    assert adaptive[0] == 5375 / 5376


def test_ties_at_the_threshold_are_not_inferred():
    # Half the map 0, half 1: sorted[25088] is the first 1, and infer = pred > 1 is empty, so even
    # a gt equal to the bright half scores 0. That is the official rule (strict >).
    pred = np.zeros((1, S, S), np.float32)
    pred[0, :, 112:] = 1
    gt = (pred > 0).astype(np.uint8)
    fixed, adaptive = M.ciou_fixed_and_adaptive(pred, gt)
    assert fixed[0] == 0.0 and adaptive[0] == 0.0
    assert fixed[0] == literal_ciou(pred[0], gt[0], False)


def test_empty_gt_falls_back_to_half_the_map():
    pred = _ramp()[None]
    gt = np.zeros((1, S, S), np.uint8)
    assert M.adaptive_k(gt)[0] == N_PIX // 2
    fixed, adaptive = M.ciou_fixed_and_adaptive(pred, gt)
    # k = 25088 -> the same threshold as the fixed one; 0 / (0 + 25087)
    assert fixed[0] == 0.0 and adaptive[0] == 0.0
    assert M.adaptive_thresholds(pred, gt)[0] == M.fixed_thresholds(pred)[0]
    # A constant map with an empty gt is 0 / 0: nan, as in the official code.
    fixed, adaptive = M.ciou_fixed_and_adaptive(np.full((1, S, S), 0.5, np.float32), gt)
    assert math.isnan(fixed[0]) and math.isnan(adaptive[0])


def _random_cases(seed: int):
    """Predictions with and without ties, against every kind of ground truth."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((4, 14, 14)).astype(np.float32)
    preds = M.heatmaps_to_predictions(h, "bilinear_align_corners")
    preds[1] = np.round(preds[1] * 8) / 8  # heavy ties
    gts = np.stack([
        M.gt_map_vggss([[0.1, 0.1, 0.6, 0.5], [0.5, 0.4, 0.9, 0.9]]),
        M.gt_map_is3([30.0, 40.0, 120.0, 200.0]),
        np.zeros((S, S), np.uint8),
        M.gt_map_is3([0.0, 0.0, 224.0, 224.0]),  # k = all pixels -> sorted[0]
    ])
    flickr = M.gt_map_flickr([[10, 10, 200, 180], [30, 20, 220, 200], [0, 100, 90, 250]])
    return preds, gts, flickr


def test_ciou_equals_the_literal_definition():
    preds, gts, flickr = _random_cases(4)
    fixed, adaptive = M.ciou_fixed_and_adaptive(preds, gts)
    for i in range(len(preds)):
        assert fixed[i] == literal_ciou(preds[i], gts[i], False)
        assert adaptive[i] == literal_ciou(preds[i], gts[i], True)
    # fractional (Flickr) ground truth
    fixed, adaptive = M.ciou_fixed_and_adaptive(preds[:2], np.stack([flickr, flickr]))
    for i in range(2):
        assert fixed[i] == literal_ciou(preds[i], flickr, False)
        assert adaptive[i] == literal_ciou(preds[i], flickr, True)


def test_threshold_helpers_pick_the_sorted_element():
    preds, gts, _ = _random_cases(5)
    ordered = np.sort(preds.reshape(len(preds), -1), axis=1)
    np.testing.assert_array_equal(M.fixed_thresholds(preds), ordered[:, int(N_PIX * 0.5)])
    k = M.adaptive_k(gts)
    np.testing.assert_array_equal(M.adaptive_thresholds(preds, gts), ordered[np.arange(len(preds)), N_PIX - k])
    np.testing.assert_array_equal(
        M.ciou_at_thresholds(preds, gts, M.fixed_thresholds(preds)), M.ciou_fixed_and_adaptive(preds, gts)[0])


def test_shape_mismatch_is_refused():
    with pytest.raises(SslrtError, match="differ in shape"):
        M.ciou_fixed_and_adaptive(np.zeros((2, S, S), np.float32), np.zeros((1, S, S), np.uint8))


# ----------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------
def test_ciou_and_auc_percent_equal_the_literal_definitions():
    cious = np.random.default_rng(6).random(37)
    cious[:3] = [0.5, 0.15, 0.05 * 3]  # values on the curve's own thresholds
    assert M.ciou_percent(cious) == literal_success(cious, 0.5) * 100
    assert M.auc_percent(cious) == literal_auc(cious) * 100
    assert M.success_curve(cious).tolist() == [literal_success(cious, 0.05 * i) for i in range(21)]


def test_summary_by_hand():
    # 4 samples: 3 reach 0.5 -> cIoU 75 %. All reach 0 and none reach 1.0 except the 1.0 one.
    fixed = np.array([0.6, 0.4, 0.7, 1.0])
    adaptive = np.array([0.2, 0.2, 0.2, 0.2])  # none >= 0.5; the curve is 1 up to t = 0.2
    names = ["accordion_baby_10467_accordion", "accordion_baby_10467_baby", "cat_dog_5_cat", "cat_dog_5_dog"]
    groups = [M.is3_image_group(n) for n in names]
    assert groups == ["accordion_baby_10467", "accordion_baby_10467", "cat_dog_5", "cat_dog_5"]
    s = M.summarize_localization_percent(fixed, adaptive, groups)
    assert s["cIoU"] == 75.0 and s["cIoU_adap"] == 0.0
    # the baby sample (0.4) fails its image at 0.5, so only cat_dog_5 succeeds: iIoU 50 %
    assert s["iIoU"] == 50.0 and s["iIoU_adap"] == 0.0
    # adaptive curve: 1 for t = 0..0.2 (5 points), 0 after -> trapezoids 4 * 0.05 + 0.05 / 2
    assert s["AUC_adap"] == pytest.approx((4 * 0.05 + 0.025) * 100, abs=1e-12)
    assert s["iAUC"] == literal_auc_images(fixed, names) * 100
    assert set(s) == {"cIoU", "AUC", "cIoU_adap", "AUC_adap", "iIoU", "iAUC", "iIoU_adap", "iAUC_adap"}
    assert set(M.summarize_localization_percent(fixed, adaptive)) == {"cIoU", "AUC", "cIoU_adap", "AUC_adap"}


def literal_auc_images(cious, names) -> float:
    x = [0.05 * i for i in range(21)]
    return float(np.trapezoid([literal_image_success(cious, names, t) for t in x], x))


def test_iiou_and_iauc_equal_the_literal_definitions():
    rng = np.random.default_rng(7)
    names = [f"obj{i // 2}_x_{i // 2}_{'ab'[i % 2]}" for i in range(40)]
    cious = rng.random(40)
    groups = [M.is3_image_group(n) for n in names]
    assert M.iiou_percent(cious, groups) == literal_image_success(cious, names, 0.5) * 100
    assert M.iauc_percent(cious, groups) == literal_auc_images(cious, names) * 100


def test_nan_ciou_is_a_failure():
    cious = np.array([np.nan, 0.9])
    assert M.ciou_percent(cious) == 50.0
    assert M.iiou_percent(cious, ["a_b_1", "a_b_1"]) == 0.0


def test_is3_image_group_of_paths_and_stems():
    assert M.is3_image_group("accordion_baby_10467_accordion") == "accordion_baby_10467"
    assert M.is3_image_group("/mnt/x/visual_frames/parrot_ukulele_1635_ukulele.jpg") == "parrot_ukulele_1635"


# ----------------------------------------------------------------------------------------------
# Pair similarity and retrieval
# ----------------------------------------------------------------------------------------------
def test_av_similarity_equals_the_literal_formula():
    a = np.random.default_rng(8).uniform(-1, 1, (3, 1, 14, 14))
    got = M.av_similarity(a)
    for i in range(3):
        values = a[i].ravel().tolist()
        p = [1 / (1 + math.exp(-(v - 0.65) / 0.03)) for v in values]
        expected = sum(pi * v for pi, v in zip(p, values)) / sum(p)
        assert got[i] == pytest.approx(expected, rel=1e-12)
    # a map above epsilon everywhere by the same amount scores that value
    assert M.av_similarity(np.full((1, 14, 14), 0.8))[0] == pytest.approx(0.8, rel=1e-12)


def literal_recall(sim, k, by_rows) -> float:
    n = len(sim)
    hits = 0
    for q in range(n):
        scores = [sim[q][j] if by_rows else sim[j][q] for j in range(n)]
        true = scores[q]
        rank = sum(1 for j in range(n) if j != q and scores[j] >= true)
        hits += 1 if (not math.isnan(true) and rank < k) else 0
    return hits / n * 100


def test_retrieval_recall_equals_the_literal_ranking():
    rng = np.random.default_rng(9)
    sim = rng.standard_normal((12, 12)) + 1.5 * np.eye(12)
    sim[3, :] = 0.0  # a row of ties: ties count against the true pair
    got = M.retrieval_recall_percent(sim)
    for k in (1, 5, 10):
        assert got[f"audio_to_image_R@{k}"] == literal_recall(sim.tolist(), k, True)
        assert got[f"image_to_audio_R@{k}"] == literal_recall(sim.tolist(), k, False)
    # by hand: a perfect diagonal retrieves everything at rank 0; a constant matrix nothing
    perfect = M.retrieval_recall_percent(np.eye(5), ks=(1,))
    assert perfect == {"audio_to_image_R@1": 100.0, "image_to_audio_R@1": 100.0}
    assert M.retrieval_recall_percent(np.ones((5, 5)), ks=(4,))["audio_to_image_R@4"] == 0.0
