#!/usr/bin/env python
"""End to end against engine only, per preparation-thread (or -process) count: how much
preparation a backend needs before its engine, not the host, sets the pace (the defaults:
sslrt.runtime.pipeline.prepare_workers and prepare_in_processes: on a CPU one thread per core up to
four; beside a GPU engine every core but one, in worker processes on 4+ cores). Meant for a GPU
machine (benchmarks/gpu.sh runs it); it runs on any backend. Measured on an H200's 16-core host
(torch-cuda fp16, batch 32): 8 threads 211, 8 processes 306, 15 processes 324 pairs/s of the
engine's 5,280 (benchmarks/gpu/README.md).

    PYTHONPATH=. python benchmarks/e2e_workers.py --model EXPORT_DIR --backends torch-cuda,onnxruntime-cuda \\
        --precision fp16 --batch 32 --workers 8,p8,auto --out OUT/e2e_workers_<card>

Engine only: the fused graph on generated tensors at --batch (sslrt bench's engine scope). End to
end: `localize_many` over --pairs distinct pairs of an --image-size JPEG and a 10 s WAV, one
warm-up pass, then --passes timed passes. Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--backends", default="onnxruntime")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--workers", default="4,auto", help="comma-separated preparation thread counts, pN for N worker processes; "
                                                        "auto = the default for the engine")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--out", required=True, help="output path without extension")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's malloc as it is (default: keep freed memory, as the sslrt command does)")
    args = ap.parse_args()
    from sslrt.runtime.allocator import keep_freed_memory

    allocator = "glibc default" if args.default_allocator else ("keeps freed memory" if keep_freed_memory() else "default (not glibc)")

    from sslrt.engines import create_engine
    from sslrt.errors import SslrtError
    from sslrt.measure.bench import bench_engines, e2e_pass, machine_info, make_pair_files, prepare_cpu
    from sslrt.resolve import resolve_model
    from sslrt.machine import usable_cores
    from sslrt.runtime.pipeline import Localizer, prepare_in_processes, prepare_workers

    source = resolve_model(args.model)
    cores = usable_cores()
    rows, skipped = [], []

    def measure(loc, backend: str, pairs) -> None:
        """This backend's rows: engine only once, then end to end per thread count."""
        fused = create_engine(backend, source, precision=args.precision)
        try:
            times, _ = bench_engines({backend: fused}, args.batch, source.spec, rounds=1, min_seconds=2.0)[backend]
        finally:
            fused.close()
        engine_pairs_s = args.batch * len(times) / (sum(times) / 1e3)
        prep_ms = prepare_cpu(loc, pairs[:32])
        for spec in args.workers.split(","):
            if spec == "auto":
                processes = prepare_in_processes(loc.engine.device, cores)
                workers = prepare_workers(loc.engine.device, cores, processes)
            else:
                processes, workers = spec.startswith("p"), int(spec.lstrip("p"))
            e2e_pass(loc, pairs, args.batch, False, workers, processes)  # warm-up (and the worker processes' start)
            totals_ms = [e2e_pass(loc, pairs, args.batch, False, workers, processes)[0] for _ in range(args.passes)]
            e2e_pairs_s = len(pairs) * len(totals_ms) / (sum(totals_ms) / 1e3)
            rows.append({"backend": backend, "precision": args.precision, "device": loc.engine.device,
                         "batch": args.batch, "workers": workers, "processes": processes, "workers_asked": spec,
                         "e2e_pairs_per_s": e2e_pairs_s, "engine_pairs_per_s": engine_pairs_s,
                         "e2e_over_engine": e2e_pairs_s / engine_pairs_s, "prepare_cpu_ms_per_pair": prep_ms})
            print(f"{backend} {args.precision} {workers} {'processes' if processes else 'threads'}: {e2e_pairs_s:.0f} pairs/s end to end, "
                  f"{engine_pairs_s:.0f} engine only", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="sslrt_e2e_workers_") as folder:
        pairs = make_pair_files(folder, args.pairs, image_size=args.image_size)
        for backend in [b for b in args.backends.split(",") if b]:
            try:
                loc = Localizer.open(source, backend=backend, precision=args.precision)
            except SslrtError as exc:
                skipped.append(f"{backend} {args.precision}: {exc}")
                continue
            try:
                with loc:
                    measure(loc, backend, pairs)
            except Exception as exc:  # noqa: BLE001  one backend failing (CUDA out of memory, ...) keeps the others' rows
                text = str(exc).splitlines()[0][:200] if str(exc) else ""
                skipped.append(f"{backend} {args.precision}: failed: {type(exc).__name__}: {text}")
    machine = machine_info()
    result = {"machine": machine, "cores": cores, "pairs": args.pairs, "image_size": args.image_size, "allocator": allocator,
              "rows": rows, "skipped": skipped}
    lines = ["# End to end vs engine only, per preparation-thread count", "",
             f"Machine: {machine['cpu']}, {cores} cores" + (f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU")
             + f". {args.pairs} pairs of a {args.image_size}x{args.image_size} JPEG and a 10 s WAV, {args.passes} timed passes; "
             f"engine only: the fused graph on generated tensors. malloc: {allocator} (worker processes always keep freed memory). "
             "`python benchmarks/e2e_workers.py`.", "",
             "| backend | precision | batch | preparation | end to end pairs/s | engine only pairs/s | e2e / engine | preparation CPU ms/pair |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        threads = f"{r['workers']} {'processes' if r['processes'] else 'threads'}" + (" (default)" if r["workers_asked"] == "auto" else "")
        lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {threads} | {r['e2e_pairs_per_s']:.0f} | "
                     f"{r['engine_pairs_per_s']:.0f} | {r['e2e_over_engine']:.0%} | {r['prepare_cpu_ms_per_pair']:.1f} |")
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
