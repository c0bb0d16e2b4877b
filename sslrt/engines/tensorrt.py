"""TensorRT adapter (registry name `tensorrt`): a serialized engine built by `sslrt export --format
tensorrt` (export/tensorrt.py, on Polygraphy), run through the name-based tensor API of TensorRT 10
and 11. Any graph: the fused one or an encoder; the inputs and outputs are whatever the engine has.

Everything is allocated once in load(): one device buffer per I/O tensor sized for the
optimization profile's max batch, a pinned host buffer beside each (so the copies are truly
asynchronous), one CUDA stream. run() copies in, enqueues (execute_async_v3) or replays a CUDA
graph, copies out, synchronizes once.

CUDA graphs (`cuda_graph=True`): one per batch size (engines/cuda.py CudaGraphCache), each captured
on its own execution context whose input shapes are set once and never changed, so a replay never
runs kernels captured for another shape (a 4, 3, 4 sequence captures 4, captures 3, replays 4).
The contexts share one scratch buffer (ExecutionContextAllocationStrategy.USER_MANAGED), which is
safe because they run one at a time on one stream.

CUDA calls go through cuda-python (`cuda.bindings.runtime`, `cuda.cudart` in releases before 12.8),
not pycuda: cuda-python ships as wheels that carry the runtime they bind, so `pip install` is all a
user needs, with no local CUDA toolkit or compiler (pycuda builds against one).

Nothing here imports torch; tensorrt and cuda-python are imported only when an engine is loaded,
so `check_engine_compatibility` (a pure function of the manifest entry) works anywhere.
"""
from __future__ import annotations

import ctypes

import numpy as np

from sslrt.engines.base import Artifact, BackendRow, Engine, EngineOptions, TensorSpec
from sslrt.engines.cuda import CudaGraphCache, import_cudart
from sslrt.errors import BackendUnavailable, SslrtError

REEXPORT = "re-export on this machine: sslrt export CHECKPOINT --format tensorrt"
INSTALL = "pip install 'sslrt[tensorrt-cu12]' (CUDA 12 driver) or 'sslrt[tensorrt-cu13]' (CUDA 13)"


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"backend 'tensorrt' needs TensorRT: {INSTALL}") from None
    except OSError as exc:  # the bindings are there but libnvinfer is not (or is another major)
        raise BackendUnavailable(f"backend 'tensorrt': TensorRT's libraries do not load ({str(exc)[:160]}): {INSTALL}") from None
    return trt


def load_error() -> str | None:
    """None where the tensorrt backend can run here: TensorRT imports (its libraries load) and
    cuda-python's runtime sees a GPU (it fails where cuda-python's CUDA major is newer than the driver's)."""
    try:
        import_tensorrt()
    except BackendUnavailable as exc:
        return str(exc)
    from sslrt.engines.cuda import probe

    found = probe()
    if found.via != "cudart":
        if found.devices:
            return (f"cuda-python cannot use the GPU the driver reports ({found.cudart_error}; driver CUDA "
                    f"{found.driver_version // 1000 if found.driver_version else '?'}): install the set of your driver's CUDA major, {INSTALL}")
        return "no CUDA GPU found"
    return None if found.devices else "no CUDA GPU found"


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

    def __init__(self, engine_path: str, entry: dict, cuda_graph: bool = False, max_graphs: int = 8) -> None:
        self.engine_path = engine_path
        self.entry = entry
        self.precision = entry.get("precision", "fp32")
        profile = entry.get("profile") or {}
        self.min_batch, self.opt_batch, self.max_batch = (int(profile.get(k, 1)) for k in ("min", "opt", "max"))
        self.cuda_graph = cuda_graph
        self._graphs = CudaGraphCache(max_graphs)
        self._context = None
        self._engine = None

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        if self._engine is not None:
            return
        trt = self._trt = import_tensorrt()
        cudart = self._cudart = import_cudart()
        check_engine_compatibility(self.entry, trt.__version__, device_info())
        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        with open(self.engine_path, "rb") as f:
            self._engine = self._runtime.deserialize_cuda_engine(f.read())
        if self._engine is None:
            raise SslrtError(f"TensorRT could not load {self.engine_path}: {REEXPORT}")
        self._stream = check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._tensors = {}  # name -> (is_input, shape with batch -1, numpy dtype, device ptr, host ptr, host array)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if not inputs:
            raise SslrtError(f"TensorRT engine {self.engine_path} has no inputs: {REEXPORT}")
        # The batch range is the engine's own profile (the manifest records the same).
        lo, _, hi = (tuple(d) for d in self._engine.get_tensor_profile_shape(inputs[0], 0))
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        for name in names:
            is_input = name in inputs
            shape = tuple(self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            full = (self.max_batch, *shape[1:])
            nbytes = int(np.prod(full)) * dtype.itemsize
            device_ptr = check(cudart.cudaMalloc(nbytes), "cudaMalloc")
            host_ptr = check(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            host = np.ctypeslib.as_array((ctypes.c_byte * nbytes).from_address(int(host_ptr))).view(dtype).reshape(full)
            self._tensors[name] = (is_input, shape, dtype, int(device_ptr), int(host_ptr), host)
        self._scratch = None
        if self.cuda_graph:
            # Contexts made per batch size share one scratch buffer (see the module docstring).
            size = int(self._engine.device_memory_size_v2)
            self._scratch = (check(cudart.cudaMalloc(max(size, 1)), "cudaMalloc"), size)
        else:
            self._context = self._new_context()

    def _new_context(self, batch: int | None = None):
        """An execution context bound to the shared I/O buffers (and, for a CUDA graph, to the
        shared scratch buffer with its input shapes fixed to `batch`)."""
        trt = self._trt
        if self._scratch is None:
            context = self._engine.create_execution_context()
        else:
            context = self._engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            context.set_device_memory(int(self._scratch[0]), self._scratch[1])
        if context is None:
            raise SslrtError("TensorRT could not create an execution context (out of GPU memory?)")
        for name, (is_input, shape, _, device_ptr, _, _) in self._tensors.items():
            if not context.set_tensor_address(name, device_ptr):
                raise SslrtError(f"TensorRT refused the buffer of tensor '{name}'")
            if batch is not None and is_input and not context.set_input_shape(name, (batch, *shape[1:])):
                raise SslrtError(f"TensorRT refused batch {batch} for '{name}' (profile {self.min_batch}..{self.max_batch})")
        return context

    def _free_graph(self, graph) -> None:
        _, cuda_graph, graph_exec = graph
        self._cudart.cudaGraphExecDestroy(graph_exec)
        self._cudart.cudaGraphDestroy(cuda_graph)

    def close(self) -> None:
        if self._engine is None:
            return
        cudart = self._cudart
        check(cudart.cudaStreamSynchronize(self._stream))
        for graph in self._graphs.clear():
            self._free_graph(graph)
        self._context = None
        for _, _, _, device_ptr, host_ptr, _ in self._tensors.values():
            cudart.cudaFree(device_ptr)
            cudart.cudaFreeHost(host_ptr)
        if self._scratch is not None:
            cudart.cudaFree(self._scratch[0])
            self._scratch = None
        cudart.cudaStreamDestroy(self._stream)
        self._tensors = {}
        self._engine = self._runtime = None

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
    def _capture(self, n: int):
        cudart = self._cudart
        context = self._new_context(n)
        stream_handle = int(self._stream)
        # One plain enqueue first: TensorRT updates internal state on the first run of a shape.
        if not context.execute_async_v3(stream_handle):
            raise SslrtError("TensorRT execution failed")
        check(cudart.cudaStreamSynchronize(self._stream))
        check(cudart.cudaStreamBeginCapture(self._stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        ok = context.execute_async_v3(stream_handle)
        graph = check(cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
        if not ok:
            cudart.cudaGraphDestroy(graph)
            raise SslrtError("TensorRT execution failed during CUDA graph capture")
        graph_exec = check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        for old in self._graphs.put(n, (context, graph, graph_exec)):
            self._free_graph(old)

    def _enqueue(self, n: int) -> None:
        if self.cuda_graph:
            if self._graphs.action(n) == "capture":
                self._capture(n)  # its warm-up run already computed this batch; the replay recomputes it
            _, _, graph_exec = self._graphs.get(n)
            check(self._cudart.cudaGraphLaunch(graph_exec, self._stream), "cudaGraphLaunch")
            return
        for name, (is_input, shape, *_rest) in self._tensors.items():
            if is_input and not self._context.set_input_shape(name, (n, *shape[1:])):
                raise SslrtError(f"TensorRT refused batch {n} for '{name}' (profile {self.min_batch}..{self.max_batch})")
        if not self._context.execute_async_v3(int(self._stream)):
            raise SslrtError("TensorRT execution failed")

    def _run_chunk(self, feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, (is_input, shape, dtype, device_ptr, host_ptr, host) in self._tensors.items():
            if is_input:
                host[:n] = feeds[name]
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
        missing = [name for name, t in self._tensors.items() if t[0] and name not in feeds]
        if missing:
            raise SslrtError(f"TensorRT engine {self.engine_path}: missing inputs {missing}")
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
def _factory(artifact: Artifact, options: EngineOptions) -> TensorRTEngine:
    return TensorRTEngine(artifact.path, artifact.entry, cuda_graph=options.cuda_graph)


def _available() -> bool:
    import importlib.util

    try:
        if importlib.util.find_spec("tensorrt") is None:
            return False
    except (ImportError, ValueError):
        return False
    return load_error() is None


ROWS = (
    BackendRow("tensorrt", "tensorrt", ("fp16", "fp32"), "cuda", _available,
               f"TensorRT, cuda-python and a CUDA GPU: {INSTALL}", _factory,
               auto_rank=10, auto_precisions=("fp16", "fp32"), cuda_graph=True),
)
