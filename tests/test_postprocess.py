"""Heatmap -> peak, box, score: pure numpy, checked against torch's upsampling and by construction."""
import numpy as np
import torch
import torch.nn.functional as F

from sslrt.runtime.postprocess import av_similarity, localize_heatmaps, median_threshold_mask, minmax, upsample_align_corners


def test_upsample_matches_torch_bilinear_align_corners():
    h = np.random.default_rng(0).standard_normal((3, 14, 14)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(h)[:, None], size=(224, 224), mode="bilinear", align_corners=True)[:, 0].numpy()
    assert np.abs(upsample_align_corners(h) - ref).max() <= 1e-5  # torch computes in float32


def test_peak_and_box_land_on_the_hot_cell_in_original_pixels():
    h = np.zeros((1, 1, 14, 14), dtype=np.float32)
    h[0, 0, 3, 10] = 1.0  # row 3, column 10
    loc = localize_heatmaps(h, [(480, 640)])[0]
    x, y = loc["peak"]
    assert abs(x - 640 * 10 / 13) < 640 / 224 + 1e-6 and abs(y - 480 * 3 / 13) < 480 / 224 + 1e-6  # align_corners grid
    x0, y0, x1, y1 = loc["bbox"]
    assert x0 < x < x1 and y0 < y < y1 and (x1 - x0) < 640 and (y1 - y0) < 480


def test_constant_heatmap_is_left_as_is_and_boxes_the_whole_image():
    h = np.full((1, 1, 14, 14), 0.3, dtype=np.float32)
    assert np.all(minmax(h) == h)
    assert localize_heatmaps(h, [(100, 200)])[0]["bbox"] == [0, 0, 200.0, 100.0]


def test_median_threshold_is_the_official_rule():
    pred = np.random.default_rng(1).random((2, 224, 224)).astype(np.float32)
    for i in range(2):
        thr = np.sort(pred[i].ravel())[int(224 * 224 * 0.5)]
        assert np.array_equal(median_threshold_mask(pred)[i], pred[i] > thr)


def test_score_is_the_training_similarity():
    a = np.random.default_rng(2).uniform(-1, 1, (2, 1, 14, 14))
    p = 1 / (1 + np.exp(-(a - 0.65) / 0.03))
    expected = (p * a).sum(axis=(1, 2, 3)) / p.sum(axis=(1, 2, 3))
    assert np.allclose(av_similarity(a), expected)
