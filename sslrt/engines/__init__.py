"""Engines: one interface (base.Engine), one adapter per backend, and the table that picks one.

Everything backend-specific stays in this package.
"""
from __future__ import annotations

import importlib.util

from sslrt.engines.base import Engine, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.config import GRAPHS
from sslrt.export.source import ModelSource
from sslrt.graphs import artifact_key

BACKENDS = ("onnxruntime", "torch")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_graphs(backend: str, source: ModelSource, precision: str = "fp32") -> tuple[str, ...]:
    """Which of config.GRAPHS `backend` can run for this model (the encoders need an export that has them)."""
    if backend == "torch":
        return GRAPHS
    exported = source.exported()
    return tuple(g for g in GRAPHS if artifact_key("onnx", precision, g) in exported.artifacts)


def create_engine(backend: str, source: ModelSource, precision: str = "fp32", threads: int | None = None,
                  progress=None, graph: str = "fused") -> Engine:
    """Open one graph of `source` on `backend`; the engine is loaded and ready to run."""
    if backend == "onnxruntime":
        from sslrt.engines.onnxruntime import OnnxRuntimeEngine

        if not _has("onnxruntime"):
            raise BackendUnavailable("backend 'onnxruntime' needs onnxruntime: pip install onnxruntime")
        exported = source.exported(progress=progress)
        path = exported.artifact_path(artifact_key("onnx", precision, graph))
        if path is None:
            have = ", ".join(sorted({a["precision"] for a in exported.artifacts.values() if a.get("backend") == "onnxruntime"})) or "none"
            raise SslrtError(f"{exported.directory} has no {precision} ONNX model for the {graph} graph "
                             f"(precisions it has: {have}): re-export with that precision")
        engine = OnnxRuntimeEngine(path, precision=precision, threads=threads)
    elif backend == "torch":
        from sslrt.engines.torch import TorchEngine

        if precision != "fp32":
            raise SslrtError(f"backend 'torch' runs fp32 on CPU, not {precision}")
        engine = TorchEngine(source.checkpoint_for_reference(), threads=threads, graph=graph)
    else:
        raise SslrtError(f"unknown backend '{backend}' (choose from: {', '.join(BACKENDS)})")
    engine.load()
    return engine


__all__ = ["Engine", "TensorSpec", "BACKENDS", "available_graphs", "create_engine"]
