"""Engines: one interface (base.Engine), one adapter per backend, and the table that picks one.

Everything backend-specific stays in this package.
"""
from __future__ import annotations

import importlib.util

from sslrt.engines.base import Engine, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.export.source import ModelSource

BACKENDS = ("onnxruntime", "torch")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def create_engine(backend: str, source: ModelSource, precision: str = "fp32", threads: int | None = None,
                  progress=None) -> Engine:
    """Open `source` on `backend`; the engine is loaded and ready to run."""
    if backend == "onnxruntime":
        from sslrt.engines.onnxruntime import OnnxRuntimeEngine

        if not _has("onnxruntime"):
            raise BackendUnavailable("backend 'onnxruntime' needs onnxruntime: pip install onnxruntime")
        exported = source.exported(progress=progress)
        key = f"onnx_{precision}"
        path = exported.artifact_path(key)
        if path is None:
            have = ", ".join(k[len("onnx_"):] for k in exported.artifacts if k.startswith("onnx_")) or "none"
            raise SslrtError(f"{exported.directory} has no {precision} ONNX model (has: {have}): re-export with that precision")
        engine = OnnxRuntimeEngine(path, precision=precision, threads=threads)
    elif backend == "torch":
        from sslrt.engines.torch import TorchEngine

        if precision != "fp32":
            raise SslrtError(f"backend 'torch' runs fp32 on CPU, not {precision}")
        engine = TorchEngine(source.checkpoint_for_reference(), threads=threads)
    else:
        raise SslrtError(f"unknown backend '{backend}' (choose from: {', '.join(BACKENDS)})")
    engine.load()
    return engine


__all__ = ["Engine", "TensorSpec", "BACKENDS", "create_engine"]
