#!/usr/bin/env python
"""GPU latency of the torch-cuda backend (fp32 / fp16 autocast, channels_last, CUDA graph) against
the eager fp32 reference on the same GPU (the paper's inference: plain model(image, audio), NCHW,
no graph). Model-only latency on device-resident inputs, CUDA-event timed, median of `--iters`.

    PYTHONPATH=. python benchmarks/gpu_latency.py        # writes benchmarks/gpu_latency_<card>.{md,json}

Needs torch with CUDA and a GPU; the checkpoint is a full-width random one (latency does not
depend on the weights). Exits 0 with a message where there is no GPU.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,32,128,256")  # the 1..256; pairs/s at 128
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--out-dir", default=str(REPO / "benchmarks"))
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("gpu_latency: torch is not installed; nothing measured", file=sys.stderr)
        return 0
    if not torch.cuda.is_available():
        print("gpu_latency: no CUDA GPU visible to torch; nothing measured", file=sys.stderr)
        return 0

    from sslrt.engines.torch import TorchEngine
    from sslrt.synthetic.checkpoints import make_checkpoint

    card = torch.cuda.get_device_name(0)
    batches = [int(b) for b in args.batches.split(",")]
    variants = [  # (label, precision, channels_last, cuda_graph); the first is the baseline
        ("eager fp32 reference (NCHW, no graph)", "fp32", False, False),
        ("torch-cuda fp32 (NCHW) + CUDA graph", "fp32", False, True),
        ("fp32 channels_last (not the backend's: slower in fp32)", "fp32", True, False),
        ("torch-cuda fp16 autocast channels_last", "fp16", True, False),
        ("torch-cuda fp16 autocast channels_last + CUDA graph", "fp16", True, True),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp) / "full.pth.tar", width=args.width, seed=1)
        for label, precision, channels_last, graph in variants:
            engine = TorchEngine(str(ckpt), precision=precision, device="cuda", channels_last=channels_last, cuda_graph=graph)
            engine.load()
            for batch in batches:
                # device-resident inputs: what is timed is the model, not the PCIe copies
                image = torch.randn(batch, 3, 224, 224, device="cuda")
                audio = torch.rand(batch, 1, 257, 299, device="cuda") - 1.5
                if channels_last:
                    image, audio = (t.contiguous(memory_format=torch.channels_last) for t in (image, audio))
                with torch.no_grad():
                    def step():
                        engine.run_on_device(image, audio)
                    for _ in range(args.warmup):
                        step()
                    torch.cuda.synchronize()
                    times = []
                    for _ in range(args.iters):
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        start.record()
                        step()
                        end.record()
                        end.synchronize()
                        times.append(start.elapsed_time(end))
                times.sort()
                median = times[len(times) // 2]
                rows.append({"variant": label, "precision": precision, "channels_last": channels_last, "cuda_graph": graph,
                             "batch": batch, "median_ms": round(median, 3), "ms_per_pair": round(median / batch, 3),
                             "p90_ms": round(times[int(len(times) * 0.9)], 3)})
                print(f"{label}, batch {batch}: {median:.2f} ms ({median / batch:.3f} ms/pair)", file=sys.stderr)
            engine.close()
            torch.cuda.empty_cache()
    base = {r["batch"]: r["median_ms"] for r in rows if r["variant"] == variants[0][0]}
    for r in rows:
        r["speedup_vs_eager_fp32"] = round(base[r["batch"]] / r["median_ms"], 2)
    report = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "gpu": card,
              "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
              "width": args.width, "iters": args.iters, "rows": rows}
    slug = re.sub(r"[^A-Za-z0-9]+", "_", card).strip("_").lower()
    out = Path(args.out_dir) / f"gpu_latency_{slug}"
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# sslrt GPU latency on {card}", "",
             f"torch {report['torch']}, CUDA {report['cuda']}, cuDNN {report['cudnn']}; full-width model (width {args.width}); "
             f"model-only latency on device-resident inputs, CUDA events, median of {args.iters} after {args.warmup} warm-up runs. "
             f"Generated by `PYTHONPATH=. python benchmarks/gpu_latency.py` on {report['created']}.", "",
             "| variant | batch | median ms | ms/pair | p90 ms | speedup vs eager fp32 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['batch']} | {r['median_ms']} | {r['ms_per_pair']} | {r['p90_ms']} | {r['speedup_vs_eager_fp32']}x |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
