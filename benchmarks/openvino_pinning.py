#!/usr/bin/env python
"""Engine only, OpenVINO split batches: the throughput streams' threads pinned to cores (OpenVINO's
default) or not (sslrt's, so that two lanes running the vision and the audio model at once do not
share the core both models pin stream 0 to; sslrt/engines/openvino.py). Interleaved rounds of
`sslrt bench`'s engine scope, both engines open at once.

    PYTHONPATH=. python benchmarks/openvino_pinning.py --model EXPORT_DIR --precisions int8,fp32 --rounds 6

Prints ms/pair per precision and setting.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--precisions", default="int8,fp32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    import numpy as np

    from sslrt.engines import create_engine
    from sslrt.engines import openvino as ov_adapter
    from sslrt.measure.bench import bench_engines
    from sslrt.resolve import resolve_model

    source = resolve_model(args.model)
    sslrt_properties = ov_adapter.compile_properties
    engines = {}
    try:
        for pinned in (True, False):
            def properties(hint, *a, pinned=pinned, **k):
                props = sslrt_properties(hint, *a, **k)
                if hint == ov_adapter.THROUGHPUT:
                    props["ENABLE_CPU_PINNING"] = pinned
                return props

            ov_adapter.compile_properties = properties  # read when the throughput model compiles
            for precision in args.precisions.split(","):
                engine = create_engine("openvino", source, precision=precision)
                engine.load()
                engine.run({s.name: np.zeros((args.batch, *s.shape[1:]), np.float32) for s in engine.inputs})  # compiles it
                engines[(precision, "pinned" if pinned else "not pinned")] = engine
    finally:
        ov_adapter.compile_properties = sslrt_properties
    measured = bench_engines(engines, args.batch, source.spec, rounds=args.rounds)
    print(f"| precision | stream threads | ms/pair (batch {args.batch}, median of calls) |\n|---|---|---:|")
    for (precision, setting), (times, _) in measured.items():
        print(f"| {precision} | {setting} | {statistics.median(times) / args.batch:.2f} |")
    for engine in engines.values():
        engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
