"""Heatmap -> peak, box, score in original pixels (the metrics themselves: test_metrics.py)."""
import numpy as np

from sslrt.runtime.localization import localize_heatmaps


def test_peak_and_box_land_on_the_hot_cell_in_original_pixels():
    h = np.zeros((1, 1, 14, 14), dtype=np.float32)
    h[0, 0, 3, 10] = 1.0  # row 3, column 10
    loc = localize_heatmaps(h, [(480, 640)])[0]
    x, y = loc["peak"]
    assert (x, y) == (640 * 10.5 / 14, 480 * 3.5 / 14)  # the centre of cell (row 3, column 10)
    x0, y0, x1, y1 = loc["bbox"]
    assert x0 < x < x1 and y0 < y < y1 and (x1 - x0) < 640 and (y1 - y0) < 480


def test_two_blobs_box_only_the_one_with_the_peak():
    h = np.zeros((1, 1, 14, 14), dtype=np.float32)
    h[0, 0, 1:4, 1:4] = 1.0
    h[0, 0, 9:13, 9:13] = 0.8
    x0, y0, x1, y1 = localize_heatmaps(h, [(224, 224)])[0]["bbox"]
    assert x1 < 120 and y1 < 120  # the weaker blob at the bottom right is a separate region


def test_a_border_cell_peaks_at_its_centre_not_on_the_edge():
    h = np.zeros((1, 1, 14, 14), dtype=np.float32)
    h[0, 0, 13, 0] = 1.0
    assert localize_heatmaps(h, [(448, 448)])[0]["peak"] == [16.0, 432.0]


def test_constant_heatmap_boxes_the_whole_image():
    h = np.full((1, 1, 14, 14), 0.3, dtype=np.float32)
    assert localize_heatmaps(h, [(100, 200)])[0]["bbox"] == [0, 0, 200.0, 100.0]
