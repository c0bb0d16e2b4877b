"""The PyTorch reference backend: the paper's network in eager fp32, the yardstick of parity."""
from __future__ import annotations

import numpy as np

from sslrt.config import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_HEATMAP, SPEC_SHAPE, IMAGE_SIZE
from sslrt.engines.base import Engine, TensorSpec
from sslrt.errors import BackendUnavailable


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, checkpoint_path: str, precision: str = "fp32", device: str = "cpu", threads: int | None = None) -> None:
        super().__init__()
        self.checkpoint_path = checkpoint_path
        self.precision = precision
        self._device = device
        self._threads = threads
        self._model = None

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("backend 'torch' needs PyTorch: pip install 'sslrt[export]' (CPU: pip install torch==2.13.0 first)") from None
        from sslrt.model import load_checkpoint

        if self._threads:
            torch.set_num_threads(self._threads)
        model, self.config = load_checkpoint(self.checkpoint_path)
        self._model = model.to(self._device)
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

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        torch = self._torch
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(feeds[INPUT_IMAGE], dtype=np.float32)).to(self._device)
            audio = torch.from_numpy(np.ascontiguousarray(feeds[INPUT_AUDIO], dtype=np.float32)).to(self._device)
            heatmap = self._model(image, audio)
        return {OUTPUT_HEATMAP: heatmap.float().cpu().numpy()}

    def close(self) -> None:
        self._model = None
        super().close()
