#!/usr/bin/env python
"""INT8 accuracy against fp32, measured on >= 200 pairs (issue: "its accuracy is measured, not assumed").

    PYTHONPATH=. python benchmarks/int8_accuracy.py --model EXPORT_DIR --out benchmarks/cpu/int8_accuracy_NAME

EXPORT_DIR must hold onnx_fp32 and onnx_int8 (`sslrt export CKPT --int8`). Inputs: procedural scenes
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
    args = ap.parse_args()

    from sslrt.measure import metrics
    from sslrt.measure.parity import heatmap_agreement
    from sslrt.runtime.pipeline import Localizer
    from sslrt.synthetic.scenes import generate_samples

    samples = generate_samples(args.images, args.seed)
    pairs = [(s.image, (s.waveform, s.sample_rate)) for s in samples]
    heat = {}
    for precision in ("fp32", "int8"):
        loc = Localizer.open(args.model, precision=precision)
        heat[precision] = np.stack([r.heatmap for r in loc.localize_many(pairs, batch_size=8)])
        loc.close()
    agreement = heatmap_agreement(heat["fp32"], heat["int8"])
    gt = np.stack([metrics.gt_map_is3(s.box) for s in samples])
    ciou = {}
    for precision, h in heat.items():
        pred = metrics.heatmaps_to_predictions(h, "bilinear_align_corners")
        ciou[precision], _ = metrics.ciou_fixed_and_adaptive(pred, gt)
    same_decision = float(((ciou["fp32"] >= 0.5) == (ciou["int8"] >= 0.5)).mean())
    report = {
        "model": args.model, "pairs": len(samples), "inputs": f"sslrt.synthetic.scenes.generate_samples({args.images}, seed={args.seed})",
        "int8_vs_fp32": agreement,
        "cIoU@0.5": {p: metrics.ciou_percent(c) for p, c in ciou.items()},
        "same_localization_decision": same_decision,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    a = agreement
    md = "\n".join([
        f"# INT8 vs fp32 accuracy: {args.model}", "",
        f"{len(samples)} pairs ({report['inputs']}), two sounding objects per picture, true boxes known.", "",
        "| measure | value |", "|---|---|",
        f"| heatmap max abs error | {a['max_abs']:.4f} |",
        f"| heatmap mean abs error | {a['mean_abs']:.5f} |",
        f"| min cosine of heatmaps | {a['min_cosine']:.5f} |",
        f"| argmax cell agreement | {a['argmax_agreement']:.1%} |",
        f"| localization agreement (cIoU of INT8's mask vs fp32's mask >= 0.5) | {a['localization_agreement']:.1%} |",
        f"| same decision ciou >= 0.5 against the true box | {same_decision:.1%} |",
        f"| cIoU@0.5 fp32 / INT8 (true boxes) | {report['cIoU@0.5']['fp32']:.1f} / {report['cIoU@0.5']['int8']:.1f} |", "",
    ])
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
