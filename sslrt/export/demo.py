"""Rebuild the shipped demo export from a checkpoint: `python -m sslrt.export.demo CHECKPOINT`.

The checkpoint is copied into sslrt/assets/demo and exported beside it (fp32 + INT8 graphs), its
path recorded relative to the export so the installed package finds it."""
from __future__ import annotations

import os
import shutil
import sys

from sslrt.export.targets import export_checkpoint
from sslrt.resolve import ASSETS, DEMO_CHECKPOINT, DEMO_EXPORT
from sslrt.store.atomic import write_json_atomic


def rebuild_demo_export(checkpoint: str) -> None:
    ASSETS.mkdir(parents=True, exist_ok=True)
    if os.path.abspath(checkpoint) != str(DEMO_CHECKPOINT):
        shutil.copyfile(checkpoint, DEMO_CHECKPOINT)
    exported = export_checkpoint(str(DEMO_CHECKPOINT), str(DEMO_EXPORT), targets=["onnx_int8"], simplify=True)
    manifest = exported.manifest
    manifest["checkpoint"]["path"] = os.path.relpath(DEMO_CHECKPOINT, DEMO_EXPORT)
    write_json_atomic(str(DEMO_EXPORT / "manifest.json"), manifest)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sslrt.export.demo CHECKPOINT")
    rebuild_demo_export(sys.argv[1])
