"""benchmarks/ray.{md,json}: sslrt on Ray against the local engine, on the same machine, in one run.

    PYTHONPATH=. python benchmarks/ray_report.py [--pairs 200] [--image-size 1024] [--repeats 3]

1. Batch: `run_pairs` (= `sslrt run --pairs FILE --ray`) on a local Ray of 2 CPUs against the
   local path (`Localizer.localize_many`, batch 8, what `sslrt run --pairs` runs), on the same
   generated JPEG + 10 s wav pairs (200 and 1000), alternating, `--repeats` times each; medians.
   Both include opening the model (the Ray job: its actors' start-up); neither starting Ray.
2. Service: `sslrt serve` (1 replica / batch wait 5 ms, and 2 replicas / 20 ms; max batch 8) under
   benchmarks/serve_load.py at concurrency 1, 8 and 32, against in-process `localize_many`
   throughput measured in the same run (before, between and after).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from serve_load import multipart_body, run_level  # noqa: E402


def process_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of this benchmark's processes, summed by role (Linux /proc):
    the Serve replicas, its HTTP proxy (and HAProxy in front of it), Ray's daemons and actors, this process (the load generator).
    Processes of other programs are not counted."""
    roles: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "ServeReplica" in cmd:
            role = "replicas"
        elif "ProxyActor" in cmd:
            role = "HTTP proxy"
        elif "haproxy" in cmd.split(" ", 1)[0]:
            role = "HAProxy"
        elif int(pid) == os.getpid():
            role = "load generator (this process)"
        elif "ray" in cmd:
            role = "Ray daemons and actors"
        else:
            continue
        roles[role] = roles.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return roles


def in_process_cpu_ms(pairs) -> float:
    """CPU milliseconds per pair of in-process `localize_many` (this process's own rusage)."""
    import resource

    from sslrt.runtime.pipeline import Localizer

    with Localizer.open(None) as loc:
        before = resource.getrusage(resource.RUSAGE_SELF)
        n = sum(1 for _ in loc.localize_many(pairs, batch_size=8))
        after = resource.getrusage(resource.RUSAGE_SELF)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / n * 1e3


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def local_pass(pairs, batch_size: int = 8) -> dict:
    from sslrt.runtime.pipeline import Localizer

    t0 = time.perf_counter()
    with Localizer.open(None) as loc:  # fresh: empty embedding caches
        marks = [time.perf_counter() for _ in loc.localize_many(pairs, batch_size=batch_size)]
    return _rates(t0, marks, batch_size)


def _rates(t0: float, marks: list[float], batch_size: int) -> dict:
    """Whole-job rate and time to the first result, from the arrival times of the results. (No
    "steady" rate: Ray Data hands results over in blocks and in order, so the arrival times after
    the first say little about when the work was done.)"""
    total = marks[-1] - t0
    return {"pairs": len(marks), "seconds": total, "pairs_per_second": len(marks) / total, "first_result_s": marks[0] - t0}


def ray_pass(csv_path: str, out: str, actors: int, batch_size: int = 8) -> dict:
    from sslrt.scale.batch import run_pairs

    shutil.rmtree(out, ignore_errors=True)
    marks: list[float] = []
    t0 = time.perf_counter()
    summary = run_pairs(csv_path, out, actors=actors, batch_size=batch_size, on_result=lambda row: marks.append(time.perf_counter()))
    assert summary["errors"] == 0 and summary["computed"] == len(marks)
    return _rates(t0, marks, batch_size)


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# sslrt on Ray: batch (`--ray`) and service (`sslrt serve`) against the local engine", "",
        f"Machine: {m['cpus']} CPU cores ({m['processor']}): load average {m['load_before']} before, "
        f"{m['load_after']} after (1/5/15 min). Ray {m['ray']}, ONNX Runtime {m['onnxruntime']}, Python {m['python']}. "
        "Local Ray: `ray.init(num_cpus=2)` with `RAY_worker_niceness=0`: Ray starts its workers at nice 15 by default "
        "(to keep the driver responsive), which on a machine shared with other jobs' nice-0 processes would measure the "
        "neighbours rather than sslrt; the local path runs at nice 0. The service runs each ingress (`sslrt serve "
        "--ingress`) in a local cluster of its own, started with that ingress's Serve flags.",
        f"Model: the shipped demo model (`sslrt/assets/demo`, ONNX Runtime fp32, encoders + cosine map). Pairs: generated "
        f"{r['image_size']}x{r['image_size']} JPEGs (q90) + 10 s 16 kHz PCM16 wavs, all distinct "
        "(`sslrt.measure.bench.make_pair_files`, seeds 0..N-1).", "",
        "## Batch: `sslrt run --pairs FILE --ray` vs the local `--pairs` path", "",
        f"Medians of {r['repeats']} alternating runs; batch size 8 (engine calls of 8 pairs; on Ray, blocks of 32 pairs, "
        "4 engine calls each). Job time includes opening the model (for Ray: starting the actors), not starting Ray.", "",
        "| pairs | path | pairs/s (whole job) | first result (s) | vs local |",
        "|---:|---|---:|---:|---:|",
    ]
    for n, b in r["batch"].items():
        lines.append(f"| {n} | local (`localize_many`, a decoding thread per core) | {b['local']['pairs_per_second']:.1f} | "
                     f"{b['local']['first_result_s']:.2f} | 100% |")
        for name, row in b["ray"].items():
            lines.append(f"| {n} | `--ray`, {name} | {row['pairs_per_second']:.1f} | {row['first_result_s']:.2f} | "
                         f"{row['pairs_per_second'] / b['local']['pairs_per_second']:.0%} |")
    s = r["service"]
    lines += ["", "## Service: `sslrt serve` under load", "",
              f"{s['requests']} requests per level (time limit {s['time_limit']} s), keep-alive connections, one multipart "
              f"request per pair (the {r['service_pairs']} first pairs: image + wav, ~{s['mean_body_kb']:.0f} kB). In-process "
              f"`localize_many` (batch 8, fresh caches) on the same pairs in the same run: "
              f"{s['in_process']['pairs_per_second']:.1f} pairs/s (median of {len(s['in_process_runs'])} passes: before, "
              "between and after the service runs).", "",
              "| service | concurrency | requests | errors | throughput (req/s) | vs in-process | p50 (ms) | p90 (ms) | p99 (ms) | engine batches (size: calls) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for cfg in s["configs"]:
        for lvl in cfg["levels"]:
            lines.append(f"| {cfg['name']} | {lvl['concurrency']} | {lvl['requests']} | {lvl['errors']} | {lvl['throughput']:.1f} | "
                         f"{lvl['throughput'] / s['in_process']['pairs_per_second']:.0%} | {lvl['p50_ms']:.0f} | {lvl['p90_ms']:.0f} | "
                         f"{lvl['p99_ms']:.0f} | {', '.join(f'{k}: {v}' for k, v in lvl['batch_sizes'].items())} |")
    lines += ["", "## Against the targets", ""]
    for n, b in r["batch"].items():
        best_name, best = max(b["ray"].items(), key=lambda kv: kv[1]["pairs_per_second"])
        job = best["pairs_per_second"] / b["local"]["pairs_per_second"]
        lines.append(f"- Batch, {n} pairs: `--ray` reaches {job:.0%} of the local throughput over the whole job "
                     f"({best_name}; target 85%: {'met' if job >= 0.85 else 'not met'}). The first result comes after "
                     f"{best['first_result_s']:.1f} s (Ray Data planning, starting the actor processes, importing sslrt and "
                     "opening the engine in each, then a first block of 32 pairs); a larger data set amortises that. "
                     "Single runs: see `runs` in ray.json.")
    for cfg in s["configs"]:
        c8 = next(lvl for lvl in cfg["levels"] if lvl["concurrency"] == 8)
        share = c8["throughput"] / s["in_process"]["pairs_per_second"]
        lines.append(f"- Service ({cfg['name']}), concurrency 8: {share:.0%} of in-process throughput (target 70%: "
                     f"{'met' if share >= 0.7 else 'not met'}), p99 {c8['p99_ms']:.0f} ms.")
    cpu_rows = []
    for cfg in s["configs"]:
        c8 = next(lvl for lvl in cfg["levels"] if lvl["concurrency"] == 8)
        if "cpu_ms_per_request" in c8:
            parts = sorted(((v, k) for k, v in c8["cpu_ms_per_request"].items() if v >= 0.05), reverse=True)
            cpu_rows.append(f"  - {cfg['name']}: " + ", ".join(f"{k} {v:.1f}" for v, k in parts)
                            + f"; total {sum(v for v, _ in parts):.1f} ms per request")
    if cpu_rows and "in_process_cpu_ms_per_pair" in s:
        lines += [f"- Where the CPU goes at concurrency 8 (ms of CPU per request, by process, from /proc; in-process "
                  f"`localize_many`: {s['in_process_cpu_ms_per_pair']:.1f} ms per pair):", *cpu_rows]
    lines += ["- What the service pays per request beyond in-process work. With the proxy ingress, Serve's HTTP proxy "
              "actor (Python) parses each ~0.6 MB request and forwards it to the replica as ASGI messages over Ray calls. "
              "With the HAProxy ingress, HAProxy (C) forwards the bytes to the replica's own HTTP server. In both cases: the "
              "audio's temporary file, a thread hop for decoding and one for the engine, and small engine batches. "
              "On two cores the in-process path spends every cycle on decoding and the engine; the service must fit its "
              "ingress, Ray's messaging and the load generator into the same two cores.",
              "", "Reproduce: `PYTHONPATH=. python benchmarks/ray_report.py` (writes this file and `benchmarks/ray.json`).", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="200,1000,3000", help="comma-separated pair counts of the batch comparison")
    ap.add_argument("--service-pairs", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--actors", default="1,2", help="comma-separated actor counts for --ray (the first pair count only: 2)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--ingress", default="proxy,haproxy", help="comma-separated Serve ingresses to measure (sslrt serve --ingress)")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args(argv)

    import logging

    import onnxruntime
    import ray

    from sslrt.measure.bench import make_pair_files

    load_before = loadavg()
    counts = [int(n) for n in args.pairs.split(",")]
    work = tempfile.mkdtemp(prefix="sslrt_ray_bench_")
    pairs = make_pair_files(work, max(counts + [args.service_pairs]), image_size=args.image_size)
    csvs = {}
    for n in counts:
        csvs[n] = os.path.join(work, f"pairs{n}.csv")
        with open(csvs[n], "w") as f:
            for image, audio in pairs[:n]:
                f.write(f"{os.path.basename(image)},{os.path.basename(audio)}\n")
    os.environ["RAY_worker_niceness"] = "0"  # see the report: the local path runs at nice 0 too
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        # warm-up: imports, worker processes, page cache
        local_pass(pairs[:16])
        ray_pass(csvs[counts[0]], os.path.join(work, "warm"), actors=1)
        batch = {}
        for n in counts:
            actor_counts = [int(a) for a in args.actors.split(",")] if n == counts[0] else [2]
            local_runs, ray_runs = [], {a: [] for a in actor_counts}
            for rep in range(args.repeats):
                local_runs.append(local_pass(pairs[:n]))
                print(n, "local", local_runs[-1], flush=True)
                for a in actor_counts:
                    ray_runs[a].append(ray_pass(csvs[n], os.path.join(work, f"out{a}"), actors=a))
                    print(n, "ray", a, ray_runs[a][-1], flush=True)
            batch[n] = {"local": median_of(local_runs),
                        "ray": {f"{a} actor{'s' if a > 1 else ''} ({max(0.25, min(1.0, 1 / a)):g} CPU each)": median_of(ray_runs[a])
                                for a in actor_counts},
                        "runs": {"local": local_runs, **{f"ray_{a}": ray_runs[a] for a in actor_counts}}}
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        ray.shutdown()

    # service: each ingress in a local cluster of its own (Serve reads its ingress flags when its
    # processes start), 2 CPUs like the batch comparison
    from sslrt.scale import serve as sslrt_serve

    try:
        served = pairs[:args.service_pairs]
        bodies = [multipart_body(i, a) for i, a in served]
        in_process_runs = [local_pass(served)]
        configs = []
        for ingress in args.ingress.split(","):
            flags = sslrt_serve.local_cluster_environment(ingress)
            os.environ.update(flags)
            ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            try:
                for replicas, wait_ms in ((1, 5.0), (2, 20.0)):
                    port = free_port()
                    sslrt_serve.start(None, port=port, replicas=replicas, max_batch=8, batch_wait_ms=wait_ms, ingress=ingress)
                    run_level("127.0.0.1", port, bodies, 4, 16, 60)  # warm-up
                    levels = []
                    for c in (1, 8, 32):
                        before = _batch_sizes(port, replicas)
                        cpu_before = process_cpu_seconds()
                        level = run_level("127.0.0.1", port, bodies, c, args.requests, args.time_limit, start_index=c)
                        cpu_after = process_cpu_seconds()
                        after = _batch_sizes(port, replicas)
                        # a process that ended during the level takes its seconds with it: no negative shares
                        level["cpu_ms_per_request"] = {k: max(0.0, cpu_after.get(k, 0.0) - cpu_before.get(k, 0.0)) / max(1, level["requests"]) * 1e3
                                                       for k in cpu_after}
                        level["batch_sizes"] = {k: v - before.get(k, 0) for k, v in sorted(after.items(), key=lambda kv: int(kv[0]))
                                                if v - before.get(k, 0)}
                        levels.append(level)
                        print("serve", ingress, replicas, wait_ms, level, flush=True)
                    sslrt_serve.stop()
                    name = f"{ingress} ingress, {replicas} replica{'s' if replicas > 1 else ''}, max batch 8, wait {wait_ms:g} ms"
                    configs.append({"name": name, "ingress": ingress, "replicas": replicas, "max_batch": 8,
                                    "batch_wait_ms": wait_ms, "levels": levels})
                    in_process_runs.append(local_pass(served))
            finally:
                ray.shutdown()
                for k in flags:
                    os.environ.pop(k, None)
        in_process_cpu = in_process_cpu_ms(served)
        service = {"requests": args.requests, "time_limit": args.time_limit, "in_process_cpu_ms_per_pair": in_process_cpu,
                   "mean_body_kb": statistics.mean(len(b) for b, _ in bodies) / 1024, "configs": configs,
                   "in_process": median_of(in_process_runs), "in_process_runs": in_process_runs}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"image_size": args.image_size, "repeats": args.repeats, "service_pairs": args.service_pairs,
              "batch": batch, "service": service,
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "load_before": load_before, "load_after": loadavg(), "ray": ray.__version__,
                          "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                          "ray_worker_niceness": 0}}
    with open(os.path.join(args.out, "ray.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.out, "ray.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


def _batch_sizes(port: int, replicas: int) -> dict:
    """The batch-size histogram summed over the replicas (each answers /models for itself; asked
    until every replica's pid has answered)."""
    import http.client

    seen: dict[int, dict] = {}
    for _ in range(50 * replicas):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/models")
        data = json.loads(conn.getresponse().read())
        conn.close()
        seen[data["pid"]] = data["batch_sizes"]
        if len(seen) == replicas:
            break
    total: dict[str, int] = {}
    for hist in seen.values():
        for k, v in hist.items():
            total[k] = total.get(k, 0) + v
    return total


if __name__ == "__main__":
    main()
