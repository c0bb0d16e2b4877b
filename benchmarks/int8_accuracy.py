#!/usr/bin/env python
"""INT8 accuracy against fp32, measured on >= 200 pairs (issue: "its accuracy is measured, not assumed").

    PYTHONPATH=. python benchmarks/int8_accuracy.py --model EXPORT_DIR --out benchmarks/cpu/int8_accuracy_NAME

EXPORT_DIR must hold onnx_fp32 and onnx_int8 (`sslrt export CKPT --int8`). `--backends` (default: onnxruntime
and, where installed, openvino): each backend's INT8 is compared with the fp32 of ONNX Runtime. Inputs: procedural scenes
(sslrt.synthetic.scenes, IS3 layout: two objects per picture, each sounding in turn), so each pair has a true
box. Reports, on the same pairs: heatmap error, argmax agreement and localization agreement of INT8
against fp32 (sslrt.measure.parity.heatmap_agreement), and each precision's own cIoU against the true boxes
with the per-sample agreement of (ciou >= 0.5).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", type=int, default=110, help="pictures; two pairs each")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", required=True, help="path prefix of the .json/.md report")
    ap.add_argument("--backends", default=None, help="comma-separated (default: onnxruntime, and openvino where installed)")
    args = ap.parse_args()

    from sslrt.engines import available_backends
    from sslrt.measure import metrics
    from sslrt.measure.parity import heatmap_agreement
    from sslrt.runtime.pipeline import Localizer
    from sslrt.synthetic.scenes import generate_samples

    backends = args.backends.split(",") if args.backends else [b for b in ("onnxruntime", "openvino") if b in available_backends()]
    samples = generate_samples(args.images, args.seed)
    pairs = [(s.image, (s.waveform, s.sample_rate)) for s in samples]
    gt = np.stack([metrics.gt_map_is3(s.box) for s in samples])

    def run(backend, precision):
        loc = Localizer.open(args.model, backend=backend, precision=precision)
        heat = np.stack([r.heatmap for r in loc.localize_many(pairs, batch_size=8)])
        loc.close()
        return heat

    def ciou_of(heat):
        return metrics.ciou_fixed_and_adaptive(metrics.heatmaps_to_predictions(heat, "bilinear_align_corners"), gt)[0]

    fp32 = run("onnxruntime", "fp32")
    ciou_fp32 = ciou_of(fp32)
    by_backend = {}
    for backend in backends:
        int8 = run(backend, "int8")
        ciou_int8 = ciou_of(int8)
        by_backend[backend] = {
            "int8_vs_fp32": heatmap_agreement(fp32, int8),
            "cIoU@0.5": {"fp32": metrics.ciou_percent(ciou_fp32), "int8": metrics.ciou_percent(ciou_int8)},
            "same_localization_decision": float(((ciou_fp32 >= 0.5) == (ciou_int8 >= 0.5)).mean()),
        }
        if backend != "onnxruntime":  # its fp32 against ONNX Runtime's, on the same pairs
            by_backend[backend]["fp32_vs_onnxruntime_fp32"] = heatmap_agreement(fp32, run(backend, "fp32"))
    first = by_backend[backends[0]]
    report = {
        "model": args.model, "pairs": len(samples), "inputs": f"sslrt.synthetic.scenes.generate_samples({args.images}, seed={args.seed})",
        "reference": "onnxruntime fp32", "backends": by_backend,
        # the first backend's figures at the top level, as before
        "int8_vs_fp32": first["int8_vs_fp32"], "cIoU@0.5": first["cIoU@0.5"],
        "same_localization_decision": first["same_localization_decision"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    cols = list(by_backend)
    measures = [
        ("heatmap max abs error", lambda r: f"{r['int8_vs_fp32']['max_abs']:.4f}"),
        ("heatmap mean abs error", lambda r: f"{r['int8_vs_fp32']['mean_abs']:.5f}"),
        ("min cosine of heatmaps", lambda r: f"{r['int8_vs_fp32']['min_cosine']:.5f}"),
        ("argmax cell agreement", lambda r: f"{r['int8_vs_fp32']['argmax_agreement']:.1%}"),
        ("localization agreement (cIoU of INT8's mask vs fp32's mask >= 0.5)",
         lambda r: f"{r['int8_vs_fp32']['localization_agreement']:.1%}"),
        ("same decision ciou >= 0.5 against the true box", lambda r: f"{r['same_localization_decision']:.1%}"),
        ("cIoU@0.5 fp32 / INT8 (true boxes)", lambda r: f"{r['cIoU@0.5']['fp32']:.1f} / {r['cIoU@0.5']['int8']:.1f}"),
        ("its fp32 vs ONNX Runtime fp32: max abs", lambda r: f"{r['fp32_vs_onnxruntime_fp32']['max_abs']:.1e}"
         if "fp32_vs_onnxruntime_fp32" in r else "(reference)"),
    ]
    md = "\n".join([
        f"# INT8 vs fp32 accuracy: {args.model}", "",
        f"{len(samples)} pairs ({report['inputs']}), two sounding objects per picture, true boxes known. "
        "Each backend's INT8 (the export's QDQ graphs) against ONNX Runtime fp32.", "",
        "| measure | " + " | ".join(f"{c} INT8" for c in cols) + " |", "|---|" + "---|" * len(cols),
        *(f"| {name} | " + " | ".join(fmt(by_backend[c]) for c in cols) + " |" for name, fmt in measures), "",
    ])
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
