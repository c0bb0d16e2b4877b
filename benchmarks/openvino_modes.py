#!/usr/bin/env python
"""Which OpenVINO CPU properties for which batch, against ONNX Runtime, on the same graphs in one run.

    PYTHONPATH=. python benchmarks/openvino_modes.py --model EXPORT_DIR --out benchmarks/cpu/openvino_modes

EXPORT_DIR: an export with onnx_fp32 and onnx_int8 (`sslrt export CKPT --int8`). Engine only, fused
graph, random inputs. The candidates run interleaved (round robin, `--rounds` rounds of `--calls`
calls each) so that other load on the machine spreads over all of them; the report gives the
median ms/pair of each. Candidates:
- onnxruntime: sslrt's ONNX Runtime CPU session (no spinning, all cores);
- ov latency: PERFORMANCE_HINT LATENCY (one stream, every thread on the one request), dynamic batch;
- ov latency static: the same compiled for the batch's static shape;
- ov throughput split: PERFORMANCE_HINT THROUGHPUT (NUM_STREAMS = cores, capped at 2), the batch
  split in one slice per stream, run concurrently (what sslrt's openvino backend does for batch >= 2);
- ov throughput 1 request: the THROUGHPUT model, the whole batch on one request (one stream);
- ov ... winograd (fp32 only): the same on the model with the wide 3x3 convolutions rewritten as
  Winograd F(2x2, 3x3) (what sslrt's openvino backend runs for fp32; the other fp32 rows are direct);
- ov bf16 (INT8 only): the CPU plugin's default inference precision on a CPU with bf16 instructions
  (sslrt forces f32: faster for INT8 here, and fp32 must stay fp32).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--out", required=True, help="path prefix of the .json/.md report")
    args = ap.parse_args()

    import openvino as ov

    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.engines.openvino import LATENCY, THROUGHPUT, compile_properties, core
    from sslrt.engines.openvino_winograd import apply_winograd
    from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE, input_shapes
    from sslrt.measure.bench import machine_info
    from sslrt.store.manifest import read_export

    exported = read_export(args.model)
    shapes = input_shapes(exported.spec)
    rng = np.random.default_rng(0)
    rows = []
    for precision in args.precisions.split(","):
        path = str(Path(exported.directory) / exported.artifacts[f"onnx_{precision}"]["file"])
        ort = OnnxRuntimeEngine(path, precision)
        ort.load()
        model = core().read_model(path)
        compiled = {name: core().compile_model(model, "CPU", props) for name, props in {
            "latency": compile_properties(LATENCY), "throughput": compile_properties(THROUGHPUT),
            **({"bf16": {"PERFORMANCE_HINT": "LATENCY"}} if precision == "int8" else {})}.items()}
        if precision == "fp32":
            winograd = model.clone()
            apply_winograd(winograd)
            compiled["latency winograd"] = core().compile_model(winograd, "CPU", compile_properties(LATENCY))
            compiled["throughput winograd"] = core().compile_model(winograd, "CPU", compile_properties(THROUGHPUT))
        streams = int(compiled["throughput"].get_property("NUM_STREAMS"))
        for batch in [int(b) for b in args.batch.split(",")]:
            feeds = {INPUT_IMAGE: rng.standard_normal((batch, *shapes[INPUT_IMAGE]), dtype=np.float32),
                     INPUT_AUDIO: rng.uniform(-1.3, -0.2, (batch, *shapes[INPUT_AUDIO])).astype(np.float32)}
            static = model.clone()
            static.reshape({INPUT_IMAGE: [batch, *shapes[INPUT_IMAGE]], INPUT_AUDIO: [batch, *shapes[INPUT_AUDIO]]})
            lat_static = core().compile_model(static, "CPU", compile_properties(LATENCY)).create_infer_request()
            lat = compiled["latency"].create_infer_request()
            thr = [compiled["throughput"].create_infer_request() for _ in range(streams)]
            bounds = np.linspace(0, batch, min(streams, batch) + 1).round().astype(int)

            def split(thr=thr):
                used = []
                for r, lo, hi in zip(thr, bounds[:-1], bounds[1:]):
                    r.start_async({k: v[lo:hi] for k, v in feeds.items()}, share_inputs=True)
                    used.append(r)
                for r in used:
                    r.wait()

            candidates = {"onnxruntime": lambda: ort.run(feeds),
                          "ov latency": lambda: lat.infer(feeds, share_inputs=True),
                          "ov latency static": lambda: lat_static.infer(feeds, share_inputs=True),
                          "ov throughput split": split,
                          "ov throughput 1 request": lambda: thr[0].infer(feeds, share_inputs=True)}
            if "latency winograd" in compiled:
                lat_w = compiled["latency winograd"].create_infer_request()
                thr_w = [compiled["throughput winograd"].create_infer_request() for _ in range(streams)]
                candidates["ov latency winograd"] = lambda: lat_w.infer(feeds, share_inputs=True)
                candidates["ov throughput split winograd"] = lambda: split(thr_w)
            if "bf16" in compiled:
                bf16 = compiled["bf16"].create_infer_request()
                candidates["ov bf16 latency"] = lambda: bf16.infer(feeds, share_inputs=True)
            times = {name: [] for name in candidates}
            for fn in candidates.values():
                fn()
                fn()
            for _ in range(args.rounds):
                for name, fn in candidates.items():
                    for _ in range(args.calls):
                        t = time.perf_counter()
                        fn()
                        times[name].append((time.perf_counter() - t) * 1e3 / batch)
            base = statistics.median(times["onnxruntime"])
            for name, ts in times.items():
                rows.append({"precision": precision, "batch": batch, "candidate": name, "ms_per_pair": statistics.median(ts),
                             "min_ms_per_pair": min(ts), "vs_onnxruntime": base / statistics.median(ts), "calls": len(ts)})
                print(f"{precision} batch {batch} {name}: {statistics.median(ts):.1f} ms/pair", flush=True)
        ort.close()
    report = {"model": args.model, "width": exported.config.width, "machine": machine_info(),
              "openvino": ov.__version__, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [f"# OpenVINO CPU properties vs ONNX Runtime (width {report['width']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; OpenVINO {report['openvino']}, onnxruntime "
             f"{m['versions'].get('onnxruntime')}. Engine only, fused graph; candidates interleaved, "
             f"{args.rounds} rounds x {args.calls} calls; `python benchmarks/openvino_modes.py --model ... --out ...`.", "",
             "| precision | batch | candidate | ms/pair (median) | min | vs onnxruntime |", "|---|---:|---|---:|---:|---:|"]
    lines += [f"| {r['precision']} | {r['batch']} | {r['candidate']} | {r['ms_per_pair']:.1f} | {r['min_ms_per_pair']:.1f} | "
              f"{r['vs_onnxruntime']:.2f}x |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
