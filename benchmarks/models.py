#!/usr/bin/env python
"""Every model family side by side on this machine: ms/pair engine-only and end to end, fp32 and
INT8 (ONNX Runtime), each against its own PyTorch fp32 reference in the same run, and the INT8
localization agreement with fp32. Full width, random weights in each family's released layout
(../shared/golden/peers/make_peer_checkpoint.py).

    PYTHONPATH=. python benchmarks/models.py            # writes benchmarks/models.{md,json}
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("SSLRT_SHARED", REPO.parent / "shared"))
NAMED = {"ezvsl", "fnac"}  # their files cannot be told apart by their tensors: the family is given


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="ours,lvs,ezvsl,slavc,fnac,ssltie")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--e2e-pairs", type=int, default=32)
    ap.add_argument("--out-dir", default=str(REPO / "benchmarks"))
    args = ap.parse_args()
    maker_path = SHARED / "golden" / "peers" / "make_peer_checkpoint.py"
    if not maker_path.is_file():
        print(f"models: {maker_path} not found; set SSLRT_SHARED", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("make_peer_checkpoint", maker_path)
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)

    import torch

    from sslrt.export import export_checkpoint
    from sslrt.measure.bench import compare_models, models_markdown
    from sslrt.store.atomic import atomic_path, write_json_atomic

    with tempfile.TemporaryDirectory(prefix="sslrt_models_") as tmp:
        os.environ.setdefault("SSLRT_CACHE_DIR", str(Path(tmp) / "cache"))
        exports = []
        for family in args.families.split(","):
            ckpt = Path(tmp) / f"checkpoint_{family}.pth"
            torch.save(maker.build(family, "default", False), ckpt)
            print(f"models: exporting {family}", file=sys.stderr)
            exports.append(export_checkpoint(str(ckpt), str(Path(tmp) / family), targets=["onnx_int8"],
                                             family=family if family in NAMED else None).directory)
        result = compare_models(exports, ["onnxruntime"], ["fp32", "int8"], [int(b) for b in args.batch.split(",")],
                                e2e_pairs=args.e2e_pairs, min_seconds=args.seconds,
                                progress=lambda m: print(f"models: {m}", file=sys.stderr))
    out = Path(args.out_dir)
    write_json_atomic(str(out / "models.json"), result)
    with atomic_path(str(out / "models.md")) as tmp_md:
        Path(tmp_md).write_text(models_markdown(result))
    print(models_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
