"""One small engine interface; each backend is an adapter behind it (cf. Polygraphy's runners).

An engine takes named float32 arrays and returns named float32 arrays. It knows nothing of files,
preprocessing or heatmap semantics: those live in runtime/.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

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
        """Free what load() took; the engine may be loaded again."""

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


@dataclass(frozen=True)
class Artifact:
    """What one engine runs: a file of an export (an ONNX graph, a TensorRT engine) or, for the
    PyTorch reference, the checkpoint; already verified against the manifest."""

    backend: str
    precision: str
    graph: str  # "fused", "vision" or "audio" (sslrt.graphs.GRAPHS)
    key: str | None  # the manifest's artifact key; None for a checkpoint
    path: str
    entry: dict  # the manifest's entry of the artifact ({} for a checkpoint)
    spec: object  # the model family's sslrt.spec.ModelSpec


@dataclass(frozen=True)
class EngineOptions:
    threads: int | None = None
    cuda_graph: bool = False


@dataclass(frozen=True)
class BackendRow:
    """One row of the backend table, declared by its adapter module.

    artifact: which export artifacts it runs ("onnx", "tensorrt") or "checkpoint" (the reference).
    artifact_precision: requested precision -> precision of the artifact it loads, where they
    differ (ONNX Runtime's TensorRT provider builds its fp16 engine from the fp32 graph).
    probe: whether it can run on this machine (packages, GPU), cheap and without side effects.
    auto_rank: its place in `auto` (lower first; None: never chosen by auto).
    precision_ranks: per-precision overrides of auto_rank, where the measured order of the CPU
    backends differs by precision (see docs/ARCHITECTURE.md).
    auto_precisions: what it runs when no precision is asked, in order of preference.
    """

    name: str
    artifact: str
    precisions: tuple[str, ...]
    device: str
    probe: Callable[[], bool]
    install_hint: str
    factory: Callable[[Artifact, EngineOptions], Engine]
    auto_rank: int | None = None
    auto_precisions: tuple[str, ...] = ("fp32",)
    artifact_precision: dict = field(default_factory=dict)
    cuda_graph: bool = False
    precision_hint: str = ""  # appended to the "does not run this precision" error
    precision_ranks: dict = field(default_factory=dict)

    def rank(self, precision: str) -> int | None:
        """Its place in `auto` for `precision` (None: never chosen by auto)."""
        if self.auto_rank is None:
            return None
        return self.precision_ranks.get(precision, self.auto_rank)
