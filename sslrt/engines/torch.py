"""The PyTorch reference backend: the paper's network in eager fp32, the yardstick of parity.

On a CUDA GPU (registry name torch-cuda) it also runs fp16 under autocast, in channels_last
memory format, and optionally replays CUDA graphs: one per batch size (engines/cuda.py
CudaGraphCache), captured the first time that size is run (a 4, 3, 4 sequence: capture 4, capture 3,
replay 4; a graph is never replayed for a batch size it was not captured at).
Each of config.GRAPHS can be run: the fused pair, or one encoder.
"""
from __future__ import annotations

import numpy as np

from sslrt.engines.base import Engine, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.graphs import GRAPH_IO, INPUT_SHAPES


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, checkpoint_path: str, precision: str = "fp32", device: str = "cpu", threads: int | None = None,
                 channels_last: bool = False, cuda_graph: bool = False, graph: str = "fused") -> None:
        super().__init__()
        self.checkpoint_path = checkpoint_path
        self.precision = precision
        self.graph = graph
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
    def from_model(cls, model, checkpoint_path: str, graph: str = "fused") -> "TorchEngine":
        """Wrap an already loaded SoundLocalizer on the CPU (the exporter's, to avoid loading it twice)."""
        import torch

        engine = cls(checkpoint_path, graph=graph)
        engine._model, engine._torch, engine.config = model.eval(), torch, model.cfg
        return engine

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("backend 'torch' needs PyTorch: pip install 'sslrt[export]' (CPU: pip install torch==2.13.0 first)") from None
        if self._device == "cuda" and not torch.cuda.is_available():
            from sslrt.engines import INSTALL_HINTS

            raise BackendUnavailable(f"backend 'torch-cuda' needs {INSTALL_HINTS['torch-cuda']} (torch.cuda.is_available() is False)")
        from sslrt.model import load_checkpoint

        if self._threads:
            torch.set_num_threads(self._threads)
        model, self.config = load_checkpoint(self.checkpoint_path)
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
        self._loaded = True

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(name, (None, *INPUT_SHAPES[name])) for name in GRAPH_IO[self.graph][0]]

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
        # not outlive a CUDA graph capture); the head in fp32, as in the fp16 ONNX graph and the
        # TensorRT engine (an fp16 cosine map is quantized to 2.4e-4 steps near 0.5).
        with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            if self.graph == "fused":
                features = model.imgnet(inputs[0]), model.audnet(inputs[1])
            else:
                features = ((model.imgnet if self.graph == "vision" else model.audnet)(inputs[0]),)
        features = [f.float() for f in features]
        if self.graph == "fused":
            return model.head(*features)
        if self.graph == "vision":
            return torch.nn.functional.normalize(features[0], dim=1)
        return torch.nn.functional.normalize(torch.nn.functional.adaptive_max_pool2d(features[0], 1).flatten(1), dim=1)

    def _capture(self, inputs):
        """Capture one forward pass for this batch size (warm-up on a side stream first, as
        torch.cuda.graphs requires); returns (CUDAGraph, static inputs, static output)."""
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

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        torch = self._torch
        names_in, names_out = GRAPH_IO[self.graph]
        with torch.inference_mode():
            inputs = [self._to_device(feeds[n]) for n in names_in]
            if self.cuda_graph:
                batch = int(inputs[0].shape[0])
                if self._graphs.action(batch) == "capture":
                    self._capture(inputs)
                graph, static, static_out = self._graphs.get(batch)
                for s, x in zip(static, inputs):
                    s.copy_(x)
                graph.replay()
                return {names_out[0]: static_out.float().cpu().numpy()}
            out = self._forward(*inputs)
        return {names_out[0]: out.float().cpu().numpy()}

    def close(self) -> None:
        self._model = None
        self._graphs.clear()
        super().close()
