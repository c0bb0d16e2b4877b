"""Checkpoint -> export directory (ONNX files + manifest.json). Exporting needs torch; reading
an export directory (manifest.py) does not."""
