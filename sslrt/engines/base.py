"""One small engine interface; each backend is an adapter behind it (cf. Polygraphy's runners).

An engine takes named float32 arrays and returns named float32 arrays. It knows nothing of files,
preprocessing or heatmap semantics: those live in runtime/.
"""
from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sslrt.errors import SslrtError

# Limits on what a caller may ask for: beyond them a request only exhausts the machine (100,000
# intra-op threads start ~32,000 threads and 17 GB before ONNX Runtime gives up).
MAX_BATCH_SIZE = 1024  # pairs per engine call


def max_threads() -> int:
    """The most intra-op threads an engine may be given: 4 per core."""
    return 4 * (os.cpu_count() or 1)


def check_threads(threads, what: str = "threads") -> int | None:
    """`threads` (None: the engine's default) checked to be an int in 1..max_threads()."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise SslrtError(f"{what} must be a whole number, got {threads!r}")
    if not 1 <= threads <= max_threads():
        raise SslrtError(f"{what} must be between 1 and {max_threads()} (4 per core), got {threads}")
    return threads


def check_batch_size(batch_size, what: str = "batch size") -> int:
    """A batch size checked to be an int in 1..MAX_BATCH_SIZE."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise SslrtError(f"{what} must be a whole number, got {batch_size!r}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise SslrtError(f"{what} must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}")
    return batch_size


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

    @property
    def lanes(self) -> int:
        """How many batches may run at once, from as many threads, each on a share of the cores
        of its own (a throughput stream, a session of half the threads), as fast per pair as a
        batch that run() splits across them. A pipeline with a stream of batches keeps that many
        running (`run_lane`), so that no batch waits at the end of a call for its slowest part
        (sslrt.runtime.pipeline.Localizer.localize_many)."""
        return 1

    def run_lane(self, feeds: dict[str, np.ndarray], lane: int) -> dict[str, np.ndarray]:
        """Inference on one batch on lane `lane` (0 <= lane < lanes) alone; safe to call from
        `lanes` threads at once, one per lane. An engine of one lane runs the batch as run() does."""
        return self.run(feeds)

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


# -- the batch profile of engines built for a range of batch sizes (TensorRT, its ORT provider) ---
@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


DEFAULT_PROFILE = BatchProfile(1, 8, 32)


def parse_profile(text: str | None) -> BatchProfile:
    """`--batch`: "min:opt:max" (e.g. 1:8:64) or one number N (a static batch N:N:N)."""
    if text is None:
        return DEFAULT_PROFILE
    text = str(text).strip()
    parts = text.split(":")
    if len(parts) not in (1, 3) or not all(re.fullmatch(r"\d+", p.strip()) for p in parts):
        raise SslrtError(f"--batch must be MIN:OPT:MAX (e.g. 1:8:64) or one batch size, got {text!r}")
    values = [int(p) for p in parts] * (3 if len(parts) == 1 else 1)
    lo, opt, hi = values
    if lo < 1:
        raise SslrtError(f"--batch {text}: batch sizes must be >= 1")
    if not lo <= opt <= hi:
        raise SslrtError(f"--batch {text}: needs MIN <= OPT <= MAX")
    if hi > 4096:
        raise SslrtError(f"--batch {text}: max batch {hi} is unreasonably large (> 4096)")
    return BatchProfile(lo, opt, hi)


