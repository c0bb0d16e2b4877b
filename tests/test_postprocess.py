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


# -- the fast selections against their plain definitions --------------------------------------
def _sorted_kth(values: np.ndarray, kth: int):
    return np.sort(values, kind="stable")[kth]


def test_fixed_thresholds_are_the_sorted_element_of_float32_maps():
    from sslrt.runtime.localization import fixed_thresholds

    rng = np.random.default_rng(7)
    maps = [rng.random((224, 224), dtype=np.float32),  # prediction maps: [0, 1]
            rng.standard_normal((224, 224)).astype(np.float32),  # negatives too
            np.round(rng.random((224, 224)) * 5).astype(np.float32) / 5,  # few values: long ties
            np.full((224, 224), -0.25, np.float32),  # constant (normalisation leaves it as is)
            np.concatenate([np.zeros(60), -np.zeros(60), rng.random(8) * 1e-38]).astype(np.float32).reshape(8, 16),
            rng.random((3, 5), dtype=np.float32)]
    for m in maps:
        flat = m.reshape(-1)
        got = fixed_thresholds(m[None])[0]
        assert got.dtype == np.float32 and got == _sorted_kth(flat, int(flat.size * 0.5))
    batch = rng.random((4, 30, 40), dtype=np.float32)
    want = np.partition(batch.reshape(4, -1), 600, axis=1)[:, 600]
    np.testing.assert_array_equal(fixed_thresholds(batch), want)
    with_nan = batch.copy()
    with_nan[1, 0, :5] = -np.nan  # not a prediction map the pipeline makes: np.partition's order
    np.testing.assert_array_equal(fixed_thresholds(with_nan), np.partition(with_nan.reshape(4, -1), 600, axis=1)[:, 600])
    doubles = batch.astype(np.float64)  # other dtypes: np.partition as before
    np.testing.assert_array_equal(fixed_thresholds(doubles), want.astype(np.float64))


def test_region_box_is_the_bounding_box_of_the_peaks_8_connected_component():
    import cv2

    from sslrt.runtime.localization import region_box

    def reference(mask, py, px):
        _, labels, stats, _ = cv2.connectedComponentsWithStats((mask != 0).astype(np.uint8), connectivity=8)
        label = labels[py, px]
        if label == 0:
            return 0, 0, mask.shape[1], mask.shape[0]
        x, y, w, h = (int(v) for v in stats[label, :4])
        return x, y, x + w, y + h

    rng = np.random.default_rng(3)
    for density in (0.2, 0.45, 0.6):
        for _ in range(20):
            mask = rng.random((56, 48)) < density
            py, px = int(rng.integers(56)), int(rng.integers(48))
            before = mask.copy()
            assert region_box(mask, (py, px)) == reference(mask, py, px)
            assert np.array_equal(mask, before)  # the caller's mask is not written into
            # a transposed (Fortran-ordered) view and a 0/255 uint8 mask: the same component
            assert region_box(mask.T, (px, py)) == reference(mask.T, px, py)
            assert region_box(mask.astype(np.uint8) * 255, (py, px)) == reference(mask, py, px)
