"""TensorRT adapter (registry name `tensorrt`): a serialized engine built by `sslrt export --format
tensorrt`, run through TensorRT 10's name-based tensor API.

Everything is allocated once in load(): one device buffer per I/O tensor sized for the
optimization profile's max batch, a pinned host buffer beside each (so the copies are truly
asynchronous), one CUDA stream. run() copies in, enqueues (execute_async_v3) or replays a CUDA
graph captured for one fixed batch size, copies out, synchronizes once.

CUDA calls go through cuda-python (`cuda.bindings.runtime`, `cuda.cudart` in releases before 12.8),
not pycuda: cuda-python ships as wheels that carry the runtime they bind, so `pip install` is all a
user needs, with no local CUDA toolkit or compiler (pycuda builds against one).

Nothing here imports torch; tensorrt and cuda-python are imported only when an engine is loaded,
so `check_engine_compatibility` (a pure function of the manifest entry) works anywhere.
"""
from __future__ import annotations

import ctypes
import importlib.util

import numpy as np

from sslrt.engines.base import Artifact, BackendRow, Engine, EngineOptions, TensorSpec
from sslrt.engines.cuda import import_cudart
from sslrt.errors import BackendUnavailable, SslrtError

REEXPORT = "re-export on this machine: sslrt export CHECKPOINT --format tensorrt"


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("backend 'tensorrt' needs TensorRT: pip install 'sslrt[tensorrt]'") from None
    return trt


def check(result, what: str = "CUDA call"):
    """cuda-python returns (error, value...) tuples: raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        cudart = import_cudart()
        _, message = cudart.cudaGetErrorString(err)
        raise SslrtError(f"{what} failed: {message.decode() if isinstance(message, bytes) else message}")
    return values[0] if len(values) == 1 else (values or None)


def device_info(device: int = 0) -> dict:
    """Name and compute capability of a CUDA device, as the manifest records them."""
    cudart = import_cudart()
    prop = check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return {"name": name, "compute_capability": f"{prop.major}.{prop.minor}"}


def check_engine_compatibility(entry: dict, tensorrt_version: str, gpu: dict) -> None:
    """Refuse (one line, saying to re-export) an engine built by another TensorRT or for another GPU.

    A serialized engine is specific to the TensorRT version that built it and to the GPU model it
    was tuned on; TensorRT's own refusal is a log message and a None, which this check replaces.
    """
    built = entry.get("tensorrt_version")
    built_gpu = entry.get("gpu") or {}
    name = entry.get("file", "engine")
    if not built or not built_gpu:
        raise SslrtError(f"TensorRT engine {name} has no TensorRT version / GPU in its manifest entry: {REEXPORT}")
    if built != tensorrt_version:
        raise SslrtError(f"TensorRT engine {name} was built with TensorRT {built}, this machine has TensorRT "
                         f"{tensorrt_version}: {REEXPORT}")
    if (built_gpu.get("name"), str(built_gpu.get("compute_capability"))) != (gpu.get("name"), str(gpu.get("compute_capability"))):
        raise SslrtError(f"TensorRT engine {name} was built for {built_gpu.get('name')} (sm {built_gpu.get('compute_capability')}), "
                         f"this machine has {gpu.get('name')} (sm {gpu.get('compute_capability')}): {REEXPORT}")


class TensorRTEngine(Engine):
    backend = "tensorrt"

    def __init__(self, engine_path: str, entry: dict, cuda_graph: bool = False) -> None:
        self.engine_path = engine_path
        self.entry = entry
        self.precision = entry.get("precision", "fp32")
        profile = entry.get("profile") or {}
        self.min_batch, self.opt_batch, self.max_batch = (int(profile.get(k, 1)) for k in ("min", "opt", "max"))
        self.cuda_graph = cuda_graph
        self.graph_batch: int | None = None  # the batch size the CUDA graph was captured for
        self._context = None

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        if self._context is not None:
            return
        trt = import_tensorrt()
        cudart = self._cudart = import_cudart()
        check_engine_compatibility(self.entry, trt.__version__, device_info())
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        with open(self.engine_path, "rb") as f:
            self._engine = self._runtime.deserialize_cuda_engine(f.read())
        if self._engine is None:
            raise SslrtError(f"TensorRT could not load {self.engine_path}: {REEXPORT}")
        self._context = self._engine.create_execution_context()
        self._stream = check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._tensors = {}  # name -> (is_input, shape with batch -1, numpy dtype, device ptr, host ptr, host array)
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            shape = tuple(self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            full = (self.max_batch, *shape[1:])
            nbytes = int(np.prod(full)) * dtype.itemsize
            device_ptr = check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            host_ptr = check(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            host = np.ctypeslib.as_array((ctypes.c_byte * nbytes).from_address(int(host_ptr))).view(dtype).reshape(full)
            self._tensors[name] = (is_input, shape, dtype, int(device_ptr), int(host_ptr), host)
            if not self._context.set_tensor_address(name, int(device_ptr)):
                raise SslrtError(f"TensorRT refused the buffer of tensor '{name}'")
        if not any(t[0] for t in self._tensors.values()):
            raise SslrtError(f"TensorRT engine {self.engine_path} has no inputs: {REEXPORT}")
        self._graph_exec = None
        self._graph = None

    def close(self) -> None:
        if self._context is None:
            return
        cudart = self._cudart
        check(cudart.cudaStreamSynchronize(self._stream))
        if self._graph_exec is not None:
            cudart.cudaGraphExecDestroy(self._graph_exec)
            cudart.cudaGraphDestroy(self._graph)
        for _, _, _, device_ptr, host_ptr, _ in self._tensors.values():
            cudart.cudaFree(device_ptr)
            cudart.cudaFreeHost(host_ptr)
        cudart.cudaStreamDestroy(self._stream)
        self._tensors = {}
        self._context = self._engine = self._runtime = None

    # -- specs ---------------------------------------------------------------------------
    def _specs(self, inputs: bool) -> list[TensorSpec]:
        self.load()
        return [TensorSpec(n, (None, *t[1][1:]), t[2].name) for n, t in self._tensors.items() if t[0] == inputs]

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._specs(True)

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._specs(False)

    @property
    def device(self) -> str:
        return "cuda"

    # -- inference -------------------------------------------------------------------------
    def _enqueue(self, n: int) -> None:
        cudart = self._cudart
        stream_handle = int(self._stream)
        if self.cuda_graph and n == (self.graph_batch or n):
            if self._graph_exec is None:
                self.graph_batch = n
                # One plain enqueue first: TensorRT updates internal state on the first run of a shape.
                if not self._context.execute_async_v3(stream_handle):
                    raise SslrtError("TensorRT execution failed")
                check(cudart.cudaStreamSynchronize(self._stream))
                check(cudart.cudaStreamBeginCapture(self._stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
                      "cudaStreamBeginCapture")
                ok = self._context.execute_async_v3(stream_handle)
                self._graph = check(cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
                if not ok:
                    raise SslrtError("TensorRT execution failed during CUDA graph capture")
                self._graph_exec = check(cudart.cudaGraphInstantiate(self._graph, 0), "cudaGraphInstantiate")
            check(cudart.cudaGraphLaunch(self._graph_exec, self._stream), "cudaGraphLaunch")
            return
        if not self._context.execute_async_v3(stream_handle):
            raise SslrtError("TensorRT execution failed")

    def _run_chunk(self, feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, (is_input, shape, dtype, device_ptr, host_ptr, host) in self._tensors.items():
            if not is_input:
                continue
            host[:n] = feeds[name]
            if not self._context.set_input_shape(name, (n, *shape[1:])):
                raise SslrtError(f"TensorRT refused batch {n} for '{name}' (profile {self.min_batch}:{self.opt_batch}:{self.max_batch})")
            check(cudart.cudaMemcpyAsync(device_ptr, host_ptr, n * host[0].nbytes, h2d, self._stream), "cudaMemcpyAsync")
        self._enqueue(n)
        outputs = {}
        for name, (is_input, shape, dtype, device_ptr, host_ptr, host) in self._tensors.items():
            if not is_input:
                check(cudart.cudaMemcpyAsync(host_ptr, device_ptr, n * host[0].nbytes, d2h, self._stream), "cudaMemcpyAsync")
                outputs[name] = host
        check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return {name: host[:n].astype(np.float32, copy=True) for name, host in outputs.items()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        inputs = {name: np.asarray(feeds[name], dtype=self._tensors[name][2]) for name, t in self._tensors.items() if t[0]}
        total = len(next(iter(inputs.values())))
        pieces: list[dict] = []
        for start in range(0, total, self.max_batch):
            chunk = {k: v[start:start + self.max_batch] for k, v in inputs.items()}
            n = len(next(iter(chunk.values())))
            if n < self.min_batch:  # pad to the profile's minimum with copies of the last sample
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], self.min_batch - n, axis=0)]) for k, v in chunk.items()}
            out = self._run_chunk(chunk, len(next(iter(chunk.values()))))
            pieces.append({k: v[:n] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}


# -- the row of the backend table -------------------------------------------------------------
def _available() -> bool:
    def has(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    if not (has("tensorrt") and (has("cuda.bindings") or has("cuda.cudart"))):
        return False
    from sslrt.engines.cuda import cuda_device_count

    return cuda_device_count() > 0


def _factory(artifact: Artifact, options: EngineOptions) -> TensorRTEngine:
    return TensorRTEngine(artifact.path, artifact.entry, cuda_graph=options.cuda_graph)


ROWS = (
    BackendRow("tensorrt", "tensorrt", ("fp16", "fp32"), "cuda", _available,
               "TensorRT, cuda-python and a CUDA GPU: pip install 'sslrt[tensorrt]'", _factory,
               auto_rank=10, auto_precisions=("fp16", "fp32"), cuda_graph=True),
)
