"""OpenVINO adapter (registry name `openvino`): the CPU plugin running the exported graphs.

It reads what `sslrt export` writes, without conversion step: the ONNX graphs (fp32, the fp16
graph, the INT8 QDQ graphs; OpenVINO's low-precision transformations turn the QDQ pairs into
int8 kernels) and, where the export has them, OpenVINO IR files (`openvino_int8*`: NNCF's
post-training quantization, see sslrt/export/openvino.py).

Properties, as measured on a 2-core AMD EPYC (benchmarks/openvino_modes.py):
- fp32 batches that are split across the throughput streams run a model with the wide 3x3
  convolutions rewritten as Winograd F(2x2, 3x3) (sslrt/engines/openvino_winograd.py): the direct
  kernels already run at the FMA peak, the rewrite does 2.25x fewer multiplications there
  (~1.25x at batch 8 on the full-width model; heatmaps within ~1e-6 of the direct graph and of
  the paper's own code). It costs ~0.8 s more compiling, paid with the first split batch, and
  ~300 MiB more resident (its own transformed weights: peak 604 vs 307 MiB at batch 2,
  benchmarks/cpu/scaling.md); a narrow model has nothing to rewrite. A batch of one stays on the
  direct graph: on its one two-thread request the rewrite measured 61-63 ms in some processes and
  79-84 ms in others, at times switching mid-run, with both threads fully busy on their own cores
  either way (the machine's state; the direct graph: 68 and 71-72 ms), while the split streams
  measured 54-56 ms in every state. The state is the machine's, not the process's: six fresh
  processes in a row measured the rewrite at 61-62 ms, four started two minutes later at 79-81, and
  two runs ten seconds apart measured 62 and 80 (the reference, PyTorch eager: 92 and 97 ms). A
  per-process choice at load would therefore be stale within seconds; choosing per call would
  need both models compiled (~300 MiB more) and probing the slower one continually. Rewriting
  only the 512-channel convolutions (6 of the 14) at batch 1 measured 61 ms in the fast state and
  73.5 in the slow one (all 14: 61 and 80; direct: 68 and 70.8; 2.5 minutes of alternating rounds,
  mostly in the slow state), so it too loses while the machine is slow; the split streams keep
  all 14 (54.8 ms/pair at batch 8, against 58.3 with the 512-channel ones only).
  `winograd=False`, or SSLRT_OPENVINO_WINOGRAD=0, keeps the direct graph everywhere.
- INFERENCE_PRECISION_HINT f32 always. The CPU plugin's default on a CPU with bf16 instructions
  is bf16, which is not fp32 (heatmaps off by ~1e-2) and, for the INT8 graphs, also slower.
- a batch of one runs on a LATENCY-compiled model (one stream, every thread on the one request);
- a batch of two or more is split across the streams of a THROUGHPUT-compiled model (one infer
  request per stream, run concurrently, in rounds of at most PAIRS_PER_REQUEST (4) pairs per
  request so that memory does not grow with the batch) and the outputs concatenated in order: on
  two cores, two one-thread streams keep both cores busier than one two-thread stream (the
  convolutions of a 14x14 map do not split well across threads). Handing out slices of 1 or 2
  pairs to whichever stream is free (an AsyncInferQueue), so that a stream slowed by the decoding
  threads takes fewer, measured no faster end to end (INT8, batch 8, 1024 px: 26.3-26.5 against
  25.9-26.2 ms/pair; engine only 19.3-19.8 against 19.2-19.5; again at 360 px: 23.80 against
  23.81).
- each stream is also a lane (`run_lane`): `localize_many` runs whole batches on one stream's
  request each, two batches at once, with no barrier at the end of every call (see
  Localizer.localize_many for the measured gain). Its stream threads are therefore not pinned
  (ENABLE_CPU_PINNING false): the vision and the audio models each pin their stream 0 to the same
  core, and two lanes running the two models at once shared that core while the other idled
  (e2e INT8 batch 8: 28.6 against 26.6 ms/pair pinned, at 1024 px). For split batches pinning
  measured about equal: end to end 24.7 against 24.9 ms/pair (INT8, 360 px); engine only, batch 8,
  interleaved (benchmarks/openvino_pinning.py), unpinned against pinned: INT8 19.05 vs 18.90, 19.65
  vs 19.31 and 19.21 vs 19.36 ms/pair in three runs, fp32 55.5 vs 55.1.
Both compiled models have a dynamic batch axis (a static batch of one measured no faster: 68.7 vs
68.8 ms fp32, 20.4 vs 20.5 ms INT8); each is compiled on first use and kept.
`threads` sets INFERENCE_NUM_THREADS (and caps the streams). No torch, and openvino is imported
only when an engine loads or the probe looks for it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import warnings

import numpy as np

from sslrt.engines.base import Artifact, BackendRow, Engine, EngineOptions, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError, first_line

INSTALL = "openvino: pip install 'sslrt[openvino]'"
LATENCY, THROUGHPUT = "LATENCY", "THROUGHPUT"
# Batches below this run on the latency model; from it on, split across the throughput streams.
SPLIT_FROM = 2
# A split batch runs in rounds of at most this many pairs per stream: ms/pair is flat from 4
# (benchmarks/cpu/scaling.md) while the intermediate tensors grow with the slice (fp32 with the
# Winograd model: peak 744 MiB at batch 8, 1936 MiB at batch 64 in one request per stream).
PAIRS_PER_REQUEST = 4

_core = None
_core_lock = threading.Lock()


def core():
    """The process's one ov.Core (it owns the plugin and its thread pools)."""
    global _core
    with _core_lock:
        if _core is None:
            try:
                import openvino as ov
            except ImportError:
                raise BackendUnavailable(f"backend 'openvino' needs {INSTALL}") from None
            _core = ov.Core()
        return _core


def compile_properties(hint: str, threads: int | None = None, streams: int | None = None) -> dict:
    """The CPU plugin's properties for one compiled model (see the module's docstring)."""
    props = {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        props["INFERENCE_NUM_THREADS"] = int(threads)
    if hint == THROUGHPUT:
        cores = threads or os.cpu_count() or 1
        props["NUM_STREAMS"] = int(streams or max(1, min(cores, 2)))
        # Stream threads free to move: each compiled model pins its stream i to the same cores, so
        # lanes running the vision and the audio model at once would share those cores (run_lane)
        props["ENABLE_CPU_PINNING"] = False
    return props


class OpenVinoEngine(Engine):
    backend = "openvino"

    def __init__(self, model_path: str, precision: str = "fp32", threads: int | None = None,
                 split_from: int | None = SPLIT_FROM, streams: int | None = None, winograd: bool | None = None) -> None:
        self.model_path = model_path
        self.precision = precision
        # None: for fp32 (the INT8 and fp16 graphs' weights are not plain fp32 constants anyway)
        self.winograd = precision == "fp32" if winograd is None else bool(winograd)
        self.winograd_rewritten = 0  # convolutions rewritten in the throughput model
        self._threads = threads
        self._streams = streams
        # None: every batch on the latency model (also where there is one stream to split across)
        self._split_from = split_from if compile_properties(THROUGHPUT, threads, streams)["NUM_STREAMS"] > 1 else None
        self._model = None
        self._compiled: dict[str, object] = {}  # hint -> CompiledModel
        self._requests: dict[str, list] = {}  # hint -> its infer requests
        self._outputs: list[str] = []
        self._lock = threading.Lock()
        self._lane_locks: list = []  # per throughput request, made with it

    def load(self) -> None:
        if self._model is not None:
            return
        ov_core = core()
        try:
            model = ov_core.read_model(self.model_path)
        except Exception as exc:
            raise SslrtError(f"OpenVINO cannot read the model {self.model_path}: {first_line(exc)[:200]}") from None
        self._model = model
        self._outputs = [o.get_any_name() for o in model.outputs]
        self._compile(LATENCY)

    def _compile(self, hint: str):
        """The compiled model of `hint` and its requests, compiled on first use."""
        if hint not in self._compiled:
            props = compile_properties(hint, self._threads, self._streams)
            model = self._model
            if hint == THROUGHPUT and self.winograd:
                model = self._winograd_model()
            try:
                compiled = core().compile_model(model, "CPU", props)
            except Exception as exc:
                raise SslrtError(f"OpenVINO cannot compile {self.model_path}: {first_line(exc)[:200]}") from None
            n = 1 if hint == LATENCY else int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._requests[hint] = [compiled.create_infer_request() for _ in range(max(1, n))]
            if hint == THROUGHPUT:  # one per stream's request: a lane runs on it alone (run_lane)
                self._lane_locks = [threading.Lock() for _ in self._requests[hint]]
            self._compiled[hint] = compiled
        return self._compiled[hint]

    def describe(self) -> str:
        text = super().describe()
        if self.winograd_rewritten:
            text += f" (split batches: {self.winograd_rewritten} convolutions as Winograd F(2x2,3x3))"
        return text

    def _winograd_model(self):
        """A copy of the read model with the Winograd rewrite; the direct model (and a warning)
        where the rewrite fails, e.g. on an OpenVINO whose Python opset differs."""
        from sslrt.engines.openvino_winograd import apply_winograd

        model = self._model.clone()
        try:
            self.winograd_rewritten = apply_winograd(model)
            return model
        except Exception as exc:
            warnings.warn(f"OpenVINO: the Winograd rewrite failed ({first_line(exc)[:160]}); running the direct graph")
            self.winograd_rewritten = 0
            return self._model

    def _specs(self, ports) -> list[TensorSpec]:
        specs = []
        for port in ports:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            specs.append(TensorSpec(port.get_any_name(), shape, str(port.get_element_type().to_dtype())))
        return specs

    @property
    def inputs(self) -> list[TensorSpec]:
        self.load()
        return self._specs(self._model.inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        self.load()
        return self._specs(self._model.outputs)

    @property
    def compiled_hints(self) -> tuple[str, ...]:
        """The compiled models held (for tests and the first-call accounting)."""
        return tuple(self._compiled)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        batch = len(next(iter(feeds.values())))
        with self._lock:  # the latency request and the split runs: one call at a time
            if self._split_from is not None and batch >= self._split_from:
                self._compile(THROUGHPUT)
                with contextlib.ExitStack() as held:  # every stream's request, none running a lane
                    for lock in self._lane_locks:
                        held.enter_context(lock)
                    return self._run_split(self._requests[THROUGHPUT], feeds, batch)
            request = self._requests[LATENCY][0]  # batches below split_from (all where nothing is split)
            request.infer(feeds, share_inputs=True)
            return {name: request.get_tensor(name).data.copy() for name in self._outputs}

    @property
    def lanes(self) -> int:
        """The throughput streams, where batches are split across them (else 1)."""
        if self._split_from is None:
            return 1
        return int(compile_properties(THROUGHPUT, self._threads, self._streams)["NUM_STREAMS"])

    def run_lane(self, feeds: dict[str, np.ndarray], lane: int) -> dict[str, np.ndarray]:
        """The whole batch on the request of one throughput stream, in rounds of at most
        PAIRS_PER_REQUEST pairs (the memory of a split batch's slices)."""
        if self._split_from is None:
            return self.run(feeds)
        self.load()
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        batch = len(next(iter(feeds.values())))
        with self._lock:
            self._compile(THROUGHPUT)
            requests, locks = self._requests[THROUGHPUT], self._lane_locks
        lane = lane % len(requests)
        with locks[lane]:  # a split across this one stream: its rounds, one after the other
            return self._run_split(requests[lane:lane + 1], feeds, batch)

    def _run_split(self, requests: list, feeds: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
        """Contiguous slices of the batch, one per stream, run concurrently, in rounds of at most
        PAIRS_PER_REQUEST pairs per request; outputs in order."""
        streams = min(len(requests), batch)
        rounds = -(-batch // (streams * PAIRS_PER_REQUEST))
        bounds = np.linspace(0, batch, rounds * streams + 1).round().astype(int)  # even slices, every round full
        parts: dict[str, list] = {name: [] for name in self._outputs}
        for r in range(rounds):
            used = []
            try:
                for request, lo, hi in zip(requests, bounds[r * streams:], bounds[r * streams + 1:(r + 1) * streams + 1]):
                    request.start_async({k: v[lo:hi] for k, v in feeds.items()}, share_inputs=True)
                    used.append(request)
            finally:  # never leave a request running on the caller's arrays (share_inputs)
                for request in used:
                    request.wait()
            for name in self._outputs:  # copied: the next round writes into the same output tensors
                parts[name].extend(request.get_tensor(name).data.copy() for request in used)
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def close(self) -> None:
        with self._lock, contextlib.ExitStack() as held:  # after the lanes running now
            for lock in self._lane_locks:
                held.enter_context(lock)
            self._requests.clear()
            self._compiled.clear()
            self._model = None


# -- the rows of the backend table ------------------------------------------------------------
def _installed() -> bool:
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


def _factory(artifact: Artifact, options: EngineOptions) -> OpenVinoEngine:
    # SSLRT_OPENVINO_WINOGRAD=0 (or false, no, off) keeps the direct graph
    off = os.environ.get("SSLRT_OPENVINO_WINOGRAD", "").strip().lower() in ("0", "false", "no", "off")
    winograd = False if off else None
    return OpenVinoEngine(artifact.path, precision=artifact.precision, threads=options.threads, winograd=winograd)


ROWS = (
    BackendRow("openvino", "onnx", ("fp32", "fp16", "int8"), "cpu", _installed, INSTALL, _factory, auto_rank=25),
)
