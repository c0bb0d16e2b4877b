"""ONNX Runtime adapter: the CPU provider, and the CUDA and TensorRT execution providers where
onnxruntime-gpu is installed (registry names onnxruntime, onnxruntime-cuda, onnxruntime-trt).

fp16 runs an fp16-converted graph whose inputs and outputs stay float32 (written by
`sslrt export --fp16`), so every caller feeds and reads float32 whatever the precision.

CPU provider: a batch of two or more runs as two halves at once, each on a session of half the
threads (`_run_split`, as the OpenVINO adapter splits batches across its throughput streams); a
batch of one runs on the session of all the threads. Measured on 2 cores (halves of one thread,
interleaved A/B, full width): INT8 batch 8, engine only 26.5-29.0 -> 25.1-27.5 ms/pair and end to
end (1024 px) 29.6-30.4 -> 28.6-29.3; fp32 engine only equal (68.4-69.0 vs 67.7-69.6), end to
end 76.4-78.5 -> 73.9-78.3; the outputs bit-identical. Each intra-op parallel section of a run
ends at a barrier where one thread waits for the other, and a preprocessing thread that takes a
core from one of them stalls both; two one-thread runs have no barrier to stall at. Not measured
on more cores (there, halves of cores // 2 threads each). The session of half the threads also
serves two lanes (`run_lane`): `localize_many` runs whole batches on it from two threads, two
batches at once, with no barrier at the end of every call (Localizer.localize_many has the
measured gain); a lane runs its batch in pieces of at most half of it, the memory of a split batch.

GPU providers:
- availability is decided by loading: ONNX Runtime lists the providers compiled into the package
  (`get_available_providers`), not the ones that can run; a provider whose shared library cannot
  load here (CUDA 12 vs 13 libraries, cuDNN, TensorRT's libnvinfer.so.10 that every current
  onnxruntime-gpu's TensorRT provider links) is not available (`provider_load_error`);
- the CUDA provider runs with TF32 off (`use_tf32` 0: "fp32" means fp32, as for every other
  backend) and through IO binding: inputs are copied once into device buffers kept per batch size,
  outputs are written to device buffers and copied back once, with no per-run allocations;
- the TensorRT provider gets its engine-cache folder created and explicit profile shapes for every
  input of the graph (from the manifest), so one engine serves batches 1..max instead of a rebuild
  per new batch size.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sslrt.engines.base import Artifact, BackendRow, Engine, EngineOptions, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError, first_line
from sslrt.machine import usable_cores

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# registry name -> the execution provider it needs
GPU_BACKEND_PROVIDERS = {"onnxruntime-cuda": "CUDAExecutionProvider", "onnxruntime-trt": "TensorrtExecutionProvider"}
_PROVIDER_LIBRARY = {"CUDAExecutionProvider": "onnxruntime_providers_cuda",
                     "TensorrtExecutionProvider": "onnxruntime_providers_tensorrt"}
# onnxruntime-gpu's TensorRT provider (1.19 .. 1.31, CUDA 12 and 13 builds alike) links TensorRT 10.
ORT_TENSORRT_LIBRARIES = ("libnvinfer.so.10", "libnvonnxparser.so.10")


# -- availability by loading --------------------------------------------------------------------
def _library_path(stem: str) -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
    for name in (f"lib{stem}.so", f"{stem}.dll"):
        path = os.path.join(capi, name)
        if os.path.isfile(path):
            return path
    return None


def preload_gpu_libraries() -> None:
    """Make the CUDA/cuDNN libraries of the nvidia-* wheels (onnxruntime-gpu[cuda,cudnn]) and
    TensorRT's (tensorrt-cu12/-cu13 wheels) loadable by the providers, quietly: onnxruntime's
    preload_dlls prints its warnings on stdout, which belongs to the user's JSON."""
    try:
        import onnxruntime
    except ImportError:
        return
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                preload(cuda=True, cudnn=True, msvc=False)
            except Exception:
                pass
    # TensorRT's pip wheels keep libnvinfer in site-packages/tensorrt_libs, outside the loader's
    # search path; loaded globally first, it satisfies the TensorRT provider's dependency by soname.
    import importlib.util

    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for name in ORT_TENSORRT_LIBRARIES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with contextlib.suppress(OSError):
                    ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))


def library_load_error(path: str | None, preload: tuple[str, ...] = ()) -> str | None:
    """None where the shared library at `path` loads (with its dependencies), else why not (the
    loader's message names the missing library, e.g. 'libnvinfer.so.10: cannot open shared object file')."""
    if path is None:
        return "not part of this ONNX Runtime package"
    try:
        for lib in preload:
            ctypes.CDLL(lib, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
        ctypes.CDLL(path)
        return None
    except OSError as exc:
        return str(exc).splitlines()[0][:300]


def provider_load_error(provider: str) -> str | None:
    """None where `provider` is compiled into the installed ONNX Runtime and its library loads here."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    if provider not in onnxruntime.get_available_providers():
        return f"{provider} is not compiled into this ONNX Runtime package ({onnxruntime.__version__})"
    if provider not in _PROVIDER_LIBRARY:
        return None
    preload_gpu_libraries()
    shared = _library_path("onnxruntime_providers_shared")
    return library_load_error(_library_path(_PROVIDER_LIBRARY[provider]), (shared,) if shared else ())


def gpu_backend_status(compiled: set[str], gpus: int, load_error) -> dict[str, str | None]:
    """For each ONNX Runtime GPU registry name: None where it can run, else why not.

    `compiled`: the providers ONNX Runtime reports; `load_error(provider)`: None where that
    provider's library loads (provider_load_error). A provider counts only if it is compiled in,
    its library loads, and there is a GPU."""
    status = {}
    for backend, provider in GPU_BACKEND_PROVIDERS.items():
        if provider not in compiled:
            status[backend] = f"{provider} is not in this ONNX Runtime (install onnxruntime-gpu)"
        elif not gpus:
            status[backend] = "no CUDA GPU found"
        else:
            status[backend] = load_error(provider)
    return status


def available_gpu_backends(gpus: int | None = None) -> set[str]:
    """The ONNX Runtime GPU registry names that can run here (probed by loading their libraries)."""
    try:
        import onnxruntime
    except ImportError:
        return set()
    compiled = set(onnxruntime.get_available_providers()) & set(_GPU_PROVIDERS)
    if not compiled:
        return set()
    if gpus is None:
        from sslrt.engines.cuda import cuda_device_count

        gpus = cuda_device_count()
    return {b for b, why in gpu_backend_status(compiled, gpus, provider_load_error).items() if why is None}


# -- provider options ---------------------------------------------------------------------------
def _dims(shape, batch: int) -> str:
    return "x".join(str(batch if d is None or not isinstance(d, int) else d) for d in shape)


def trt_profile_options(inputs: list | None, profile=None) -> dict:
    """trt_profile_min/opt/max_shapes for every input of the graph (name and shape from the manifest
    entry's `inputs`, batch axis None), over the batch profile (default 1:8:32)."""
    if not inputs:
        return {}
    from sslrt.engines.base import DEFAULT_PROFILE

    profile = profile or DEFAULT_PROFILE
    specs = [(i["name"], list(i["shape"])) if isinstance(i, dict) else (i.name, list(i.shape)) for i in inputs]
    return {f"trt_profile_{key}_shapes": ",".join(f"{name}:{_dims(shape, batch)}" for name, shape in specs)
            for key, batch in (("min", profile.min), ("opt", profile.opt), ("max", profile.max))}


def trt_engine_cache_dir() -> str:
    """The TensorRT provider's engine and timing cache folder, created (the provider does not create it)."""
    from sslrt.store.cache import cache_root

    path = str(cache_root() / "ort-trt")
    os.makedirs(path, exist_ok=True)
    return path


def providers_for(backend: str, precision: str = "fp32", inputs: list | None = None, profile=None) -> list:
    """The execution providers of a registry name, best first; CPU last as ONNX Runtime's own fallback
    for the few nodes a GPU provider does not take. `inputs` (the manifest entry's) give the
    TensorRT provider its profile shapes."""
    # TF32 off: fp32 means fp32 (the fp16 graph keeps its head in fp32 too, see export/onnx.py).
    cuda_options = {"cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "0"}
    if backend == "onnxruntime-cuda":
        return [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
    if backend == "onnxruntime-trt":
        trt_options = {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": trt_engine_cache_dir(), "trt_timing_cache_enable": True,
                       **trt_profile_options(inputs, profile)}
        return [("TensorrtExecutionProvider", trt_options), ("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


# CPU provider: batches from this size on run as two halves at once (see the module's docstring).
SPLIT_FROM = 2


def _halves(feeds: dict[str, np.ndarray], total: int) -> list[dict[str, np.ndarray]]:
    """The batch's first half (the larger where `total` is odd) and second half, contiguous
    float32; one part for a batch of one."""
    middle = (total + 1) // 2
    return [{k: np.ascontiguousarray(v[lo:hi], dtype=np.float32) for k, v in feeds.items()}
            for lo, hi in ((0, middle), (middle, total)) if hi > lo]


def _provider_name(p) -> str:
    return p[0] if isinstance(p, tuple) else p


class OnnxRuntimeEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, onnx_path: str, precision: str = "fp32", providers: list | None = None,
                 threads: int | None = None, backend: str = "onnxruntime", io_binding: bool | None = None,
                 max_batch: int | None = None, split_from: int | None = SPLIT_FROM) -> None:
        """`io_binding` None: on for the CUDA provider. `max_batch`: run() splits larger batches
        (the TensorRT provider's profile maximum). `split_from`: on the CPU provider, batches of
        this size or more run as two halves at once (None: never)."""
        self.backend = backend
        self.onnx_path = onnx_path
        self.precision = precision
        self._providers = providers
        self._threads = threads
        self._session = None
        self._io_binding = io_binding
        self.max_batch = max_batch
        if max_batch is None and providers:
            for p in providers:
                if isinstance(p, tuple) and "trt_profile_max_shapes" in p[1]:
                    first = p[1]["trt_profile_max_shapes"].split(",")[0]
                    self.max_batch = int(first.rsplit(":", 1)[1].split("x")[0])
        self._bound: dict = {}  # batch -> (IOBinding, {input: OrtValue}, {output: OrtValue})
        self._split_from = split_from
        self._halves = None  # (session of half the threads, its one helper thread), made on the first split batch
        self._halves_lock = threading.Lock()

    def load(self) -> None:
        if self._session is not None:
            return
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("backend 'onnxruntime' needs onnxruntime: pip install 'sslrt[cpu]'") from None
        opts = self._session_options(self._threads)
        providers = self._providers or ["CPUExecutionProvider"]
        wanted = _provider_name(providers[0])
        if wanted in _GPU_PROVIDERS:
            preload_gpu_libraries()
        try:
            self._session = ort.InferenceSession(self.onnx_path, sess_options=opts, providers=providers)
        except Exception as exc:
            raise SslrtError(f"ONNX model cannot be loaded: {self.onnx_path}: {first_line(exc)[:200]}") from None
        if wanted != "CPUExecutionProvider" and self._session.get_providers()[0] != wanted:
            # ONNX Runtime falls back to the CPU silently (no GPU, missing CUDA/cuDNN/TensorRT libraries).
            self._session = None
            why = provider_load_error(wanted) or "no CUDA GPU, or a CUDA/cuDNN library missing"
            hint = next((r.install_hint for r in ROWS if r.name == self.backend), "onnxruntime-gpu")
            raise BackendUnavailable(f"backend '{self.backend}': ONNX Runtime could not start {wanted} ({why}); needs {hint}")
        if self._io_binding is None:
            self._io_binding = self._session.get_providers()[0] == "CUDAExecutionProvider"

    @staticmethod
    def _session_options(threads: int | None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # No busy-waiting between runs: sslrt runs several sessions (the two encoders) and
        # preprocessing threads in one process, and a spinning pool steals the cores they need
        # (measured: end to end at batch 8, INT8, 117 -> 81 ms per pair with the encoders).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        return opts

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

    # -- inference ------------------------------------------------------------------------
    def _binding(self, n: int):
        """IO binding for batch n: device buffers for every input and output, made once per batch size."""
        if n not in self._bound:
            import onnxruntime as ort

            device = "cuda" if self.device == "cuda" else "cpu"
            binding = self._session.io_binding()
            ins, outs = {}, {}
            for node in self._session.get_inputs():
                shape = [n if not isinstance(d, int) else d for d in node.shape]
                ins[node.name] = value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, device, 0)
                binding.bind_ortvalue_input(node.name, value)
            for node in self._session.get_outputs():
                shape = [n if not isinstance(d, int) else d for d in node.shape]
                outs[node.name] = value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, device, 0)
                binding.bind_ortvalue_output(node.name, value)
            self._bound[n] = (binding, ins, outs)
        return self._bound[n]

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(feeds.values())))
        binding, ins, outs = self._binding(n)
        for name, value in ins.items():
            value.update_inplace(np.ascontiguousarray(feeds[name], dtype=np.float32))  # one host -> device copy
        self._session.run_with_iobinding(binding)
        # one device -> host copy each (a copy on the CPU too: the bound buffer is rewritten by the next run)
        return {name: np.array(value.numpy(), copy=True) for name, value in outs.items()}

    def _run_once(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._io_binding:
            return self._run_bound(feeds)
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        return dict(zip(names, values))

    def _half_threads(self) -> int | None:
        """Threads of each half of a split batch; None where batches are not split (split_from
        None, a GPU provider, one thread or core)."""
        if self._split_from is None or self._io_binding or self.device != "cpu" or self.max_batch:
            return None
        cores = self._threads or usable_cores()
        return cores // 2 if cores >= 2 else None

    def _half_session(self, threads: int):
        """(session of `threads` threads, its one helper thread), made on first use."""
        with self._halves_lock:
            if self._halves is None:
                import onnxruntime as ort

                session = ort.InferenceSession(self.onnx_path, sess_options=self._session_options(threads),
                                               providers=["CPUExecutionProvider"])
                self._halves = (session, ThreadPoolExecutor(max_workers=1, thread_name_prefix="sslrt-ort-half"))
            return self._halves

    def _run_split(self, feeds: dict[str, np.ndarray], total: int, threads: int) -> dict[str, np.ndarray]:
        """The batch's two halves at once: the second on the helper thread, the first on this one,
        both on the session of `threads` threads (ONNX Runtime's run is thread-safe)."""
        session, helper = self._half_session(threads)
        names = [o.name for o in session.get_outputs()]
        halves = _halves(feeds, total)
        second = helper.submit(session.run, names, halves[1])
        try:
            first = session.run(names, halves[0])
        finally:  # never return while the helper still runs on this call's arrays
            rest = second.result()
        return {name: np.concatenate([a, b]) for name, a, b in zip(names, first, rest)}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        total = len(next(iter(feeds.values())))
        if self._split_from is not None and total >= self._split_from:
            threads = self._half_threads()
            if threads:
                return self._run_split(feeds, total, threads)
        if not self.max_batch or total <= self.max_batch:
            return self._run_once(feeds)
        pieces = [self._run_once({k: v[i:i + self.max_batch] for k, v in feeds.items()}) for i in range(0, total, self.max_batch)]
        return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}

    @property
    def lanes(self) -> int:
        """Two where batches are split in halves (the CPU provider on two cores or more), else 1."""
        self.load()
        return 2 if self._half_threads() else 1

    def run_lane(self, feeds: dict[str, np.ndarray], lane: int) -> dict[str, np.ndarray]:
        """The whole batch on the session of half the threads, in this thread, in pieces of at most
        a split batch's half (the same memory); any lane, as ONNX Runtime's run is thread-safe."""
        self.load()
        threads = self._half_threads()
        if not threads:
            return self.run(feeds)
        session, _ = self._half_session(threads)
        names = [o.name for o in session.get_outputs()]
        pieces = [session.run(names, half) for half in _halves(feeds, len(next(iter(feeds.values()))))]
        return {name: np.concatenate([p[i] for p in pieces]) for i, name in enumerate(names)}

    def close(self) -> None:
        self._bound = {}
        self._session = None
        with self._halves_lock:
            halves, self._halves = self._halves, None
        if halves is not None:
            halves[1].shutdown(wait=True)


__all__ = ["OnnxRuntimeEngine", "providers_for", "available_gpu_backends", "provider_load_error", "gpu_backend_status",
           "trt_profile_options", "trt_engine_cache_dir", "library_load_error"]


# -- the rows of the backend table ------------------------------------------------------------
def _installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):
        return False


def _gpu_usable(backend: str):
    return lambda: _installed() and backend in available_gpu_backends()


def _factory(artifact: Artifact, options: EngineOptions) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(artifact.path, precision=artifact.precision, threads=options.threads, backend=artifact.backend,
                             providers=providers_for(artifact.backend, artifact.precision, inputs=artifact.entry.get("inputs")))


ROWS = (
    BackendRow("onnxruntime", "onnx", ("fp32", "fp16", "int8"), "cpu", _installed,
               "onnxruntime: pip install 'sslrt[cpu]'", _factory, auto_rank=30),
    BackendRow("onnxruntime-cuda", "onnx", ("fp32", "fp16"), "cuda", _gpu_usable("onnxruntime-cuda"),
               "onnxruntime-gpu and a CUDA GPU: pip uninstall -y onnxruntime && pip install 'sslrt[gpu-cu12]' "
               "(or 'sslrt[gpu-cu13]')", _factory, auto_rank=20, precision_hint=" (int8: --backend onnxruntime)"),
    # The TensorRT execution provider builds its own fp16 engine from the fp32 graph.
    BackendRow("onnxruntime-trt", "onnx", ("fp32", "fp16"), "cuda", _gpu_usable("onnxruntime-trt"),
               "onnxruntime-gpu, TensorRT 10 (its TensorRT provider links libnvinfer.so.10) and a CUDA GPU: "
               "pip uninstall -y onnxruntime && pip install 'sslrt[tensorrt-cu12]' (or 'sslrt[tensorrt-cu13]')",
               _factory, artifact_precision={"fp16": "fp32"}, precision_hint=" (int8: --backend onnxruntime)"),
)
