"""The ONNX Runtime adapter on the CPU: batches of two or more run as two halves at once."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from sslrt.engines.onnxruntime import OnnxRuntimeEngine


def _feeds(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((n, 3, 224, 224)).astype(np.float32),
            "audio": rng.uniform(-1.5, 0, (n, 1, 257, 299)).astype(np.float32)}


def _helper_threads() -> int:
    return sum(t.name.startswith("sslrt-ort-half") for t in threading.enumerate())


@pytest.mark.parametrize("n", [2, 3, 8])
def test_split_batches_equal_one_run_in_order(tiny_export, n):
    path = tiny_export.artifact_path("onnx_fp32")
    feeds = _feeds(n)
    with OnnxRuntimeEngine(path, threads=2, split_from=None) as whole, OnnxRuntimeEngine(path, threads=2) as split:
        want, got = whole.run(feeds), split.run(feeds)
        assert split._halves is not None and whole._halves is None
    assert want.keys() == got.keys()
    for name in want:
        assert got[name].shape == want[name].shape
        # the same kernels on one sample whatever the threads: measured bit-identical (full width too)
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6)
    # each sample in its place: a batch in reverse gives the outputs in reverse
    with OnnxRuntimeEngine(path, threads=2) as split:
        back = split.run({k: v[::-1] for k, v in feeds.items()})
    for name in want:
        np.testing.assert_allclose(back[name][::-1], want[name], rtol=0, atol=1e-6)


def test_what_is_not_split(tiny_export):
    path = tiny_export.artifact_path("onnx_fp32")
    with OnnxRuntimeEngine(path, threads=2) as engine:
        engine.run(_feeds(1))  # a batch of one: every thread on the one sample
        assert engine._halves is None
    with OnnxRuntimeEngine(path, threads=1) as engine:
        engine.run(_feeds(4))  # one thread: nothing to split across
        assert engine._halves is None


def test_close_stops_the_helper_thread(tiny_export):
    before = _helper_threads()
    engine = OnnxRuntimeEngine(tiny_export.artifact_path("onnx_fp32"), threads=2)
    engine.run(_feeds(2))
    assert _helper_threads() == before + 1
    engine.close()
    assert _helper_threads() == before


def test_a_failing_half_raises_after_both_ended(tiny_export):
    """A bad input fails the call; the helper is not left running on the caller's arrays."""
    with OnnxRuntimeEngine(tiny_export.artifact_path("onnx_fp32"), threads=2) as engine:
        feeds = _feeds(2)
        feeds["audio"] = feeds["audio"][:, :, :100]  # the wrong spectrogram shape
        with pytest.raises(Exception):
            engine.run(feeds)
        good = engine.run(_feeds(2))  # the engine still works
        assert all(np.isfinite(v).all() for v in good.values())


def test_lanes_run_whole_batches_at_once(tiny_export):
    """Two batches at once, one per lane (the pipeline's threads), each equal to one run of it."""
    from concurrent.futures import ThreadPoolExecutor

    path = tiny_export.artifact_path("onnx_fp32")
    feeds = _feeds(9)
    parts = [{k: v[:5] for k, v in feeds.items()}, {k: v[5:] for k, v in feeds.items()}]
    with OnnxRuntimeEngine(path, threads=2, split_from=None) as whole, OnnxRuntimeEngine(path, threads=2) as laned:
        assert laned.lanes == 2 and whole.lanes == 1
        want = whole.run(feeds)
        with ThreadPoolExecutor(max_workers=2) as pool:
            got = [f.result() for f in [pool.submit(laned.run_lane, part, lane) for lane, part in enumerate(parts)]]
        for name in want:
            np.testing.assert_allclose(np.concatenate([got[0][name], got[1][name]]), want[name], rtol=0, atol=1e-6)
        np.testing.assert_allclose(whole.run_lane(parts[1], 0)[next(iter(want))], got[1][next(iter(want))], rtol=0, atol=1e-6)
    with OnnxRuntimeEngine(path, threads=1) as one:
        assert one.lanes == 1  # one thread: nothing to share out
        np.testing.assert_allclose(one.run_lane(parts[0], 0)[next(iter(want))], got[0][next(iter(want))], rtol=0, atol=1e-6)
        assert one._halves is None
