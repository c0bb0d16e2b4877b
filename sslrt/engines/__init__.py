"""Engines: one interface (base.Engine), one adapter per backend, and the table that picks one.

Everything backend-specific stays in this package: `create_engine` is the one place that maps a
backend name to an adapter, and `choose_backend` the one place that ranks them for `auto`.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Iterable

from sslrt.engines.base import Engine, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.config import GRAPHS
from sslrt.export.source import ModelSource
from sslrt.graphs import artifact_key

# Registry names. onnxruntime / torch run on the CPU; the others need a CUDA GPU.
BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "torch", "torch-cuda")
PRECISIONS = ("fp32", "fp16", "int8")
# What `auto` tries, best first (the PyTorch reference is never chosen: it is the yardstick).
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "onnxruntime")

INSTALL_HINTS = {
    "tensorrt": "TensorRT, cuda-python and a CUDA GPU: pip install 'sslrt[tensorrt-cu12]' (CUDA 12 driver) or 'sslrt[tensorrt-cu13]' (CUDA 13)",
    "onnxruntime": "onnxruntime: pip install 'sslrt[cpu]'",
    "onnxruntime-cuda": "onnxruntime-gpu and a CUDA GPU: pip uninstall -y onnxruntime && pip install 'sslrt[gpu-cu12]' (or 'sslrt[gpu-cu13]')",
    "onnxruntime-trt": "onnxruntime-gpu, TensorRT 10 (its TensorRT provider links libnvinfer.so.10) and a CUDA GPU: pip uninstall -y onnxruntime && pip install 'sslrt[tensorrt-cu12]' (or 'sslrt[tensorrt-cu13]')",
    "torch": "PyTorch: pip install 'sslrt[export]' (CPU: pip install torch==2.13.0 first)",
    "torch-cuda": "a CUDA build of PyTorch and a CUDA GPU: pip install torch (CUDA wheel) && pip install 'sslrt[export]'",
}


def backend_artifact_key(backend: str, precision: str, graph: str = "fused") -> str:
    """Which export artifact a backend runs: the TensorRT engine or an ONNX graph."""
    return artifact_key("tensorrt" if backend == "tensorrt" else "onnx", precision, graph)


def available_graphs(backend: str, source: ModelSource, precision: str = "fp32", progress=None) -> tuple[str, ...]:
    """Which of config.GRAPHS `backend` can run for this model (the encoders need an export that
    has them; a checkpoint is exported here, with `progress`, if it was not yet)."""
    if backend in ("torch", "torch-cuda"):
        return GRAPHS
    if backend == "onnxruntime-trt":
        precision = "fp32"  # the TensorRT provider builds from the fp32 graphs
    artifacts = source.exported(progress=progress).artifacts
    return tuple(g for g in GRAPHS if backend_artifact_key(backend, precision, g) in artifacts)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cuda_device_count() -> int:
    """CUDA devices visible, without torch: cuda-python's runtime, else the driver API (engines/cuda.py)."""
    from sslrt.engines.cuda import cuda_device_count as count

    return count()


def available_backends(include_torch: bool = False) -> set[str]:
    """Backends whose packages (and GPU, for the CUDA ones) are present. torch is only probed on
    request: importing it is slow, and the runtime path never needs it."""
    out: set[str] = set()
    if _has("onnxruntime"):
        out.add("onnxruntime")
        from sslrt.engines.onnxruntime import available_gpu_backends

        out |= available_gpu_backends()  # compiled in, its library loads, and a GPU
    if _has("tensorrt") and (_has("cuda.bindings") or _has("cuda.cudart")):
        from sslrt.engines.tensorrt import load_error

        if load_error() is None:  # TensorRT's libraries load and cuda-python's runtime sees a GPU
            out.add("tensorrt")
    if include_torch and _has("torch"):
        out.add("torch")
        import torch

        if torch.cuda.is_available():
            out.add("torch-cuda")
    return out


def choose_backend(available: Iterable[str], artifacts: Iterable[str], precision: str | None = None) -> tuple[str, str]:
    """`auto`: the best (backend, precision) given what is installed and what the export holds.

    TensorRT > ONNX Runtime CUDA > ONNX Runtime CPU. Without an explicit precision, TensorRT runs
    the engine it has (fp16 before fp32) and ONNX Runtime runs fp32.
    """
    available, artifacts = set(available), set(artifacts)
    for backend in AUTO_ORDER:
        if backend not in available:
            continue
        wanted = [precision] if precision else (["fp16", "fp32"] if backend == "tensorrt" else ["fp32"])
        for p in wanted:
            if backend_artifact_key(backend, p) in artifacts:
                return backend, p
    have = ", ".join(sorted(artifacts)) or "nothing"
    if precision and not any(a.endswith(f"_{precision}") for a in artifacts):
        raise SslrtError(f"the export has no {precision} model (has: {have}): re-export with --precision {precision}")
    raise BackendUnavailable(f"no installed backend can run this export (has: {have}; installed: "
                             f"{', '.join(sorted(available)) or 'none'}): pip install onnxruntime")


def _require(backend: str, available: set[str]) -> None:
    if backend not in available:
        raise BackendUnavailable(f"backend '{backend}' needs {INSTALL_HINTS[backend]}")


def _artifact(source: ModelSource, backend: str, precision: str, progress=None, graph: str = "fused"):
    exported = source.exported(progress=progress)
    key = backend_artifact_key(backend, precision, graph)
    entry = exported.artifacts.get(key)
    if entry is None:
        kind = "TensorRT engine" if backend == "tensorrt" else "ONNX model"
        what = "" if graph == "fused" else f" for the {graph} graph"
        have = ", ".join(sorted(exported.artifacts)) or "none"
        how = {"int8": "--int8", "fp16": "--fp16"}.get(precision, f"--precision {precision}")
        how = f"--format tensorrt --precision {precision}" if backend == "tensorrt" else how
        raise SslrtError(f"{exported.directory} has no {precision} {kind}{what} (has: {have}): re-export with `sslrt export CHECKPOINT {how}`")
    return exported.artifact_path(key), entry


def create_engine(backend: str, source: ModelSource, precision: str | None = "fp32", threads: int | None = None,
                  progress=None, cuda_graph: bool = False, notify: Callable[[str], None] | None = None,
                  available: set[str] | None = None, graph: str = "fused") -> Engine:
    """Open one graph of `source` on `backend` (or the best one, for "auto"); the engine is loaded and ready to run.

    `precision` None means fp32, except under auto (see choose_backend). `notify` receives the line
    that says what auto chose.
    """
    if backend not in BACKENDS:
        raise SslrtError(f"unknown backend '{backend}' (choose from: {', '.join(BACKENDS)})")
    if precision is not None and precision not in PRECISIONS:
        raise SslrtError(f"unknown precision '{precision}' (choose from: {', '.join(PRECISIONS)})")
    if backend == "auto":
        available = available_backends() if available is None else available
        backend, precision = choose_backend(available, source.exported(progress=progress).artifacts, precision)
        if notify:
            notify(f"backend auto: chose {backend} {precision} (installed: {', '.join(sorted(available))})")
    if backend == "tensorrt" and precision is None:  # the engine the export has, fp16 first
        _require(backend, available_backends() if available is None else available)
        artifacts = source.exported(progress=progress).artifacts
        precision = "fp16" if "tensorrt_fp16" in artifacts else "fp32"
    precision = precision or "fp32"
    if cuda_graph and backend not in ("tensorrt", "torch-cuda"):
        raise SslrtError(f"--cuda-graph is supported by the tensorrt and torch-cuda backends, not '{backend}'")

    if backend in ("onnxruntime", "onnxruntime-cuda", "onnxruntime-trt"):
        from sslrt.engines.onnxruntime import OnnxRuntimeEngine, providers_for

        if not _has("onnxruntime"):
            raise BackendUnavailable(f"backend '{backend}' needs {INSTALL_HINTS['onnxruntime']}")
        if backend != "onnxruntime":
            _require(backend, available_backends() if available is None else available)
        # The TensorRT execution provider builds its own fp16 engine from the fp32 graph.
        onnx_precision = "fp32" if backend == "onnxruntime-trt" else precision
        path, entry = _artifact(source, backend, onnx_precision, progress, graph)
        engine = OnnxRuntimeEngine(path, precision=precision, threads=threads, backend=backend,
                                   providers=providers_for(backend, precision, inputs=entry.get("inputs")))
    elif backend == "tensorrt":
        from sslrt.engines.tensorrt import TensorRTEngine

        _require(backend, available_backends() if available is None else available)
        path, entry = _artifact(source, backend, precision, progress, graph)
        engine = TensorRTEngine(path, entry, cuda_graph=cuda_graph)
    else:  # torch, torch-cuda
        from sslrt.engines.torch import TorchEngine

        device = "cuda" if backend == "torch-cuda" else "cpu"
        if device == "cpu" and precision != "fp32":
            raise SslrtError(f"backend 'torch' runs fp32 on CPU, not {precision} (fp16: --backend torch-cuda)")
        if precision == "int8":
            raise SslrtError("backend 'torch-cuda' runs fp32 or fp16, not int8 (int8: --backend onnxruntime)")
        engine = TorchEngine(source.checkpoint_for_reference(), precision=precision, device=device, threads=threads,
                             channels_last=device == "cuda", cuda_graph=cuda_graph, graph=graph)
    engine.load()
    return engine


__all__ = ["Engine", "TensorSpec", "BACKENDS", "PRECISIONS", "AUTO_ORDER", "backend_artifact_key", "available_backends",
           "available_graphs", "choose_backend", "create_engine", "cuda_device_count"]
