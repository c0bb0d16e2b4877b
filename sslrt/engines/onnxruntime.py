"""ONNX Runtime adapter: the CPU provider, and the CUDA and TensorRT execution providers where
onnxruntime-gpu is installed (registry names onnxruntime, onnxruntime-cuda, onnxruntime-trt).

fp16 runs an fp16-converted graph whose inputs and outputs stay float32 (written by
`sslrt export --fp16`), so every caller feeds and reads float32 whatever the precision.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache

import numpy as np

from sslrt.engines.base import Artifact, BackendRow, Engine, EngineOptions, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError, first_line

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def providers_for(backend: str, precision: str = "fp32") -> list:
    """The execution providers of a registry name, best first; CPU last as ONNX Runtime's own fallback
    for the few nodes a GPU provider does not take."""
    if backend == "onnxruntime-cuda":
        return [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE"}), "CPUExecutionProvider"]
    if backend == "onnxruntime-trt":
        from sslrt.store.cache import cache_root

        trt_options = {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(cache_root() / "ort-trt"), "trt_timing_cache_enable": True}
        return [("TensorrtExecutionProvider", trt_options), "CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, onnx_path: str, precision: str = "fp32", providers: list | None = None,
                 threads: int | None = None, backend: str = "onnxruntime") -> None:
        self.backend = backend
        self.onnx_path = onnx_path
        self.precision = precision
        self._providers = providers
        self._threads = threads
        self._session = None

    def load(self) -> None:
        if self._session is not None:
            return
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("backend 'onnxruntime' needs onnxruntime: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # No busy-waiting between runs: sslrt runs several sessions (the two encoders) and
        # preprocessing threads in one process, and a spinning pool steals the cores they need
        # (measured: end to end at batch 8, INT8, 117 -> 81 ms per pair with the encoders).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self._threads:
            opts.intra_op_num_threads = self._threads
        providers = self._providers or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(self.onnx_path, sess_options=opts, providers=providers)
        except Exception as exc:
            raise SslrtError(f"ONNX model cannot be loaded: {self.onnx_path}: {first_line(exc)[:200]}") from None
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if wanted != "CPUExecutionProvider" and self._session.get_providers()[0] != wanted:
            # ONNX Runtime falls back to the CPU silently (no GPU, missing CUDA/cuDNN libraries).
            self._session = None
            raise BackendUnavailable(f"backend '{self.backend}': ONNX Runtime could not start {wanted} "
                                     "(no CUDA GPU, or CUDA/cuDNN libraries missing): pip install 'sslrt[gpu]'")

    def _specs(self, nodes) -> list[TensorSpec]:
        return [TensorSpec(n.name, tuple(d if isinstance(d, int) else None for d in n.shape), _ORT_TYPES.get(n.type, n.type))
                for n in nodes]

    @property
    def inputs(self) -> list[TensorSpec]:
        self.load()
        return self._specs(self._session.get_inputs())

    @property
    def outputs(self) -> list[TensorSpec]:
        self.load()
        return self._specs(self._session.get_outputs())

    @property
    def device(self) -> str:
        if self._session is None:
            return "?"
        return "cuda" if self._session.get_providers()[0] in _GPU_PROVIDERS else "cpu"

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        return dict(zip(names, values))

    def close(self) -> None:
        self._session = None


# -- the rows of the backend table ------------------------------------------------------------
def _installed() -> bool:
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        return False


@lru_cache(maxsize=None)
def _gpu_provider_usable(provider: str) -> bool:
    if not _installed():
        return False
    import onnxruntime

    if provider not in onnxruntime.get_available_providers():
        return False
    from sslrt.engines.cuda import cuda_device_count

    return cuda_device_count() > 0


def _factory(artifact: Artifact, options: EngineOptions) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(artifact.path, precision=artifact.precision, threads=options.threads, backend=artifact.backend,
                             providers=providers_for(artifact.backend, artifact.precision))


ROWS = (
    BackendRow("onnxruntime", "onnx", ("fp32", "fp16", "int8"), "cpu", _installed,
               "onnxruntime: pip install onnxruntime", _factory, auto_rank=30),
    BackendRow("onnxruntime-cuda", "onnx", ("fp32", "fp16"), "cuda", lambda: _gpu_provider_usable("CUDAExecutionProvider"),
               "onnxruntime-gpu and a CUDA GPU: pip install 'sslrt[gpu]' (it replaces the CPU onnxruntime)", _factory,
               auto_rank=20, precision_hint=" (int8: --backend onnxruntime)"),
    # The TensorRT execution provider builds its own fp16 engine from the fp32 graph.
    BackendRow("onnxruntime-trt", "onnx", ("fp32", "fp16"), "cuda", lambda: _gpu_provider_usable("TensorrtExecutionProvider"),
               "onnxruntime-gpu built with TensorRT, TensorRT and a CUDA GPU: pip install 'sslrt[gpu]' 'sslrt[tensorrt]'",
               _factory, artifact_precision={"fp16": "fp32"}, precision_hint=" (int8: --backend onnxruntime)"),
)

