"""The OpenVINO backend: parity with ONNX Runtime on the exported graphs, INT8 localization agreement,
the split of larger batches across streams, and the CLI. Skipped where openvino is not installed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'sslrt[openvino]')")

from sslrt.engines import create_engine  # noqa: E402
from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_AUDIO_EMBEDDING, OUTPUT_HEATMAP, OUTPUT_IMAGE_EMBEDDING, \
    input_shapes  # noqa: E402
from sslrt.resolve import resolve_model  # noqa: E402


def _feeds(spec, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    shapes = input_shapes(spec)
    return {INPUT_IMAGE: rng.standard_normal((n, *shapes[INPUT_IMAGE]), dtype=np.float32),
            INPUT_AUDIO: rng.uniform(-1.3, -0.2, (n, *shapes[INPUT_AUDIO])).astype(np.float32)}


@pytest.fixture(scope="module")
def tiny_all(tmp_path_factory, tiny_checkpoint):
    """The tiny model with fp32, fp16 and INT8 graphs."""
    from sslrt.export import export_checkpoint

    return export_checkpoint(str(tiny_checkpoint), str(tmp_path_factory.mktemp("ov") / "tiny"),
                             targets=["onnx_fp16", "onnx_int8"])


def _fp32_parity(exported, batches=(1, 3, 8, 11), winograd_convolutions=0):
    model = resolve_model(exported.directory)
    feeds = _feeds(model.spec, max(batches))
    ort = create_engine("onnxruntime", model, "fp32")
    ov = create_engine("openvino", model, "fp32")
    assert ov.backend == "openvino" and ov.precision == "fp32" and ov.device == "cpu"
    assert [s.name for s in ov.inputs] == [INPUT_IMAGE, INPUT_AUDIO] and ov.inputs[0].shape[0] is None
    for n in batches:  # 1: the latency model; 3, 8: split across the throughput streams; 11: in two rounds
        part = {k: v[:n] for k, v in feeds.items()}
        ref, got = ort.run(part)[OUTPUT_HEATMAP], ov.run(part)[OUTPUT_HEATMAP]
        assert got.shape == ref.shape == (n, 1, *ref.shape[2:]) and got.dtype == np.float32
        assert np.abs(got - ref).max() < 1e-4, n
    # split batches ran the Winograd model (none where one core leaves nothing to split across);
    # the tiny model's convolutions are too narrow for it
    assert ov.winograd_rewritten == (winograd_convolutions if ov._split_from is not None else 0)
    for graph, name, output in (("vision", INPUT_IMAGE, OUTPUT_IMAGE_EMBEDDING), ("audio", INPUT_AUDIO, OUTPUT_AUDIO_EMBEDDING)):
        e_ort, e_ov = create_engine("onnxruntime", model, "fp32", graph=graph), create_engine("openvino", model, "fp32", graph=graph)
        for n in (1, 5):
            x = {name: feeds[name][:n]}
            assert np.abs(e_ov.run(x)[output] - e_ort.run(x)[output]).max() < 1e-4, (graph, n)
    ov.close()


def test_fp32_matches_onnxruntime_tiny(tiny_export):
    _fp32_parity(tiny_export)


@pytest.mark.slow
def test_fp32_matches_onnxruntime_golden(golden_export):
    _fp32_parity(golden_export, batches=(1, 4), winograd_convolutions=14)  # layer3 and layer4, both towers


def _conv_model(layers, channels, height, width):
    """An ov.Model of 3x3 convolutions (name, c_in, c_out, stride, pad, kernel) + ReLU, random weights."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(5)
    x = ops.parameter([-1, channels, height, width], np.float32, name="x")
    y = x
    for i, (c_in, c_out, stride, pad, kernel) in enumerate(layers):
        w = (rng.standard_normal((c_out, c_in, kernel, kernel)) / np.sqrt(c_in * kernel * kernel)).astype(np.float32)
        y = ops.add(ops.convolution(y, ops.constant(w), [stride] * 2, [pad] * 2, [pad] * 2, [1, 1]),
                    ops.constant(rng.standard_normal((1, c_out, 1, 1)).astype(np.float32)))
        if i < len(layers) - 1:  # the last layer's output is compared before any activation
            y = ops.relu(y)
    return ov.Model([y], [x])


@pytest.mark.parametrize("height,width", [(7, 9), (6, 6), (1, 2)])
def test_winograd_rewrite_equals_the_direct_convolutions(height, width):
    """Odd and even maps (a partial last tile is cut off), the batch folded into the tiles; only
    3x3 stride-1 padding-1 convolutions with enough channels are rewritten."""
    from sslrt.engines.openvino import LATENCY, compile_properties, core
    from sslrt.engines.openvino_winograd import apply_winograd

    layers = [(16, 24, 1, 1, 3),  # rewritten
              (24, 24, 2, 1, 3),  # stride 2: kept
              (24, 8, 1, 1, 3),  # 8 output channels < 16: kept
              (8, 16, 1, 0, 1),  # 1x1: kept
              (16, 16, 1, 1, 3)]  # rewritten
    direct, rewritten = _conv_model(layers, 16, height, width), _conv_model(layers, 16, height, width)
    assert apply_winograd(rewritten, min_channels=16) == 2
    assert sum(op.get_type_name() == "Convolution" for op in rewritten.get_ordered_ops()) == 3
    x = np.random.default_rng(1).standard_normal((3, 16, height, width), dtype=np.float32)
    out = [core().compile_model(m, "CPU", compile_properties(LATENCY)).create_infer_request().infer({"x": x})[0]
           for m in (direct, rewritten)]
    assert out[0].shape == out[1].shape
    assert np.abs(out[0] - out[1]).max() <= 1e-5 * max(1.0, np.abs(out[0]).max())
    assert np.abs(out[0]).max() > 0.1  # not a vacuous comparison of zeros


@pytest.mark.slow
def test_winograd_is_for_fp32_and_can_be_turned_off(golden_export, monkeypatch):
    from sslrt.engines.openvino import OpenVinoEngine

    path = golden_export.directory + "/" + golden_export.artifacts["onnx_fp32"]["file"]
    feeds = _feeds(resolve_model(golden_export.directory).spec, 2)
    # two streams whatever the core count, so that the batch of 2 is split
    on, off = OpenVinoEngine(path, streams=2, threads=2), OpenVinoEngine(path, winograd=False, streams=2, threads=2)
    on.run({k: v[:1] for k, v in feeds.items()})
    assert on.winograd_rewritten == 0  # a batch of one runs the direct graph
    np.testing.assert_allclose(on.run(feeds)[OUTPUT_HEATMAP], off.run(feeds)[OUTPUT_HEATMAP], atol=1e-5)
    assert on.winograd_rewritten == 14 and off.winograd_rewritten == 0
    assert "14 convolutions as Winograd" in on.describe() and "Winograd" not in off.describe()
    assert not OpenVinoEngine(path, precision="int8").winograd
    model = resolve_model(golden_export.directory)
    assert create_engine("openvino", model, "fp32").winograd
    for value in ("0", "off"):
        monkeypatch.setenv("SSLRT_OPENVINO_WINOGRAD", value)
        assert not create_engine("openvino", model, "fp32").winograd


class _FakeRequest:
    """Records the slice it is given and answers it back (an infer request's interface)."""

    def __init__(self, log):
        self.log, self.busy, self.out = log, False, None

    def start_async(self, feeds, share_inputs=True):
        assert not self.busy
        self.busy, self.out = True, feeds["x"]
        self.log.append(len(feeds["x"]))

    def wait(self):
        self.busy = False

    def get_tensor(self, name):
        return type("Tensor", (), {"data": self.out})()


@pytest.mark.parametrize("streams,batch", [(2, 2), (2, 8), (2, 9), (2, 11), (2, 64), (3, 7), (4, 3)])
def test_split_rounds_keep_order_and_cap_the_slices(streams, batch):
    from sslrt.engines.openvino import PAIRS_PER_REQUEST, OpenVinoEngine

    engine = OpenVinoEngine("unused.onnx")
    engine._outputs = ["x"]
    log = []
    x = np.arange(batch, dtype=np.float32)[:, None]
    got = engine._run_split([_FakeRequest(log) for _ in range(streams)], {"x": x}, batch)["x"]
    np.testing.assert_array_equal(got, x)
    used = min(streams, batch)
    assert sum(log) == batch and max(log) <= PAIRS_PER_REQUEST and min(log) >= 1
    assert len(log) == used * -(-batch // (used * PAIRS_PER_REQUEST))  # every round uses every stream


@pytest.mark.parametrize("batch", [1, 4, 5, 9, 64])
def test_a_lane_runs_its_batch_in_capped_rounds_on_its_own_request(batch):
    import threading

    from sslrt.engines.openvino import PAIRS_PER_REQUEST, THROUGHPUT, OpenVinoEngine

    engine = OpenVinoEngine("unused.onnx", streams=2, threads=2)
    assert engine.lanes == 2
    logs = [[], []]
    engine._model, engine._outputs, engine._compiled[THROUGHPUT] = object(), ["x"], object()  # as if loaded
    engine._requests[THROUGHPUT] = [_FakeRequest(log) for log in logs]
    engine._lane_locks = [threading.Lock(), threading.Lock()]
    x = np.arange(batch, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(engine.run_lane({"x": x}, 1)["x"], x)
    assert logs[0] == [] and sum(logs[1]) == batch  # the lane's own request, the whole batch
    assert max(logs[1]) <= PAIRS_PER_REQUEST and len(logs[1]) == -(-batch // PAIRS_PER_REQUEST)


def test_lanes_run_whole_batches_at_once(tiny_export):
    from concurrent.futures import ThreadPoolExecutor

    from sslrt.engines.openvino import THROUGHPUT, OpenVinoEngine, compile_properties

    # the streams' threads are not pinned: lanes running two models at once would share cores
    assert compile_properties(THROUGHPUT)["ENABLE_CPU_PINNING"] is False
    path = tiny_export.directory + "/" + tiny_export.artifacts["onnx_fp32"]["file"]
    feeds = _feeds(resolve_model(tiny_export.directory).spec, 13)
    engine = OpenVinoEngine(path, streams=2, threads=2)
    want = engine.run(feeds)[OUTPUT_HEATMAP]  # split across the streams
    with ThreadPoolExecutor(max_workers=2) as pool:  # 6 pairs: two rounds; 7: two
        parts = [pool.submit(engine.run_lane, {k: v[lo:hi] for k, v in feeds.items()}, lane)
                 for lane, (lo, hi) in enumerate(((0, 6), (6, 13)))]
        got = np.concatenate([f.result()[OUTPUT_HEATMAP] for f in parts])
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
    engine.close()
    one = OpenVinoEngine(path, threads=1)
    assert one.lanes == 1  # one thread: no streams
    np.testing.assert_array_equal(one.run_lane(feeds, 0)[OUTPUT_HEATMAP], one.run(feeds)[OUTPUT_HEATMAP])
    assert one.compiled_hints == ("LATENCY",)


def test_threads_and_the_latency_only_mode(tiny_export):
    from sslrt.engines.openvino import LATENCY, THROUGHPUT, OpenVinoEngine, compile_properties

    assert compile_properties(LATENCY, threads=1) == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                                                      "INFERENCE_NUM_THREADS": 1}
    assert compile_properties(THROUGHPUT, threads=1)["NUM_STREAMS"] == 1
    model = resolve_model(tiny_export.directory)
    feeds = _feeds(model.spec, 4)
    one = create_engine("openvino", model, "fp32", threads=1)
    assert one._compiled[LATENCY].get_property("INFERENCE_NUM_THREADS") == 1
    one.run(feeds)
    assert one.compiled_hints == (LATENCY,)  # one thread: no streams to split a batch across
    path = tiny_export.directory + "/" + tiny_export.artifacts["onnx_fp32"]["file"]
    latency_only = OpenVinoEngine(path, split_from=None)
    np.testing.assert_allclose(latency_only.run(feeds)[OUTPUT_HEATMAP], one.run(feeds)[OUTPUT_HEATMAP], atol=1e-5)
    assert latency_only.compiled_hints == (LATENCY,)


def test_fp16_graph_and_int8_on_the_tiny_model(tiny_all):
    from sslrt.measure.parity import heatmap_agreement

    model = resolve_model(tiny_all.directory)
    feeds = _feeds(model.spec, 6, seed=3)
    ref = create_engine("onnxruntime", model, "fp32").run(feeds)[OUTPUT_HEATMAP]
    fp16 = create_engine("openvino", model, "fp16").run(feeds)[OUTPUT_HEATMAP]
    assert np.abs(fp16 - ref).max() < 1e-2
    int8 = create_engine("openvino", model, "int8")
    got = int8.run(feeds)[OUTPUT_HEATMAP]
    assert int8.precision == "int8" and heatmap_agreement(ref, got)["min_cosine"] > 0.9


def test_int8_localizes_like_fp32_on_the_demo_model():
    """The trained demo model, 32 scene pairs: INT8 on OpenVINO agrees with fp32 (cIoU >= 0.5)."""
    from sslrt.measure.parity import heatmap_agreement
    from sslrt.runtime.pipeline import Localizer
    from sslrt.synthetic.scenes import generate_samples

    pairs = [(s.image, (s.waveform, s.sample_rate)) for s in generate_samples(16, 11)]
    heat = {}
    for precision in ("fp32", "int8"):
        with Localizer.open(None, backend="openvino", precision=precision) as loc:
            assert loc.split and loc.engine.backend == "openvino"
            heat[precision] = np.stack([r.heatmap for r in loc.localize_many(pairs, batch_size=8)])
    ort = np.stack([r.heatmap for r in Localizer.open(None, precision="fp32").localize_many(pairs, batch_size=8)])
    assert np.abs(heat["fp32"] - ort).max() < 1e-4
    assert heatmap_agreement(heat["fp32"], heat["int8"])["localization_agreement"] >= 0.95


def test_cli_run_and_auto(tiny_export, media, capsys):
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory,
                              "--backend", "openvino", "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["backend"] == "openvino" and got["precision"] == "fp32"
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory, "--json"], capsys)
    ref = json.loads(out)
    assert np.abs(np.array(got["heatmap"]) - np.array(ref["heatmap"])).max() < 1e-4
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory,
                              "--backend", "auto", "--json"], capsys)
    assert code == 0 and "chose openvino fp32" in err and json.loads(out)["backend"] == "openvino"


def test_a_failed_rewrite_falls_back_to_the_direct_graph(tiny_export, monkeypatch):
    import sslrt.engines.openvino_winograd as winograd
    from sslrt.engines.openvino import OpenVinoEngine

    def broken(model, min_channels=0):
        raise RuntimeError("opset mismatch")

    monkeypatch.setattr(winograd, "apply_winograd", broken)
    path = tiny_export.directory + "/" + tiny_export.artifacts["onnx_fp32"]["file"]
    engine, direct = OpenVinoEngine(path, streams=2, threads=2), OpenVinoEngine(path, winograd=False, streams=2, threads=2)
    feeds = _feeds(resolve_model(tiny_export.directory).spec, 4)
    with pytest.warns(UserWarning, match="Winograd rewrite failed"):
        got = engine.run(feeds)[OUTPUT_HEATMAP]
    assert engine.winograd_rewritten == 0
    np.testing.assert_allclose(got, direct.run(feeds)[OUTPUT_HEATMAP], atol=1e-6)
