"""`sslrt bench` report structure and the INT8 export (speed itself is measured by benchmarks/, not asserted)."""
import json
import statistics

import numpy as np
import onnx

from conftest import run_cli


def test_int8_export_is_quantized_and_close_to_fp32(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "exp"
    code, stdout, err = run_cli(["export", tiny_checkpoint, "-o", out, "--int8", "--json"], capsys)
    assert code == 0, err
    manifest = json.loads(stdout)
    for key in ("onnx_int8", "onnx_int8_vision", "onnx_int8_audio"):
        graph = onnx.load(out / manifest["artifacts"][key]["file"])
        ops = {n.op_type for n in graph.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops, key
        # the stems stay fp32: their weights are not preceded by a DequantizeLinear
        stems = [n for n in graph.graph.node if n.op_type == "Conv" and n.input[0] in {i.name for i in graph.graph.input}]
        assert len(stems) == (2 if key == "onnx_int8" else 1)
    q = manifest["parity"]["onnx_int8_vs_onnx_fp32"]
    assert q["samples"] == 4 and q["min_cosine"] > 0.99  # the narrow random model: close, not exact

    import sslrt

    fp32 = sslrt.load(str(out)).localize(np.full((64, 64, 3), 128, np.uint8), np.sin(np.arange(32000) / 7.0))
    int8 = sslrt.load(str(out), precision="int8").localize(np.full((64, 64, 3), 128, np.uint8), np.sin(np.arange(32000) / 7.0))
    assert int8.precision == "int8" and np.corrcoef(fp32.heatmap.ravel(), int8.heatmap.ravel())[0, 1] > 0.9


def test_missing_precision_is_one_line(tiny_export, media, capsys):
    code, _, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory, "--precision", "int8"], capsys)
    assert code == 2 and "no int8 ONNX model" in err and err.count("\n") == 1


def test_bench_report(tmp_path, tiny_export, capsys):
    code, stdout, err = run_cli(["bench", "-m", tiny_export.directory, "--batch", "1,2", "--seconds", "0.05",
                                 "--e2e-pairs", "3", "--report", tmp_path / "rep", "--json", tmp_path / "b.json"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    rows = result["rows"]
    assert {(r["scope"], r["backend"], r["batch"]) for r in rows} == {
        (s, b, n) for s in ("engine", "e2e") for b in ("torch", "onnxruntime") for n in (1, 2)}
    for r in rows:
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["pairs_per_s"] > 0
        if r["backend"] == "torch":
            assert r["speedup"] == 1.0
    assert 0 < result["interactive"]["ratio"]
    # engine rows carry their process CPU per pair; the preparation's CPU per pair is measured once
    assert all(r["cpu_ms_per_pair"] > 0 for r in rows if r["scope"] == "engine")
    assert all(r["cpu_ms_per_pair"] is None for r in rows if r["scope"] == "e2e")
    assert result["prepare_cpu_ms_per_pair"] > 0 and result["cores"] >= 1
    # 2 batches x (engine table + e2e table + e2e/engine ratio table)
    report = (tmp_path / "rep" / "bench.md").read_text()
    assert report.count("| onnxruntime | fp32 |") == 6
    assert "| e2e / engine | e2e / inference | engine CPU ms/pair | CPU bound | host budget for 90% |" in report
    # e2e rows: one ratio per round of the end-to-end pass against the same pipeline's inference alone
    for r in rows:
        if r["scope"] == "e2e":
            ratios = r["e2e_over_inference"]
            assert len(ratios) == 3 and all(0 < x for x in ratios)
            assert f"{statistics.median(ratios):.0%} ({min(ratios):.0%}-{max(ratios):.0%})" in report
    # the pick-a-backend table names, per precision and batch, the backend with the most pairs/s
    from sslrt.measure.bench import fastest

    best = fastest(rows)
    for n in (1, 2):
        assert best[("fp32", n, "e2e")]["pairs_per_s"] == max(r["pairs_per_s"] for r in rows if r["scope"] == "e2e" and r["batch"] == n)
        engine = best[("fp32", n, "engine")]
        assert f"| fp32 | {n} | {engine['backend']} ({engine['speedup']:.2f}x) |" in report
    assert "speed-up" in stdout
    assert result["rounds"] == 3 and "measured in 3 interleaved rounds" in report


def test_cpu_bound():
    from sslrt.measure.bench import cpu_bound

    # the engine keeps 2 cores busy (40 ms CPU in 20 ms): 10 ms more CPU per pair caps end to end at 40/50
    assert cpu_bound(20.0, 40.0, 10.0, 2) == 0.8
    # an engine that leaves a core idle can hide the preparation entirely
    assert cpu_bound(20.0, 20.0, 10.0, 2) == 1.0
    assert cpu_bound(20.0, 20.0, 30.0, 2) == 0.8


def test_host_budget_is_where_the_cpu_bound_reaches_the_target():
    import pytest

    from sslrt.measure.bench import cpu_bound, host_budget

    # 2 cores busy 20 ms per pair (40 ms CPU): 90% allows (40 / 0.9) - 40 = 4.4 ms of host CPU
    assert host_budget(20.0, 40.0, 2) == pytest.approx(40 / 0.9 - 40)
    for engine_ms, engine_cpu in ((20.0, 40.0), (26.6, 50.2), (18.9, 37.3)):
        budget = host_budget(engine_ms, engine_cpu, 2)
        assert cpu_bound(engine_ms, engine_cpu, budget, 2) == pytest.approx(0.9)
        assert cpu_bound(engine_ms, engine_cpu, budget * 1.1, 2) < 0.9


def test_bench_bad_arguments(tiny_export, capsys):
    code, _, err = run_cli(["bench", "-m", tiny_export.directory, "--batch", "one"], capsys)
    assert code == 2 and "--batch" in err
    code, _, err = run_cli(["bench", "-m", tiny_export.directory, "--scope", "gpu"], capsys)
    assert code == 2 and "--scope" in err
    code, _, err = run_cli(["bench", "-m", tiny_export.directory, "--rounds", "0"], capsys)
    assert code == 2 and "--rounds" in err and err.count("\n") == 1


def test_bench_rounds_interleave_the_engines(tiny_export):
    """Each round times every engine in turn (a drifting machine slows every row alike), after one
    untimed call per engine and round; every engine gets its timed calls and its CPU per call."""
    from sslrt.measure.bench import bench_engines

    calls = []

    class Recording:  # a real engine's run, recorded: the order of the calls is what is tested
        def __init__(self, name, engine):
            self.name, self.engine = name, engine

        def run(self, feeds):
            calls.append(self.name)
            return self.engine.run(feeds)

    from sslrt.engines import create_engine
    from sslrt.resolve import resolve_model

    real = create_engine("onnxruntime", resolve_model(tiny_export.directory))
    engines = {"a": Recording("a", real), "b": Recording("b", real), "c": Recording("c", real)}
    measured = bench_engines(engines, 1, tiny_export.spec, rounds=3, warmup=1, min_runs=6, min_seconds=0.0)
    real.close()
    assert calls[:3] == ["a", "b", "c"]  # the warm-up
    # per round: one untimed and two timed calls of each engine, forward, backward, forward
    assert calls[3:] == [n for order in ("abc", "cba", "abc") for n in order for _ in range(3)]
    for name in "abc":
        times, cpu_ms = measured[name]
        assert len(times) == 6 and all(t > 0 for t in times) and cpu_ms > 0


def test_bench_rows_in_the_order_asked_with_rounds_and_skips(tmp_path, tiny_export, capsys):
    """Rows grouped per backend in the order asked (batches too), duplicates measured once, a
    backend that cannot run skipped; the end-to-end rows make one full pass per round."""
    code, _, err = run_cli(["bench", "-m", tiny_export.directory, "--backends", "onnxruntime,no-such,onnxruntime",
                            "--batch", "2,1", "--seconds", "0.02", "--e2e-pairs", "3", "--rounds", "2",
                            "--json", tmp_path / "b.json"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    order = [(r["scope"], r["backend"], r["batch"]) for r in result["rows"]]
    assert order == [(s, b, n) for s in ("engine", "e2e") for b in ("torch", "onnxruntime") for n in (2, 1)]
    assert any(line.startswith("no-such fp32") for line in result["skipped"])
    for r in result["rows"]:
        if r["scope"] == "e2e":  # 3 pairs: 2 batches of 2 or 3 of 1 per pass, 2 passes
            assert r["runs"] == 2 * -(-3 // r["batch"])
    # one round: the rows one after the other (one engine open at a time), the same rows
    code, _, err = run_cli(["bench", "-m", tiny_export.directory, "--batch", "1", "--seconds", "0.02", "--e2e-pairs", "2",
                            "--rounds", "1", "--json", tmp_path / "one.json"], capsys)
    assert code == 0, err
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["rounds"] == 1 and [(r["scope"], r["backend"]) for r in one["rows"]] == [
        ("engine", "torch"), ("engine", "onnxruntime"), ("e2e", "torch"), ("e2e", "onnxruntime")]
