#!/usr/bin/env python
"""Would OpenVINO's own post-training quantization (NNCF) be a better INT8 than sslrt's QDQ graph?

    PYTHONPATH=. python benchmarks/nncf_vs_qdq.py --model EXPORT_DIR --out benchmarks/cpu/nncf_vs_qdq

EXPORT_DIR: an export with onnx_fp32 and onnx_int8 (`sslrt export CKPT --int8`). NNCF quantizes the
fp32 ONNX graph read by OpenVINO (`nncf.quantize`, default preset), calibrated on the inputs
`build_onnx_int8` uses (16 generated pairs, seed 97), in two scopes: (a) everything but the stems
(what the QDQ export keeps fp32 too) and (b) also the head (L2 normalisations, clip, cosine-map
MatMul: the QDQ export quantizes only Conv, Add, Relu, MaxPool). Each INT8 model runs on sslrt's
openvino engine; against ONNX Runtime fp32 on the 220 scene pairs of benchmarks/int8_accuracy.py
(fused graph), and timed interleaved at batch 1 and 8. Needs openvino and nncf.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HEAD_TYPES = ["MatMul", "Divide", "Minimum", "Maximum", "ReduceL2", "Clamp"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", type=int, default=110)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import nncf
    import openvino as ov

    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.engines.openvino import OpenVinoEngine, core
    from sslrt.export.int8 import stem_conv_names
    from sslrt.export.onnx import parity_inputs
    from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_HEATMAP
    from sslrt.measure.bench import machine_info
    from sslrt.measure.parity import heatmap_agreement
    from sslrt.preprocess import image_to_tensor, spectrogram_from_waveform
    from sslrt.store.manifest import read_export
    from sslrt.synthetic.scenes import generate_samples

    exported = read_export(args.model)
    fp32_path = os.path.join(exported.directory, exported.artifacts["onnx_fp32"]["file"])
    qdq_path = os.path.join(exported.directory, exported.artifacts["onnx_int8"]["file"])
    cal_image, cal_audio, _ = parity_inputs(exported.spec, n=16, seed=97)
    calibration = nncf.Dataset([{INPUT_IMAGE: cal_image[i:i + 1], INPUT_AUDIO: cal_audio[i:i + 1]} for i in range(len(cal_image))])
    stems = stem_conv_names(fp32_path)
    samples = generate_samples(args.images, args.seed)
    image = np.stack([image_to_tensor(s.image) for s in samples])
    audio = np.stack([spectrogram_from_waveform(s.waveform, s.sample_rate) for s in samples])

    def heatmaps(engine):
        return np.concatenate([engine.run({INPUT_IMAGE: image[i:i + 8], INPUT_AUDIO: audio[i:i + 8]})[OUTPUT_HEATMAP]
                               for i in range(0, len(image), 8)])

    reference = heatmaps(OnnxRuntimeEngine(fp32_path))
    with tempfile.TemporaryDirectory(prefix="sslrt_nncf_") as tmp:
        paths = {"QDQ export (sslrt's onnx_int8)": qdq_path}
        build_s = {}
        for name, scope in (("NNCF, stems fp32", nncf.IgnoredScope(names=stems)),
                            ("NNCF, stems and head fp32", nncf.IgnoredScope(names=stems, types=HEAD_TYPES, validate=False))):
            t = time.perf_counter()
            quantized = nncf.quantize(core().read_model(fp32_path), calibration, subset_size=len(cal_image), ignored_scope=scope)
            build_s[name] = time.perf_counter() - t
            paths[name] = os.path.join(tmp, f"{len(paths)}.xml")
            ov.save_model(quantized, paths[name])
        engines = {name: OpenVinoEngine(path, precision="int8") for name, path in paths.items()}
        rows = {name: {"vs_onnxruntime_fp32": heatmap_agreement(reference, heatmaps(e)), "build_s": build_s.get(name)}
                for name, e in engines.items()}
        rng = np.random.default_rng(0)
        for batch in (1, 8):
            feeds = {INPUT_IMAGE: rng.standard_normal((batch, *image.shape[1:]), dtype=np.float32),
                     INPUT_AUDIO: rng.uniform(-1.3, -0.2, (batch, *audio.shape[1:])).astype(np.float32)}
            times = {name: [] for name in engines}
            for e in engines.values():
                e.run(feeds)
            for _ in range(args.rounds):
                for name, e in engines.items():
                    for _ in range(3):
                        t = time.perf_counter()
                        e.run(feeds)
                        times[name].append((time.perf_counter() - t) * 1e3 / batch)
            for name in engines:
                rows[name][f"b{batch}_ms_per_pair"] = statistics.median(times[name])
        for e in engines.values():
            e.close()
    report = {"model": args.model, "machine": machine_info(), "openvino": ov.__version__, "nncf": nncf.__version__,
              "pairs": len(samples), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# NNCF post-training quantization vs sslrt's QDQ INT8, both on OpenVINO ({args.model})", "",
             f"{len(samples)} scene pairs against ONNX Runtime fp32 (fused graph); speed interleaved, {args.rounds} rounds. "
             f"OpenVINO {ov.__version__}, NNCF {nncf.__version__}; `python benchmarks/nncf_vs_qdq.py`.", "",
             "| INT8 model | max abs | mean abs | argmax agree | localization agree | b1 ms/pair | b8 ms/pair |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        a = r["vs_onnxruntime_fp32"]
        lines.append(f"| {name} | {a['max_abs']:.4f} | {a['mean_abs']:.5f} | {a['argmax_agreement']:.1%} | "
                     f"{a['localization_agreement']:.1%} | {r['b1_ms_per_pair']:.1f} | {r['b8_ms_per_pair']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
