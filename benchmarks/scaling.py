#!/usr/bin/env python
"""Scaling with the batch, and the cost of more sounds on one image, per CPU backend and precision.

    PYTHONPATH=. python benchmarks/scaling.py --model EXPORT_DIR      # writes benchmarks/cpu/scaling.{md,json}

EXPORT_DIR: an export with fp32 and INT8 graphs (`sslrt export CKPT --int8`; benchmarks/cpu.sh makes
the full-width one). Two tables:
1. engine only, fused graph, random inputs: ms/pair (median of the timed calls) and the process's
   peak resident memory for each batch size. Every (backend, precision, batch) runs in a fresh
   process, so its peak is its own: model + runtime + that batch's activations.
2. one image and N sounds (N = 1, 4, 16), files in and results out (`localize_many` on the
   encoder graphs, empty embedding caches, one call of batch N): the image is decoded and encoded
   once, each sound once; against N independent pairs (N x the N = 1 cost).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BATCHES = (1, 2, 4, 8, 16, 32, 64)
SOUNDS = (1, 4, 16)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker_engine(model: str, backend: str, precision: str, batch: int, seconds: float) -> dict:
    import numpy as np

    from sslrt.engines import create_engine
    from sslrt.measure.bench import bench_engine
    from sslrt.resolve import resolve_model

    source = resolve_model(model)
    engine = create_engine(backend, source, precision=precision)
    loaded = _peak_mib()
    # fewer calls for the large batches: at least 3 timed calls, at least `seconds`
    times = bench_engine(engine, batch, source.spec, warmup=1, min_runs=3, min_seconds=seconds)
    return {"ms_per_pair": statistics.median(times) / batch, "ms_per_call": statistics.median(times), "calls": len(times),
            "peak_rss_mib": _peak_mib(), "rss_after_load_mib": loaded, "std_ms_per_pair": float(np.std(times) / batch)}


def worker_sounds(model: str, backend: str, precision: str, folder: str, reps: int) -> dict:
    from sslrt.runtime.pipeline import Localizer

    image = os.path.join(folder, "img_000.jpg")
    sounds = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".wav"))
    loc = Localizer.open(model, backend=backend, precision=precision)
    if not loc.split:
        return {"skipped": "the export has no encoder graphs"}
    out = {}
    for n in SOUNDS:
        pairs = [(image, s) for s in sounds[:n]]
        times = []
        for _ in range(reps + 1):
            loc.image_cache.clear()
            loc.audio_cache.clear()
            t = time.perf_counter()
            results = list(loc.localize_many(pairs, batch_size=n, workers=0))
            times.append((time.perf_counter() - t) * 1e3)
            assert len(results) == n
        out[n] = statistics.median(times[1:])
    loc.close()
    return {"ms_per_call": out}


def _spawn(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=False)
    ap.add_argument("--backends", default=None, help="comma-separated (default: onnxruntime, and openvino where installed)")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--batch", default=",".join(map(str, BATCHES)))
    ap.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per engine row")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of each 1 image x N sounds call")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "cpu" / "scaling"))
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, backend, precision, *rest = args.worker
        if kind == "engine":
            print(json.dumps(worker_engine(args.model, backend, precision, int(rest[0]), args.seconds)))
        else:
            print(json.dumps(worker_sounds(args.model, backend, precision, rest[0], args.reps)))
        return

    from sslrt.engines import available_backends
    from sslrt.measure.bench import machine_info, make_pair_files
    from sslrt.store.manifest import read_export

    exported = read_export(args.model)
    backends = args.backends.split(",") if args.backends else [b for b in ("onnxruntime", "openvino") if b in available_backends()]
    combos = [(b, p) for b in backends for p in args.precisions.split(",") if f"onnx_{p}" in exported.artifacts]
    batches = [int(b) for b in args.batch.split(",")]
    engine_rows, sound_rows = [], []
    common = ["--model", args.model, "--seconds", str(args.seconds), "--reps", str(args.reps)]
    for backend, precision in combos:
        for batch in batches:
            r = _spawn([*common, "--worker", "engine", backend, precision, str(batch)])
            engine_rows.append({"backend": backend, "precision": precision, "batch": batch, **r})
            print(f"engine {backend} {precision} batch {batch}: {r}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="sslrt_scaling_") as folder:
        make_pair_files(folder, max(SOUNDS))
        for backend, precision in combos:
            r = _spawn([*common, "--worker", "sounds", backend, precision, folder])
            sound_rows.append({"backend": backend, "precision": precision, **r})
            print(f"sounds {backend} {precision}: {r}", file=sys.stderr, flush=True)
    report = {"model": args.model, "width": exported.config.width, "machine": machine_info(),
              "engine": engine_rows, "one_image_n_sounds": sound_rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Scaling (width {r['width']})", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
             "`python benchmarks/scaling.py --model EXPORT_DIR` (benchmarks/cpu.sh).", "",
             "## Engine only: ms per pair and peak memory by batch", "",
             "Fused graph, random inputs; each cell a fresh process (peak RSS = model + runtime + that batch).", ""]
    combos = list(dict.fromkeys((e["backend"], e["precision"]) for e in r["engine"]))
    batches = sorted({e["batch"] for e in r["engine"]})
    cell = {(e["backend"], e["precision"], e["batch"]): e for e in r["engine"]}
    lines += ["| backend | precision | " + " | ".join(f"b{b} ms/pair" for b in batches) + " |",
              "|---|---|" + "---:|" * len(batches)]
    for b, p in combos:
        lines.append(f"| {b} | {p} | " + " | ".join(
            f"{cell[(b, p, n)]['ms_per_pair']:.1f}" if "ms_per_pair" in cell.get((b, p, n), {}) else "n/a" for n in batches) + " |")
    lines += ["", "| backend | precision | " + " | ".join(f"b{b} peak MiB" for b in batches) + " |",
              "|---|---|" + "---:|" * len(batches)]
    for b, p in combos:
        lines.append(f"| {b} | {p} | " + " | ".join(
            f"{cell[(b, p, n)]['peak_rss_mib']:.0f}" if "peak_rss_mib" in cell.get((b, p, n), {}) else "n/a" for n in batches) + " |")
    errors = [f"{e['backend']} {e['precision']} b{e['batch']}: {e['error']}" for e in r["engine"] if "error" in e]
    lines += ["", "## One image, N sounds (embedding reuse)", "",
              "Files in, results out: one 1024x1024 JPEG and N 10 s WAVs in one `localize_many` call of batch N on the "
              "encoder graphs, empty caches (the image decoded and encoded once). Against N independent pairs = N x (N = 1).", "",
              "| backend | precision | N | ms per call | ms per pair | vs N independent pairs |", "|---|---|---:|---:|---:|---:|"]
    for s in r["one_image_n_sounds"]:
        calls = s.get("ms_per_call")
        if not calls:
            errors.append(f"{s['backend']} {s['precision']} sounds: {s.get('error') or s.get('skipped')}")
            continue
        one = calls.get("1") or calls.get(1)
        for n, ms in calls.items():
            lines.append(f"| {s['backend']} | {s['precision']} | {n} | {ms:.1f} | {ms / int(n):.1f} | {ms / (one * int(n)):.0%} |")
    if errors:
        lines += ["", "Not measured: " + "; ".join(errors)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
