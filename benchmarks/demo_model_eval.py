#!/usr/bin/env python
"""The demo model against random weights of the same width, on the trainer's held-out set, through
`sslrt eval` with ONNX Runtime fp32 and INT8 (the product path, not the trainer's torch path).

    PYTHONPATH=. python benchmarks/demo_model_eval.py     # writes benchmarks/demo_model_eval.{md,json}

Held-out set: 150 two-object pictures of generator seed 1000003 (300 samples), the set of
sslrt/assets/demo/TRAINING.md, written in the IS3 layout.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from sslrt.resolve import DEMO_EXPORT
    from sslrt.export import export_checkpoint
    from sslrt.synthetic.checkpoints import make_checkpoint
    from sslrt.synthetic.scenes import generate_samples
    from sslrt.synthetic.scenes.is3 import write_scene_set

    work = Path(tempfile.mkdtemp(prefix="sslrt_demo_eval_"))
    write_scene_set(generate_samples(150, 1_000_003, sizes=(224, 320, 448)), work / "heldout")
    random = export_checkpoint(str(make_checkpoint(work / "random8.pth.tar", width=8, seed=0)), str(work / "random8"))
    rows = []
    for name, model, precision in [("demo model", DEMO_EXPORT, "fp32"), ("demo model", DEMO_EXPORT, "int8"),
                                   ("random weights, width 8", random.directory, "fp32")]:
        out = work / f"eval_{len(rows)}"
        cmd = [sys.executable, "-m", "sslrt.cli", "eval", "-d", "is3", "--root", str(work / "heldout"), "-m", str(model),
               "--precision", precision, "-o", str(out), "--json", str(out) + ".json"]
        subprocess.run(cmd, check=True, cwd=REPO)
        summary = json.loads(Path(str(out) + ".json").read_text())
        rows.append({"weights": name, "backend": "onnxruntime", "precision": precision, "samples": summary["evaluated"],
                     **summary["metrics"]})
    (REPO / "benchmarks" / "demo_model_eval.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Demo model vs random weights: `sslrt eval --dataset is3` on the held-out scenes", "",
             "300 samples, 150 two-object pictures (generator seed 1000003), ONNX Runtime on the CPU. Percent.", "",
             "| weights | precision | cIoU@0.5 | AUC | iIoU | iAUC | cIoU_adap |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['weights']} | {r['precision']} | {r['cIoU']:.1f} | {r['AUC']:.1f} | {r['iIoU']:.1f} | {r['iAUC']:.1f} | "
                     f"{r['cIoU_adap']:.1f} |")
    # Retrieval is not reported: the two samples of an IS3 picture share one image, so every
    # audio->image query has a tie with its twin (ties count against the true pair).
    (REPO / "benchmarks" / "demo_model_eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
