#!/usr/bin/env python
"""End to end with lanes against split batches, interleaved in one process: the measured basis of
`Localizer.localize_many`'s lanes (sslrt/runtime/pipeline.py).

A Localizer runs `localize_many` either way: with lanes (each batch whole on one of the engine's
lanes, `lanes` batches at once: the default on the CPU backends) or, in a subclass with one lane,
each batch split across the engine's streams or half-thread sessions (the behaviour before lanes).
Both Localizers are open at once and their passes alternate (order reversed every other round), so
that the machine's drift falls on both alike. Each pass is `sslrt bench`'s end-to-end pass (64
distinct pairs of an --image-size JPEG and a 10 s WAV, batch 8, empty embedding caches) followed by
the same Localizer's inference alone on the same pairs, prepared once (bench's e2e / inference).

    PYTHONPATH=. python benchmarks/lanes_ab.py --model EXPORT_DIR --backends onnxruntime,openvino \\
        --precisions int8,fp32 --image-sizes 1024,360 --rounds 8 --out benchmarks/cpu/lanes_ab

Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--backends", default="onnxruntime,openvino")
    ap.add_argument("--precisions", default="int8,fp32")
    ap.add_argument("--image-sizes", default="1024,360")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", required=True, help="output path without extension")
    args = ap.parse_args()

    from sslrt.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # as the sslrt command does for many pairs
    from sslrt.engines import available_backends
    from sslrt.measure.bench import e2e_pass, inference_pass, machine_info, make_pair_files, prepare_all
    from sslrt.resolve import resolve_model
    from sslrt.runtime.pipeline import Localizer

    class OneLane(Localizer):
        """Each batch split across the engine's lanes, one batch at a time (no lanes)."""

        lanes = 1

    source = resolve_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sslrt_lanes_") as folder:
        for size in [int(s) for s in args.image_sizes.split(",")]:
            sub = Path(folder) / str(size)
            sub.mkdir()
            pairs = make_pair_files(str(sub), args.pairs, image_size=size)
            for backend in args.backends.split(","):
                if backend not in available_backends():
                    print(f"lanes_ab: {backend} is not installed here, skipped", file=sys.stderr)
                    continue
                for precision in args.precisions.split(","):
                    variants = {"split batches": OneLane.open(source, backend=backend, precision=precision),
                                "lanes": Localizer.open(source, backend=backend, precision=precision)}
                    try:
                        lanes = variants["lanes"].lanes
                        for loc in variants.values():  # warm-up: lazy compiles, page cache
                            e2e_pass(loc, pairs, args.batch, False)
                        ready = prepare_all(variants["lanes"], pairs)
                        passes = {name: [] for name in variants}
                        for r in range(args.rounds):
                            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
                            print(f"lanes_ab: {backend} {precision} {size} px, round {r + 1}/{args.rounds}", file=sys.stderr)
                            for name in order:
                                total_ms, _ = e2e_pass(variants[name], pairs, args.batch, False)
                                inference_ms = inference_pass(variants[name], ready, args.batch)
                                passes[name].append((total_ms / len(pairs), inference_ms / len(ready)))
                    finally:
                        for loc in variants.values():
                            loc.close()
                    for name, done in passes.items():
                        e2e = [e for e, _ in done]
                        rows.append({"backend": backend, "precision": precision, "image_size": size, "variant": name,
                                     "lanes": lanes if name == "lanes" else 1, "batch": args.batch,
                                     "e2e_ms_per_pair": statistics.median(e2e), "e2e_min": min(e2e), "e2e_max": max(e2e),
                                     "inference_ms_per_pair": statistics.median(i for _, i in done),
                                     "e2e_over_inference": statistics.median(i / e for e, i in done), "passes": done})
    result = {"machine": machine_info(), "model": source.exported.directory, "width": source.exported.config.width,
              "pairs": args.pairs, "rounds": args.rounds, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# Lanes against split batches, end to end", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores. Model width {result['width']}. "
             f"{result['pairs']} pairs a pass, {result['rounds']} interleaved rounds; medians (range of e2e ms/pair). "
             "e2e / inference: per round, the end-to-end pass against the same Localizer's inference alone on the "
             "same prepared pairs (`sslrt bench`'s). Reproduce: `PYTHONPATH=. python benchmarks/lanes_ab.py --model "
             "EXPORT_DIR --out OUT` (`benchmarks/cpu.sh` makes the full-width export).", "",
             "| backend | precision | image | variant | e2e ms/pair | inference ms/pair | e2e / inference | lanes vs split |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    by_key = {}
    for row in result["rows"]:
        by_key.setdefault((row["backend"], row["precision"], row["image_size"]), {})[row["variant"]] = row
    for (backend, precision, size), variants in by_key.items():
        split = variants.get("split batches")
        for name, row in variants.items():
            gain = ""
            if name == "lanes" and split:
                gain = f"{split['e2e_ms_per_pair'] / row['e2e_ms_per_pair']:.3f}x pairs/s"
            lines.append(f"| {backend} | {precision} | {size} px | {name} | {row['e2e_ms_per_pair']:.2f} "
                         f"({row['e2e_min']:.2f}-{row['e2e_max']:.2f}) | {row['inference_ms_per_pair']:.2f} | "
                         f"{row['e2e_over_inference']:.1%} | {gain} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
