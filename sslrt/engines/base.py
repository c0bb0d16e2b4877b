"""One small engine interface; each backend is an adapter behind it (cf. Polygraphy's runners).

An engine takes named float32 arrays and returns named float32 arrays. It knows nothing of files,
preprocessing or heatmap semantics: those live in runtime/.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # None marks a dynamic axis (the batch)
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": [d if isinstance(d, int) else None for d in self.shape], "dtype": self.dtype}


class Engine(ABC):
    """load() once, then run() many times; close() frees what load() took.

    Subclasses set `backend` (registry name) and `precision` ("fp32", "fp16", "int8").
    """

    backend: str = "?"
    precision: str = "fp32"

    def __init__(self) -> None:
        self._loaded = False

    @abstractmethod
    def load(self) -> None:
        """Acquire the session / device buffers. Idempotent."""

    @property
    @abstractmethod
    def inputs(self) -> list[TensorSpec]: ...

    @property
    @abstractmethod
    def outputs(self) -> list[TensorSpec]: ...

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inference on one batch; every input named in `inputs` must be given."""

    def close(self) -> None:
        self._loaded = False

    @property
    def device(self) -> str:
        return "cpu"

    def describe(self) -> str:
        return f"{self.backend} {self.precision} on {self.device}"

    def __enter__(self) -> "Engine":
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
