"""The PyTorch reference backend: the paper's network in eager fp32, the yardstick of parity."""
from __future__ import annotations

import numpy as np

from sslrt.engines.base import Engine, TensorSpec
from sslrt.errors import BackendUnavailable
from sslrt.graphs import GRAPH_IO, INPUT_SHAPES


class TorchEngine(Engine):
    backend = "torch"

    def __init__(self, checkpoint_path: str, precision: str = "fp32", device: str = "cpu", threads: int | None = None,
                 graph: str = "fused") -> None:
        super().__init__()
        self.checkpoint_path = checkpoint_path
        self.precision = precision
        self.graph = graph
        self._device = device
        self._threads = threads
        self._module = None

    @classmethod
    def from_model(cls, model, checkpoint_path: str, graph: str = "fused") -> "TorchEngine":
        """Wrap an already loaded SoundLocalizer (the exporter's, to avoid loading it twice)."""
        import torch

        from sslrt.model.network import graph_module

        engine = cls(checkpoint_path, graph=graph)
        engine._module, engine._torch = graph_module(model, graph).eval(), torch
        return engine

    def load(self) -> None:
        if self._module is not None:
            return
        try:
            import torch
        except ImportError:
            raise BackendUnavailable("backend 'torch' needs PyTorch: pip install 'sslrt[export]' (CPU: pip install torch==2.13.0 first)") from None
        from sslrt.model import load_checkpoint
        from sslrt.model.network import graph_module

        if self._threads:
            torch.set_num_threads(self._threads)
        model, self.config = load_checkpoint(self.checkpoint_path)
        self._module = graph_module(model.to(self._device), self.graph).eval()
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

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        torch = self._torch
        names_in, names_out = GRAPH_IO[self.graph]
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.float32)).to(self._device) for n in names_in]
            out = self._module(*args)
        return {names_out[0]: out.float().cpu().numpy()}

    def close(self) -> None:
        self._module = None
        super().close()
