#!/usr/bin/env python
"""Host preparation alone (file -> input tensors, no engine): pairs/s per thread count and per
process count, with the kernel's view of where the time goes (CPU per pair, minor page faults per
pair, context switches per pair). A GPU engine runs thousands of pairs/s; this says how many the
host can feed it, and whether threads stop scaling (the GIL, the allocator, the page-fault lock)
before the cores run out.

    PYTHONPATH=. python benchmarks/prepare_scaling.py --pairs 128 --threads 1,4,8,15 \\
        --processes 8,15 --variants default,keep,mmap64m,blas1 --out OUT/prepare_scaling_<machine>

Variants (each in a fresh Python process, its environment set before NumPy and OpenCV load):
  default   as `localize_many` runs it;
  mmap64m   glibc keeps buffers up to 64 MiB in its heap and never trims it
            (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_): no fresh pages per pair;
  blas1     one OpenBLAS and one OpenCV thread per call (no nested pools under the preparation threads);
  keep      sslrt.runtime.allocator.keep_freed_memory, as the sslrt command sets it.
Processes: sslrt.runtime.offload.ProcessOffload, as localize_many(processes=True) runs them (its
workers always keep freed memory).
Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "default": {},
    "mmap64m": {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
                "MALLOC_TOP_PAD_": str(64 << 20)},
    "blas1": {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "SSLRT_CV2_THREADS": "1"},
    "keep": {"SSLRT_KEEP_FREED": "1"},
}


def _prepare(pair, offload=None):
    from sslrt.runtime.pipeline import prepare_pair

    return prepare_pair(*pair, offload=offload)


def _usage() -> tuple[float, int, int, int]:
    """(CPU seconds, minor faults, voluntary and involuntary context switches) of this process
    and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, own.ru_minflt + kids.ru_minflt,
            own.ru_nvcsw + kids.ru_nvcsw, own.ru_nivcsw + kids.ru_nivcsw)


def _own_cpu() -> float:
    """CPU seconds of this process alone (all its threads), not its children's."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _child_usage(pid: int) -> tuple[float, int, int, int]:
    """The same for a live child process, from /proc (pool workers are alive while measured)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    minflt, utime, stime = int(fields[7]), int(fields[11]), int(fields[12])
    vol = invol = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol = int(line.split()[1])
    return (utime + stime) / tick, minflt, vol, invol


def measure(pairs, kind: str, n: int, passes: int) -> dict:
    """pairs/s of `passes` passes over `pairs` with `n` threads or processes, after one warm-up pass."""
    from sslrt.runtime.offload import ProcessOffload

    # processes: as localize_many(processes=True) runs them, one waiting thread per worker process
    offload = ProcessOffload(n) if kind == "processes" else None
    prepare = partial(_prepare, offload=offload)
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(prepare, pairs))  # warm-up: imports, worker starts, heap growth
        pids = [w.process.pid for w in offload._workers] if offload else []
        before = [_usage()] + [_child_usage(p) for p in pids]
        own_before = _own_cpu()
        start = time.perf_counter()
        for _ in range(passes):
            for prepared in pool.map(prepare, pairs):
                assert prepared.image_tensor is not None
        wall = time.perf_counter() - start
        own_after = _own_cpu()
        after = [_usage()] + [_child_usage(p) for p in pids]
    if offload:
        offload.close()
    count = passes * len(pairs)
    delta = [sum(a[i] - b[i] for a, b in zip(after, before)) for i in range(4)]
    # the parent's own share: with worker processes, the work that runs under the engine's GIL
    parent_cpu = own_after - own_before
    return {"kind": kind, "n": n, "pairs_per_s": count / wall, "cpu_ms_per_pair": delta[0] * 1e3 / count,
            "parent_cpu_ms_per_pair": parent_cpu * 1e3 / count,
            "minor_faults_per_pair": delta[1] / count, "voluntary_switches_per_pair": delta[2] / count,
            "involuntary_switches_per_pair": delta[3] / count}


def child(args) -> int:
    """One variant: every thread and process count, JSON lines on stdout."""
    if os.environ.get("SSLRT_CV2_THREADS"):
        import cv2

        cv2.setNumThreads(int(os.environ["SSLRT_CV2_THREADS"]))
    if os.environ.get("SSLRT_KEEP_FREED"):
        from sslrt.runtime.allocator import keep_freed_memory

        assert keep_freed_memory()
    pairs = json.loads(Path(args.pairs_file).read_text())
    for kind, counts in (("threads", args.threads), ("processes", args.processes)):
        for n in filter(None, counts.split(",")):
            row = measure([tuple(p) for p in pairs], kind, int(n), args.passes)
            print(json.dumps(row), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--threads", default="1,4,8,15")
    ap.add_argument("--processes", default="8,15")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--out", help="output path without extension")
    ap.add_argument("--pairs-file", help=argparse.SUPPRESS)  # set for the per-variant child
    args = ap.parse_args()
    if args.pairs_file:
        return child(args)

    from sslrt.measure.bench import machine_info, make_pair_files

    info = machine_info()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        pairs = make_pair_files(folder, args.pairs, args.image_size)
        pairs_file = os.path.join(folder, "pairs.json")
        Path(pairs_file).write_text(json.dumps(pairs))
        for variant in args.variants.split(","):
            env = {**os.environ, **VARIANTS[variant], "PYTHONPATH": str(REPO)}
            cmd = [sys.executable, __file__, "--pairs-file", pairs_file, "--threads", args.threads,
                   "--processes", args.processes, "--passes", str(args.passes)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                print(f"{variant}: failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            for line in done.stdout.splitlines():
                row = {"variant": variant, **json.loads(line)}
                rows.append(row)
                print(f"{variant:8} {row['kind']:9} {row['n']:3}: {row['pairs_per_s']:6.0f} pairs/s, "
                      f"CPU {row['cpu_ms_per_pair']:5.1f} ms/pair ({row['parent_cpu_ms_per_pair']:.2f} here), {row['minor_faults_per_pair']:6.0f} faults/pair, "
                      f"{row['voluntary_switches_per_pair']:6.1f} waits/pair", flush=True)
    lines = ["# Preparation alone: pairs/s per thread and process count", "",
             f"Machine: {info['cpu']}, {info['cores']} cores. {args.pairs} pairs of a {args.image_size} px JPEG and a "
             f"10 s WAV, {args.passes} passes after a warm-up pass. `python benchmarks/prepare_scaling.py`.", "",
             "| variant | pool | size | pairs/s | CPU ms/pair | of it in this process | minor faults/pair | voluntary switches/pair | involuntary/pair |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['kind']} | {r['n']} | {r['pairs_per_s']:.0f} | {r['cpu_ms_per_pair']:.1f} | {r['parent_cpu_ms_per_pair']:.2f} | "
                     f"{r['minor_faults_per_pair']:.0f} | {r['voluntary_switches_per_pair']:.1f} | {r['involuntary_switches_per_pair']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out + ".md").write_text(text)
        Path(args.out + ".json").write_text(json.dumps({"machine": info, "args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
