"""Cross-backend parity through Polygraphy's Comparator, with sslrt's heatmap metrics on top.

`EngineRunner` wraps any sslrt Engine (ONNX Runtime, TensorRT, torch) as a Polygraphy runner, so
`polygraphy.comparator.Comparator.run` runs every engine on the same feeds and
`Comparator.compare_accuracy` checks each output element-wise (atol/rtol) against the reference;
`compare_with_polygraphy` then adds sslrt's own agreement statistics of the heatmaps
(`sslrt.measure.parity.heatmap_agreement`: cosine, argmax and localization agreement), which Polygraphy's
element-wise check does not express. Works on the CPU (onnxruntime, torch) as on the GPU.
Polygraphy is optional: pip install polygraphy (it comes with the tensorrt-cu12/-cu13 extras).
"""
from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np

from sslrt.graphs import OUTPUT_HEATMAP
from sslrt.errors import BackendUnavailable
from sslrt.measure.parity import heatmap_agreement


def _polygraphy():
    try:
        from polygraphy.backend.base import BaseRunner
        from polygraphy.common import TensorMetadata
        from polygraphy.comparator import CompareFunc, Comparator
    except ImportError:
        raise BackendUnavailable("Polygraphy parity needs polygraphy: pip install polygraphy") from None
    return BaseRunner, TensorMetadata, Comparator, CompareFunc


def engine_runner(engine, name: str | None = None):
    """A Polygraphy runner (BaseRunner) that runs an sslrt Engine; the caller keeps owning the engine."""
    BaseRunner, TensorMetadata, _, _ = _polygraphy()

    class EngineRunner(BaseRunner):
        def __init__(self) -> None:
            super().__init__(name=name or f"sslrt-{engine.backend}-{engine.precision}")
            self.engine = engine

        def activate_impl(self) -> None:
            self.engine.load()

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for spec in self.engine.inputs:
                meta.add(spec.name, np.float32, list(spec.shape))  # every engine is fed float32
            return meta

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            out = self.engine.run(dict(feed_dict))
            self.inference_time = time.perf_counter() - start
            return OrderedDict((k, np.asarray(v)) for k, v in out.items())

        def deactivate_impl(self) -> None:
            pass

    return EngineRunner()


def _simple_compare(CompareFunc, atol: float, rtol: float):
    try:  # Polygraphy >= 0.53 (CompareFunc.simple is deprecated there)
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:
        return CompareFunc.simple(atol=atol, rtol=rtol)
    return SimpleCompareFunc(atol=atol, rtol=rtol)


def feed_batches(feeds: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Polygraphy's data loader: any iterable of feed dicts, here the batches of `feeds`."""
    total = len(next(iter(feeds.values())))
    return [OrderedDict((k, np.ascontiguousarray(v[i:i + batch_size], dtype=np.float32)) for k, v in feeds.items())
            for i in range(0, total, batch_size)]


def compare_with_polygraphy(reference, candidates: list, feeds: dict[str, np.ndarray], batch_size: int = 4,
                            atol: float = 1e-4, rtol: float = 1e-3, output: str = OUTPUT_HEATMAP) -> dict:
    """Run `reference` and each candidate engine through Polygraphy's Comparator on the same
    batches; returns, per candidate runner name: Polygraphy's verdict (`polygraphy_passed`, its
    max abs/rel difference over the outputs) and sslrt's heatmap agreement on `output`."""
    import contextlib
    import sys

    from polygraphy.logger import G_LOGGER

    _, _, Comparator, CompareFunc = _polygraphy()
    runners = [engine_runner(reference, "reference")] + [engine_runner(c) for c in candidates]
    # Polygraphy logs on stdout (which belongs to the user's JSON) and reports a mismatch as an
    # error line; the verdict is returned instead.
    with contextlib.redirect_stdout(sys.stderr), G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        results = Comparator.run(runners, data_loader=feed_batches(feeds, batch_size))
        comparisons = [(0, k) for k in range(1, len(runners))]
        accuracy = Comparator.compare_accuracy(results, comparisons=comparisons,
                                               compare_func=_simple_compare(CompareFunc, atol, rtol))
    try:  # Polygraphy >= 0.53: one AccuracyResult per compare function, in an AccuracyResults list
        from polygraphy.comparator.struct import AccuracyResults

        if isinstance(accuracy, AccuracyResults):
            accuracy = accuracy[0]
    except ImportError:
        pass
    outputs = {name: iterations for name, iterations in results.items()}
    report = {}
    for index, runner in enumerate(runners[1:], start=1):
        per_iteration = accuracy[(runners[0].name, runner.name)]
        max_abs = max(r.max_absdiff for it in per_iteration for r in it.values())
        max_rel = max(r.max_reldiff for it in per_iteration for r in it.values())
        entry = {"polygraphy_passed": all(bool(r) for it in per_iteration for r in it.values()), "polygraphy_max_absdiff": float(max_abs),
                 "polygraphy_max_reldiff": float(max_rel), "atol": atol, "rtol": rtol}
        ref = np.concatenate([np.asarray(it[output]) for it in outputs[runners[0].name]])
        cand = np.concatenate([np.asarray(it[output]) for it in outputs[runner.name]])
        if output == OUTPUT_HEATMAP:
            entry |= heatmap_agreement(ref, cand)
        report[runner.name] = entry
    return report
