"""A bounded HTTP load generator for `sslrt serve` (loopback only).

    PYTHONPATH=. python benchmarks/serve_load.py --port 8000 --pairs pairs.csv --concurrency 1,8,32 \
        --requests 200 --time-limit 60

Each level sends at most `--requests` POST /localize requests (multipart image + audio, bodies
encoded once before the clock starts) from `concurrency` threads, each with its own keep-alive
connection, and stops early at `--time-limit` seconds. Reports p50/p90/p99 latency and throughput
(completed requests / wall time). Standard library only (http.client + threads).

`benchmarks/ray_report.py` runs it against a service it starts, next to the in-process
`localize_many` throughput and the `--ray` batch comparison, and writes benchmarks/ray.{md,json}.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
import uuid

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def multipart_body(image: str, audio: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for field, path in (("image", image), ("audio", audio)):
        with open(path, "rb") as f:
            data = f.read()
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{os.path.basename(path)}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_level(host: str, port: int, bodies: list[tuple[bytes, str]], concurrency: int, requests: int,
              time_limit: float, start_index: int = 0) -> dict:
    """`requests` requests (cycling over `bodies`) from `concurrency` threads, or fewer at the time limit."""
    if host not in LOOPBACK:
        raise SystemExit(f"serve_load talks to loopback only, not {host}")
    lock = threading.Lock()
    state = {"next": 0}
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + time_limit

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=120)
        while True:
            with lock:
                i = state["next"]
                if i >= requests or time.perf_counter() >= deadline:
                    break
                state["next"] += 1
            body, ctype = bodies[(start_index + i) % len(bodies)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/localize", body=body, headers={"Content-Type": ctype})
                resp = conn.getresponse()
                data = resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=120)
                ok, data = False, str(exc).encode()
            dt = time.perf_counter() - t0
            with lock:
                if ok:
                    latencies.append(dt)
                else:
                    errors.append(data[:200].decode("utf-8", "replace"))
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"concurrency": concurrency, "requests": len(latencies), "errors": len(errors), "error_examples": errors[:3],
            "seconds": wall, "throughput": len(latencies) / wall if wall > 0 else 0.0,
            "p50_ms": percentile(latencies, 50) * 1e3, "p90_ms": percentile(latencies, 90) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3, "mean_ms": sum(latencies) / max(1, len(latencies)) * 1e3}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--pairs", required=True, help="CSV of image,audio (the --pairs format)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=200, help="requests per concurrency level (at most)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per concurrency level (at most)")
    ap.add_argument("--warmup", type=int, default=8)
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sslrt.cli import read_pairs_csv

    bodies = [multipart_body(i, a) for i, a in read_pairs_csv(args.pairs)]
    run_level(args.host, args.port, bodies, 2, args.warmup, args.time_limit)
    for c in (int(x) for x in args.concurrency.split(",")):
        print(json.dumps(run_level(args.host, args.port, bodies, c, args.requests, args.time_limit)))


if __name__ == "__main__":
    main()
