#!/usr/bin/env python
"""Parity of every backend/precision available on this machine against the PyTorch fp32 reference.

    PYTHONPATH=. python benchmarks/parity.py            # writes benchmarks/parity_report.{md,json}

Checkpoint: the full-width paper-format checkpoint that ../shared/golden/make_golden_checkpoint.py
rebuilds (random weights, the checkpoint of the golden heatmaps) when ../shared is present, else a
random checkpoint of `--width` (64 = full width). Inputs: `--pairs` generated image/sound pairs
(sslrt.synthetic.generated.py) plus the real pairs of ../shared/samples when present.
Each candidate runs through `sslrt.engines.create_engine`, like `sslrt run --backend ...`; the
statistics come from the one comparator, `sslrt.measure.parity.heatmap_agreement`. Needs torch (the
reference) and onnx (the export).
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_HEATMAP  # noqa: E402
from sslrt.errors import SslrtError  # noqa: E402
from sslrt.measure.parity import FP16_BUDGET, heatmap_agreement, within_budget  # noqa: E402

SHARED = Path(os.environ.get("SSLRT_SHARED", REPO.parent / "shared"))
REAL_PAIRS = [("accordion_baby_10467.jpg", "accordion_baby_10467_accordion.wav"),
              ("accordion_baby_10467.jpg", "accordion_baby_10467_baby.wav"),
              ("car_img.jpeg", "car.wav"), ("car_img.jpeg", "car_engine.mp3")]
# (label, registry backend, precision, cuda_graph): everything sslrt can run; rows whose backend
# or artifact is absent here are listed as skipped, with the reason.
CANDIDATES = [
    ("torch fp32 (CPU)", "torch", "fp32", False),
    ("onnxruntime fp32 (CPU)", "onnxruntime", "fp32", False),
    ("onnxruntime fp16 graph (CPU provider)", "onnxruntime", "fp16", False),
    ("onnxruntime int8 QDQ (CPU)", "onnxruntime", "int8", False),
    ("openvino fp32 (CPU)", "openvino", "fp32", False),
    ("openvino fp16 graph (CPU)", "openvino", "fp16", False),
    ("openvino int8 QDQ (CPU)", "openvino", "int8", False),
    ("onnxruntime-cuda fp32", "onnxruntime-cuda", "fp32", False),
    ("onnxruntime-cuda fp16 graph", "onnxruntime-cuda", "fp16", False),
    ("onnxruntime-trt fp16", "onnxruntime-trt", "fp16", False),
    ("torch-cuda fp32 (channels_last)", "torch-cuda", "fp32", False),
    ("torch-cuda fp16 autocast (channels_last)", "torch-cuda", "fp16", False),
    ("torch-cuda fp16 autocast + CUDA graph", "torch-cuda", "fp16", True),
    ("tensorrt fp32", "tensorrt", "fp32", False),
    ("tensorrt fp16", "tensorrt", "fp16", False),
    ("tensorrt fp16 + CUDA graph", "tensorrt", "fp16", True),
]


def gpu_name() -> str | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        from sslrt.engines.tensorrt import device_info

        return device_info()["name"]
    except Exception:
        return None


def checkpoint(args, work: Path) -> tuple[str, str, dict | None]:
    maker = SHARED / "golden" / "make_golden_checkpoint.py"
    if args.checkpoint:
        return args.checkpoint, f"user checkpoint {args.checkpoint}", None
    if args.family != "ours":  # a peer family: its released layout, and the official code's heatmaps
        import torch

        peers = SHARED / "golden" / "peers"
        spec = importlib.util.spec_from_file_location("make_peer_checkpoint", peers / "make_peer_checkpoint.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        path = work / f"{args.family}.pth"
        torch.save(mod.build(args.family, "default", False), path)
        golden = json.loads((peers / "golden_peers.json").read_text())["families"][args.family]
        return str(path), f"{args.family} checkpoint of ../shared/golden/peers (full width, random weights, released layout)", golden
    if maker.is_file() and not args.random:
        import torch

        spec = importlib.util.spec_from_file_location("make_golden_checkpoint", maker)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        path = work / "golden.pth.tar"
        torch.save({"epoch": 0, "model_state_dict": mod.build(), "optimizer_state_dict": {}}, path)
        golden = json.loads((SHARED / "golden" / "golden_heatmaps.json").read_text())
        return str(path), "golden checkpoint of ../shared/golden (full width 64, random weights, released format)", golden
    from sslrt.synthetic.checkpoints import make_checkpoint

    path = make_checkpoint(work / "random.pth.tar", width=args.width, seed=args.seed)
    return str(path), f"random checkpoint, width {args.width} (seed {args.seed})", None


def inputs(n: int, seed: int, spec):
    from sslrt.export.onnx import parity_inputs
    from sslrt.preprocess import audio_to_spectrogram, image_to_tensor, load_image

    image, audio, _ = parity_inputs(spec, n=n, seed=seed)
    names = [f"generated #{seed + k}" for k in range(n)]
    samples = SHARED / "samples"
    real = [(samples / i, samples / a) for i, a in REAL_PAIRS if (samples / i).is_file() and (samples / a).is_file()]
    if real and importlib.util.find_spec("soundfile") is None:
        print("parity: soundfile is not installed: the real pairs are left out", file=sys.stderr)
        real = []
    if real:
        image = np.concatenate([image, np.stack([image_to_tensor(load_image(i), spec.image) for i, _ in real])])
        audio = np.concatenate([audio, np.stack([audio_to_spectrogram(a, spec.audio) for _, a in real])])
        names += [f"{i.name} + {a.name}" for i, a in real]
    return image, audio, names, len(real)


def run_all(engine, image, audio, batch_size: int) -> tuple[np.ndarray, float]:
    out = []
    engine.run({INPUT_IMAGE: image[:batch_size], INPUT_AUDIO: audio[:batch_size]})  # warm-up (graph capture, autotuning)
    t0 = time.perf_counter()
    for i in range(0, len(image), batch_size):
        out.append(engine.run({INPUT_IMAGE: image[i:i + batch_size], INPUT_AUDIO: audio[i:i + batch_size]})[OUTPUT_HEATMAP])
    return np.concatenate(out), (time.perf_counter() - t0) * 1e3 / len(image)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64, help="generated pairs (default 64)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--width", type=int, default=64, help="width of the random checkpoint when ../shared is absent (64 = full)")
    ap.add_argument("--random", action="store_true", help="use a random checkpoint even where ../shared is present")
    ap.add_argument("--checkpoint", help="a checkpoint of your own instead")
    ap.add_argument("--family", default="ours", help="model family: ours (the golden checkpoint) or a peer family "
                                                     "(its checkpoint from ../shared/golden/peers); also names a --checkpoint's family")
    ap.add_argument("--batch-size", type=int, default=8, help="a multiple-of-8 batch also exercises the CUDA-graph rows")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "parity_report"), help="report path without suffix")
    args = ap.parse_args()

    from sslrt.engines import available_backends, create_engine
    from sslrt.export import export_checkpoint
    from sslrt.resolve import resolve_model

    available = available_backends(include_torch=True)
    with tempfile.TemporaryDirectory(prefix="sslrt-parity-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("SSLRT_CACHE_DIR", str(work / "cache"))
        ckpt, ckpt_desc, golden = checkpoint(args, work)
        print(f"checkpoint: {ckpt_desc}", file=sys.stderr)
        exports, export_error = {}, None
        try:
            exports["fp16"] = export_checkpoint(ckpt, str(work / "export16"), targets=["onnx_fp16", "onnx_int8"]
                                                + (["tensorrt_fp16"] if "tensorrt" in available else []), family=args.family)
            if "tensorrt" in available:
                exports["fp32"] = export_checkpoint(ckpt, str(work / "export32"), targets=["tensorrt_fp32"], family=args.family)
        except SslrtError as exc:  # e.g. onnx missing: the torch rows can still be measured
            export_error = f"export failed: {exc}"
            print(f"parity: {export_error}", file=sys.stderr)
        from sslrt.spec import get_spec

        spec = get_spec(args.family)
        image, audio, names, n_real = inputs(args.pairs, args.seed, spec)
        print(f"inputs: {args.pairs} generated + {n_real} real pairs; backends here: {', '.join(sorted(available))}", file=sys.stderr)

        from sslrt.engines.torch import TorchEngine

        reference = TorchEngine(ckpt, spec=spec)
        reference.load()
        ref_heat, ref_ms = run_all(reference, image, audio, args.batch_size)
        golden_check = None
        if golden is not None:
            index = {f"{p['image']} + {p['audio']}": np.array(p["heatmap"]) for p in golden["pairs"]}
            diffs = [float(np.abs(ref_heat[k, 0] - index[n]).max()) for k, n in enumerate(names) if n in index]
            golden_check = {"pairs": len(diffs), "max_abs": max(diffs) if diffs else None}
        rows = []
        for label, backend, precision, graph in CANDIDATES:
            row = {"label": label, "backend": backend, "precision": precision, "cuda_graph": graph}
            if backend not in available:
                row["skipped"] = f"{backend} not available here"
                rows.append(row)
                continue
            if not backend.startswith("torch") and "fp16" not in exports:
                row["skipped"] = export_error
                rows.append(row)
                continue
            if backend.startswith("torch"):
                source = resolve_model(ckpt, family=args.family, export=False)
            elif backend == "tensorrt":
                source = resolve_model(exports.get(precision, exports["fp16"]).directory)
            else:
                source = resolve_model(exports["fp16"].directory)
            try:
                engine = create_engine(backend, source, precision=precision, cuda_graph=graph)
            except SslrtError as exc:
                row["skipped"] = str(exc)
                rows.append(row)
                continue
            heat, ms = run_all(engine, image, audio, args.batch_size)
            device = engine.device
            engine.close()
            stats = heatmap_agreement(ref_heat, heat)
            row.update(stats, ms_per_pair=round(ms, 2), device=device)
            if precision == "fp16":
                ok, failed = within_budget(stats, FP16_BUDGET)
                row.update(within_fp16_budget=ok, budget_failures=failed)
            rows.append(row)
            print(f"{label}: max abs {stats['max_abs']:.2e}, argmax {stats['argmax_agreement']:.1%}, "
                  f"localization {stats['localization_agreement']:.1%}, {ms:.1f} ms/pair", file=sys.stderr)

    import sslrt.export.onnx as exp

    report = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "PYTHONPATH=. python benchmarks/parity.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "gpu": gpu_name()},
        "versions": exp.library_versions(),
        "checkpoint": ckpt_desc,
        "inputs": {"generated": args.pairs, "real": n_real, "names": names, "batch_size": args.batch_size},
        "reference": {"backend": "torch", "precision": "fp32", "device": "cpu", "ms_per_pair": round(ref_ms, 2),
                      "heatmap_std": float(ref_heat.reshape(len(ref_heat), -1).std(1).mean()),
                      "median_top2_gap": float(np.median(np.diff(np.sort(ref_heat.reshape(len(ref_heat), -1), 1)[:, -2:], axis=1))),
                      "min_top2_gap": float(np.diff(np.sort(ref_heat.reshape(len(ref_heat), -1), 1)[:, -2:], axis=1).min()),
                      "vs_golden_heatmaps_of_the_paper_code": golden_check},
        "fp16_budget": FP16_BUDGET,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}", file=sys.stderr)
    bad = [r["label"] for r in rows if r.get("within_fp16_budget") is False]
    if bad:
        print(f"outside the fp16 budget: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


def _misses(row: dict) -> str:
    misses = row.get("argmax_misses") or []
    if not misses:
        return "0"
    return f"{row['argmax_near_ties']}; {max(m['reference_gap'] for m in misses):.1e}"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# sslrt parity report",
        "",
        f"Every backend/precision available on the machine, against the PyTorch fp32 reference (eager, CPU). "
        f"Generated by `{r['command'].strip()}` on {r['created']}.",
        "",
        f"- machine: {m['platform']}, {m['cpu_count']} CPU threads, GPU: {m['gpu'] or 'none'}",
        f"- checkpoint: {r['checkpoint']}",
        f"- inputs: {r['inputs']['generated']} generated pairs + {r['inputs']['real']} real pairs of ../shared/samples, "
        f"batch {r['inputs']['batch_size']}",
        f"- reference: torch fp32 on CPU, {r['reference']['ms_per_pair']} ms/pair"
        + (f"; its max abs error against the golden heatmaps of the paper's own code: "
           f"{r['reference']['vs_golden_heatmaps_of_the_paper_code']['max_abs']:.1e} on "
           f"{r['reference']['vs_golden_heatmaps_of_the_paper_code']['pairs']} pairs"
           if r["reference"]["vs_golden_heatmaps_of_the_paper_code"] else ""),
        f"- reference heatmaps: mean per-map std {r['reference']['heatmap_std']:.4f}, gap between the two hottest cells: "
        f"median {r['reference']['median_top2_gap']:.1e}, min {r['reference']['min_top2_gap']:.1e} (random weights give flat maps, "
        "so argmax agreement is a near-tie test here)",
        f"- fp16 budget: heatmap max abs <= {r['fp16_budget']['max_abs']}, argmax agreement >= "
        f"{r['fp16_budget']['argmax_agreement']:.0%}, localization agreement >= {r['fp16_budget']['localization_agreement']:.0%} "
        "(localization: per-sample cIoU of the candidate's mask against the reference's own mask — 14->224 bilinear "
        "align_corners=True, min-max, official median threshold — agreement = fraction with cIoU >= 0.5)",
        "",
        "| backend / precision | device | max abs | mean abs | min cosine | argmax agree (near-ties among misses; largest reference gap of a miss) | mean cIoU | localization agree | fp16 budget | ms/pair |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        if "skipped" in row:
            continue
        budget = ("n/a (INT8: see benchmarks/cpu/int8_accuracy_*)" if row["precision"] == "int8" else "") \
            if row["precision"] != "fp16" else ("met" if row["within_fp16_budget"] else "MISSED: " + "; ".join(row["budget_failures"]))
        lines.append(f"| {row['label']} | {row['device']} | {row['max_abs']:.2e} | {row['mean_abs']:.2e} | {row['min_cosine']:.6f} | "
                     f"{row['argmax_agreement']:.1%} ({_misses(row)}) | {row['mean_ciou']:.4f} | {row['localization_agreement']:.1%} | {budget} | "
                     f"{row['ms_per_pair']} |")
    skipped = [row for row in r["rows"] if "skipped" in row]
    if skipped:
        lines += ["", "Not measured on this machine: " + "; ".join(f"{row['label']} ({row['skipped']})" for row in skipped) + "."]
    lines += ["", "Near-ties: argmax disagreements where the candidate's peak cell is, in the reference heatmap, within twice "
              "that sample's mean abs error of the reference's peak value (the reference gap of each miss is in the JSON). The ONNX Runtime CPU provider may compute fp16 "
              "nodes it has no fp16 kernel for in fp32 (with inserted casts), so its fp16 row need not match the error of "
              "an fp16 GPU engine (which may be larger); the fp16 rows of a GPU machine's report are the ones that count."]
    lines += ["", "ms/pair: rough throughput of this run on this machine (batched, after one warm-up call), not a benchmark.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
