#!/usr/bin/env python
"""`sslrt eval` on 1000 pairs against the engine-only time of the same backend, in one process.

    PYTHONPATH=. python benchmarks/eval_speed.py [--model EXPORT_DIR]   # writes benchmarks/eval_speed.{md,json}

Default model: a full-width (width 64) random checkpoint in the released layout, exported here.
Data: 500 two-object generated pictures (224-448 px) in the IS3 layout, 1000 samples.
Engine-only time: the same backend and batch size on ready tensors, 1000 pairs' worth of calls.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    from sslrt.measure.bench import bench_engine
    from sslrt.engines import create_engine
    from sslrt.measure.evaluation import run_evaluation
    from sslrt.resolve import resolve_model
    from sslrt.runtime.pipeline import Localizer
    from sslrt.synthetic.scenes import generate_samples
    from sslrt.synthetic.scenes.is3 import write_scene_set

    work = Path(tempfile.mkdtemp(prefix="sslrt_eval_speed_"))
    model = args.model
    if model is None:
        from sslrt.export import export_checkpoint
        from sslrt.synthetic.checkpoints import make_checkpoint

        model = export_checkpoint(str(make_checkpoint(work / "full64.pth.tar", width=64)), str(work / "full64")).directory
    write_scene_set(generate_samples(500, 31337, sizes=(224, 320, 448)), work / "is3")
    source = resolve_model(model)

    engine = create_engine("onnxruntime", source)
    calls = -(-1000 // args.batch)
    per_call = bench_engine(engine, args.batch, source.spec, min_runs=calls, min_seconds=0, max_runs=calls)
    engine_s = float(np.sum(per_call)) / 1e3 * (1000 / (calls * args.batch))
    engine.close()

    loc = Localizer.open(source)
    t = time.perf_counter()
    summary = run_evaluation("is3", str(work / "is3"), loc, str(work / "out"), batch_size=args.batch)
    eval_s = time.perf_counter() - t
    report = {"pairs": summary["evaluated"], "batch": args.batch, "model_width": source.exported.config.width,
              "engine_only_s": engine_s, "eval_s": eval_s, "ratio": eval_s / engine_s,
              "includes": "reading 1000 JPEG/WAV pairs, preprocessing, inference (encoders), official metrics, retrieval over 1000 pairs"}
    (REPO / "benchmarks" / "eval_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    md = (f"# `sslrt eval` speed: {report['pairs']} IS3-layout pairs, ONNX Runtime fp32, width {report['model_width']}, batch {args.batch}\n\n"
          f"| engine only | sslrt eval (files -> metrics) | ratio |\n|---:|---:|---:|\n"
          f"| {engine_s:.1f} s | {eval_s:.1f} s | {report['ratio']:.2f}x |\n\nEval includes {report['includes']}.\n")
    (REPO / "benchmarks" / "eval_speed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
