"""The PyTorch reference backend: the family's network in eager fp32, the yardstick of parity.

On a CUDA GPU (registry name torch-cuda) it also runs fp16 (the towers under autocast, the heads
in fp32, as the fp16 ONNX graph and the TensorRT engine do) in channels_last memory format, fp32 in
the plain NCHW format (channels_last fp32 measured 0.9x of NCHW on an H100:
benchmarks/gpu/gpu_latency_nvidia_h100_80gb_hbm3.md), and optionally replays CUDA graphs captured
per batch size. Each of sslrt.graphs.GRAPHS can be run.
"""
from __future__ import annotations

import importlib.util

import numpy as np

from sslrt.engines.base import Artifact, BackendRow, Engine, EngineOptions, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.graphs import GRAPH_IO, input_shapes

INSTALL_TORCH = "PyTorch: pip install 'sslrt[export]' (CPU: pip install torch==2.13.0 first)"
INSTALL_TORCH_CUDA = "a CUDA build of PyTorch and a CUDA GPU: pip install torch (CUDA wheel) && pip install 'sslrt[export]'"


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, checkpoint_path: str, precision: str = "fp32", device: str = "cpu", threads: int | None = None,
                 channels_last: bool = False, cuda_graph: bool = False, graph: str = "fused", spec=None) -> None:
        self.checkpoint_path = checkpoint_path
        self.precision = precision
        self.graph = graph
        self.spec = spec
        self._device = device
        self._threads = threads
        self.channels_last = channels_last
        self.cuda_graph = cuda_graph
        self._model = None
        from sslrt.engines.cuda import CudaGraphCache

        self._graphs = CudaGraphCache()  # batch -> (CUDAGraph, static inputs, static output)
        if device == "cuda":
            self.backend = "torch-cuda"
        if precision not in ("fp32", "fp16"):
            raise SslrtError(f"backend '{self.backend}' runs fp32 or fp16, not {precision}")
        if device != "cuda" and (precision != "fp32" or cuda_graph):
            raise SslrtError("fp16 and CUDA graphs of the torch backend need device 'cuda' (backend torch-cuda)")

    @classmethod
    def from_model(cls, model, checkpoint_path: str, graph: str = "fused", spec=None) -> "TorchEngine":
        """Wrap an already loaded network on the CPU (the exporter's, to avoid loading it twice)."""
        import torch

        engine = cls(checkpoint_path, graph=graph, spec=spec)
        engine._model, engine._torch, engine.config = model.eval(), torch, model.cfg
        return engine

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
        except ImportError:
            raise BackendUnavailable(f"backend 'torch' needs {INSTALL_TORCH}") from None
        if self._device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(f"backend 'torch-cuda' needs {INSTALL_TORCH_CUDA} (torch.cuda.is_available() is False)")
        from sslrt.model import load_family_checkpoint

        if self._threads:
            torch.set_num_threads(self._threads)
        # The family the export recorded (ezvsl and fnac files cannot be told apart by their keys).
        model, self.config, self.spec, _ = load_family_checkpoint(self.checkpoint_path,
                                                                  self.spec.name if self.spec is not None else None)
        model = model.to(self._device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self._device == "cuda":
            torch.backends.cudnn.benchmark = True
            # The reference is fp32: keep TF32 off so "fp32" means fp32 on Ampere and newer too.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self._model = model
        self._torch = torch

    @property
    def inputs(self) -> list[TensorSpec]:
        if self.spec is None:
            self.load()  # the checkpoint says which family (and so which input shapes) it is
        shapes = input_shapes(self.spec)
        return [TensorSpec(name, (None, *shapes[name])) for name in GRAPH_IO[self.graph][0]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec(name, (None,)) for name in GRAPH_IO[self.graph][1]]

    @property
    def device(self) -> str:
        return self._device

    def _to_device(self, array: np.ndarray):
        torch = self._torch
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if self._device == "cuda":
            t = t.pin_memory().to(self._device, non_blocking=True)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def _forward(self, *inputs):
        torch, model = self._torch, self._model
        if self.precision != "fp16":
            return {"fused": model, "vision": model.encode_image, "audio": model.encode_audio}[self.graph](*inputs)
        # The towers under fp16 autocast (cache_enabled=False: autocast's weight-cast cache must
        # not outlive a CUDA graph capture); the heads in fp32, as in the fp16 ONNX graph and the
        # TensorRT engine (an fp16 cosine map is quantized to 2.4e-4 steps near 0.5).
        towers = {"fused": (model.image_features, model.audio_features), "vision": (model.image_features,),
                  "audio": (model.audio_features,)}[self.graph]
        with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            features = [tower(x) for tower, x in zip(towers, inputs)]
        features = [f.float() for f in features]
        head = {"fused": model.head, "vision": model.image_head, "audio": model.audio_head}[self.graph]
        return head(*features)

    def _capture(self, inputs) -> tuple:
        """Capture one forward pass for this batch size (warm-up on a side stream first, as
        torch.cuda.graphs requires); one graph per batch size, so a size change never replays a
        graph of another shape."""
        torch = self._torch
        static = [x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._forward(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(*static)
        captured = (graph, static, static_out)
        self._graphs.put(int(inputs[0].shape[0]), captured)  # an evicted graph is freed with its last reference
        return captured

    def run_on_device(self, *tensors):
        """The graph on torch tensors already on the engine's device, without host copies (the
        model-only path that GPU latency benchmarks time). With `cuda_graph`, replays the graph
        captured for this batch size (capturing it on the first call of that size)."""
        self.load()
        with self._torch.inference_mode():
            if not self.cuda_graph:
                return self._forward(*tensors)
            batch = int(tensors[0].shape[0])
            captured = self._capture(list(tensors)) if self._graphs.action(batch) == "capture" else self._graphs.get(batch)
            graph, static, static_out = captured
            for s, x in zip(static, tensors):
                s.copy_(x)
            graph.replay()
            return static_out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        names_in, names_out = GRAPH_IO[self.graph]
        out = self.run_on_device(*(self._to_device(feeds[n]) for n in names_in))
        return {names_out[0]: out.float().cpu().numpy()}

    def close(self) -> None:
        self._model = None
        self._graphs.clear()


# -- the rows of the backend table ------------------------------------------------------------
def _torch_installed() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _torch_cuda() -> bool:
    if not _torch_installed():
        return False
    import torch

    return bool(torch.cuda.is_available())


def _factory(artifact: Artifact, options: EngineOptions) -> TorchEngine:
    cuda = artifact.backend == "torch-cuda"
    return TorchEngine(artifact.path, precision=artifact.precision, device="cuda" if cuda else "cpu", threads=options.threads,
                       channels_last=cuda and artifact.precision == "fp16", cuda_graph=options.cuda_graph, graph=artifact.graph, spec=artifact.spec)


# The reference is never chosen by auto: it is the yardstick.
ROWS = (
    BackendRow("torch", "checkpoint", ("fp32",), "cpu", _torch_installed, INSTALL_TORCH, _factory,
               precision_hint=" (fp16: --backend torch-cuda; int8: --backend onnxruntime)"),
    BackendRow("torch-cuda", "checkpoint", ("fp32", "fp16"), "cuda", _torch_cuda, INSTALL_TORCH_CUDA, _factory,
               cuda_graph=True, precision_hint=" (int8: --backend onnxruntime)"),
)
