"""ONNX -> TensorRT engine (TensorRT 10 Python API), for `sslrt export --format tensorrt`.

Thin on purpose: parse the ONNX file, one optimization profile over the batch axis, fp16 or fp32,
a workspace limit, a timing cache that is loaded before and saved after every build (so a
rebuild, or a build of another checkpoint of the same architecture, skips most tactic timing).
Profile parsing and the cache location are plain Python, usable and testable without TensorRT.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from sslrt.errors import SslrtError
from sslrt.export.fp16 import FP16_TOWERS

ENGINE_FILE = "sslrt_{precision}.engine"


@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


DEFAULT_PROFILE = BatchProfile(1, 8, 32)


def parse_profile(text: str | None) -> BatchProfile:
    """`--batch`: "min:opt:max" (e.g. 1:8:64) or one number N (a static batch N:N:N)."""
    if text is None:
        return DEFAULT_PROFILE
    text = str(text).strip()
    parts = text.split(":")
    if len(parts) not in (1, 3) or not all(re.fullmatch(r"\d+", p.strip()) for p in parts):
        raise SslrtError(f"--batch must be MIN:OPT:MAX (e.g. 1:8:64) or one batch size, got {text!r}")
    values = [int(p) for p in parts] * (3 if len(parts) == 1 else 1)
    lo, opt, hi = values
    if lo < 1:
        raise SslrtError(f"--batch {text}: batch sizes must be >= 1")
    if not lo <= opt <= hi:
        raise SslrtError(f"--batch {text}: needs MIN <= OPT <= MAX")
    if hi > 4096:
        raise SslrtError(f"--batch {text}: max batch {hi} is unreasonably large (> 4096)")
    return BatchProfile(lo, opt, hi)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def default_timing_cache(tensorrt_version: str, gpu_name: str) -> str:
    """One timing cache per TensorRT version and GPU model (a cache is only valid for both)."""
    from sslrt.store.cache import cache_root

    return str(cache_root() / "tensorrt" / f"timing-trt{_slug(tensorrt_version)}-{_slug(gpu_name)}.cache")


def build_engine(onnx_path: str, engine_path: str, precision: str = "fp16", profile: BatchProfile = DEFAULT_PROFILE,
                 workspace_mib: int | None = None, timing_cache: str | None = None, progress=None) -> dict:
    """Build and serialize an engine; returns what the manifest records about it."""
    from sslrt.engines.tensorrt import device_info, import_cudart, import_tensorrt

    step = progress or (lambda msg: None)
    trt = import_tensorrt()
    import_cudart()
    gpu = device_info()
    if precision not in ("fp16", "fp32"):
        raise SslrtError(f"TensorRT precision must be fp16 or fp32, not {precision}")
    if workspace_mib is not None and workspace_mib < 1:
        raise SslrtError("--workspace must be >= 1 MiB")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode, no flag needed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SslrtError(f"TensorRT could not parse {onnx_path}: {errors[:300]}")

    config = builder.create_builder_config()
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        # fp16 for the two ResNet towers, fp32 for the head after them (L2 norms, cosine map), as
        # in the fp16 ONNX graph: see FP16_TOWERS in export/onnx.py for why.
        flag = getattr(trt.BuilderFlag, "PREFER_PRECISION_CONSTRAINTS", None)
        if flag is not None:
            config.set_flag(flag)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                outputs = [layer.get_output(k) for k in range(layer.num_outputs)]
                if layer.name.startswith(FP16_TOWERS) or not outputs or any(o.dtype != trt.float32 for o in outputs):
                    continue
                layer.precision = trt.float32
                for k in range(layer.num_outputs):
                    layer.set_output_type(k, trt.float32)
    else:
        # TensorRT allows TF32 for fp32 tensors by default (10-bit mantissas in products on Ampere
        # and newer); "fp32" here means fp32, like the reference it is compared with.
        config.clear_flag(trt.BuilderFlag.TF32)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        name, dims = tensor.name, tuple(tensor.shape)[1:]  # every axis but the batch is static
        if any(d < 1 for d in dims):
            raise SslrtError(f"ONNX input '{name}' of {onnx_path} has dynamic non-batch axes {tuple(tensor.shape)}")
        opt_profile.set_shape(name, (profile.min, *dims), (profile.opt, *dims), (profile.max, *dims))
    config.add_optimization_profile(opt_profile)

    cache_path = timing_cache or default_timing_cache(trt.__version__, gpu["name"])
    cache_bytes = b""
    if os.path.isfile(cache_path):
        with open(cache_path, "rb") as f:
            cache_bytes = f.read()
    cache = config.create_timing_cache(cache_bytes)
    reused = bool(cache_bytes) and config.set_timing_cache(cache, ignore_mismatch=False)
    if cache_bytes and not reused:  # a cache of another TensorRT/GPU: start an empty one
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    elif not cache_bytes:
        config.set_timing_cache(cache, ignore_mismatch=False)

    step(f"building TensorRT {precision} engine (batch {profile}) on {gpu['name']}")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SslrtError("TensorRT could not build the engine (see the TensorRT log above)")
    seconds = time.perf_counter() - t0
    with open(engine_path, "wb") as f:
        f.write(serialized)

    from sslrt.store.atomic import atomic_path

    with atomic_path(cache_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(cache.serialize())  # the cache attached to the config, updated by the build
    return {
        "backend": "tensorrt",
        "precision": precision,
        "tensorrt_version": trt.__version__,
        "gpu": gpu,
        "profile": profile.to_dict(),
        "workspace_mib": workspace_mib,
        "timing_cache": {"path": cache_path, "reused": bool(reused)},
        "build_seconds": round(seconds, 1),
    }
