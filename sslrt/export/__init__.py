"""Checkpoint -> export directory (ONNX graphs, TensorRT engines, manifest.json). Needs torch;
reading an export (sslrt.store) does not. One table of targets (targets.py), one builder each."""
from sslrt.export.targets import EXPORT_TARGETS, export_checkpoint, select_targets, targets_table

__all__ = ["EXPORT_TARGETS", "export_checkpoint", "select_targets", "targets_table"]
