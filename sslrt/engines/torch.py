"""The PyTorch reference backend: the paper's network in eager fp32, the yardstick of parity.

On a CUDA GPU (registry name torch-cuda) it also runs fp16 under autocast, in channels_last
memory format, and optionally replays a CUDA graph captured for one fixed batch size.
"""
from __future__ import annotations

import numpy as np

from sslrt.config import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_HEATMAP, SPEC_SHAPE, IMAGE_SIZE
from sslrt.engines.base import Engine, TensorSpec
from sslrt.errors import BackendUnavailable, SslrtError


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, checkpoint_path: str, precision: str = "fp32", device: str = "cpu", threads: int | None = None,
                 channels_last: bool = False, cuda_graph: bool = False) -> None:
        super().__init__()
        self.checkpoint_path = checkpoint_path
        self.precision = precision
        self._device = device
        self._threads = threads
        self.channels_last = channels_last
        self.cuda_graph = cuda_graph
        self._model = None
        self._graph = None  # (batch, CUDAGraph, static image, static audio, static output)
        if device == "cuda":
            self.backend = "torch-cuda"
        if precision not in ("fp32", "fp16"):
            raise SslrtError(f"backend '{self.backend}' runs fp32 or fp16, not {precision}")
        if device != "cuda" and (precision != "fp32" or cuda_graph):
            raise SslrtError("fp16 and CUDA graphs of the torch backend need device 'cuda' (backend torch-cuda)")

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
        return [TensorSpec(INPUT_IMAGE, (None, 3, IMAGE_SIZE, IMAGE_SIZE)), TensorSpec(INPUT_AUDIO, (None, 1, *SPEC_SHAPE))]

    @property
    def outputs(self) -> list[TensorSpec]:
        s = IMAGE_SIZE // 16
        return [TensorSpec(OUTPUT_HEATMAP, (None, 1, s, s))]

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

    def _forward(self, image, audio):
        torch = self._torch
        if self.precision == "fp16":
            # The towers under fp16 autocast (cache_enabled=False: autocast's weight-cast cache must
            # not outlive a CUDA graph capture); the head in fp32, as in the fp16 ONNX graph and
            # the TensorRT engine (an fp16 cosine map is quantized to 2.4e-4 steps near 0.5).
            with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
                image_features, audio_features = self._model.imgnet(image), self._model.audnet(audio)
            return self._model.head(image_features.float(), audio_features.float())
        return self._model(image, audio)

    def _capture(self, image, audio):
        """Capture one forward pass for this batch size (warm-up on a side stream first, as
        torch.cuda.graphs requires)."""
        torch = self._torch
        static_image, static_audio = image.clone(), audio.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._forward(static_image, static_audio)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_image, static_audio)
        self._graph = (image.shape[0], graph, static_image, static_audio, static_out)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        torch = self._torch
        with torch.no_grad():
            image = self._to_device(feeds[INPUT_IMAGE])
            audio = self._to_device(feeds[INPUT_AUDIO])
            if self.cuda_graph:
                if self._graph is None:
                    self._capture(image, audio)
                batch, graph, static_image, static_audio, static_out = self._graph
                if image.shape[0] == batch:
                    static_image.copy_(image)
                    static_audio.copy_(audio)
                    graph.replay()
                    return {OUTPUT_HEATMAP: static_out.float().cpu().numpy()}
            heatmap = self._forward(image, audio)
        return {OUTPUT_HEATMAP: heatmap.float().cpu().numpy()}

    def close(self) -> None:
        self._model = None
        self._graph = None
        super().close()
