"""CUDA without torch: how many GPUs there are (cuda-python's runtime, else the driver itself),
which one this is, and whether a GPU library can really be loaded.

The runtime API (cudart, through cuda-python) fails where cuda-python was built for a newer CUDA
than the driver supports (cudaErrorInsufficientDriver), or where its runtime library is missing;
that says nothing about whether a GPU is there. So a cudart error is not "no GPU": the probe then
asks the driver (libcuda, which every NVIDIA driver installs) through ctypes, and remembers why
cudart failed, so that what is reported can name the mismatch.

Nothing here imports torch, tensorrt or cuda-python at import time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

from sslrt.errors import BackendUnavailable


@dataclass(frozen=True)
class CudaProbe:
    devices: int  # CUDA devices visible (0: none, or no driver)
    via: str  # "cudart", "driver" or "none"
    cudart_error: str | None = None  # why cuda-python's runtime could not count them, if it could not
    driver_version: int | None = None  # cuDriverGetVersion, e.g. 12040 for CUDA 12.4


def import_cudart():
    """cuda-python's runtime module: `cuda.bindings.runtime` (cuda-python >= 12.8), `cuda.cudart` before."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendUnavailable("backend 'tensorrt' needs cuda-python: pip install 'sslrt[tensorrt-cu12]' "
                                     "(or 'sslrt[tensorrt-cu13]', matching your driver's CUDA major)") from None
    return cudart


def _cudart_count() -> tuple[int | None, str | None]:
    try:
        cudart = import_cudart()
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # not installed, or its runtime library does not load
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    if int(err) != 0:
        try:
            name = cudart.cudaGetErrorName(err)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:
            name = str(err)
        return None, name
    return int(count), None


def _load_libcuda():
    for name in ("libcuda.so.1", ctypes.util.find_library("cuda"), "nvcuda.dll"):
        if not name:
            continue
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def driver_device_count() -> tuple[int, int | None]:
    """(devices, driver CUDA version) from the driver API: cuInit, cuDeviceGetCount, cuDriverGetVersion.
    (0, None) where there is no NVIDIA driver."""
    lib = _load_libcuda()
    if lib is None:
        return 0, None
    version = ctypes.c_int(0)
    try:
        got_version = lib.cuDriverGetVersion(ctypes.byref(version)) == 0
        if lib.cuInit(0) != 0:
            return 0, version.value if got_version else None
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0, version.value if got_version else None
    except AttributeError:
        return 0, None
    return count.value, version.value if got_version else None


def probe(cudart_count=None, driver_count=None) -> CudaProbe:
    """Count CUDA devices: cuda-python's runtime first, the driver API where the runtime fails
    (an error of cudart is not "no GPU"). `cudart_count` / `driver_count` default to the real
    probes (_cudart_count, driver_device_count)."""
    count, error = (cudart_count or _cudart_count)()
    if count is not None:
        return CudaProbe(count, "cudart")
    devices, version = (driver_count or driver_device_count)()
    return CudaProbe(devices, "driver" if version is not None else "none", cudart_error=error, driver_version=version)


def cuda_device_count() -> int:
    return probe().devices


class CudaGraphCache:
    """One captured CUDA graph per batch size: the capture-or-replay decision, free of CUDA.

    A CUDA graph replays the exact kernels (grid sizes, shapes) it captured, so a graph is only
    valid for the batch size it was captured at; a later call of another size needs its own.
    `action(batch)` says "capture" the first time a batch size is seen and "replay" after; the
    `max_graphs` most recently used graphs are kept, and `put` returns the evicted ones for the
    caller to free. (A 4, 3, 4 sequence: capture 4, capture 3, replay 4.)
    """

    def __init__(self, max_graphs: int = 8) -> None:
        from collections import OrderedDict

        if max_graphs < 1:
            raise ValueError("max_graphs must be >= 1")
        self.max_graphs = max_graphs
        self._graphs: "OrderedDict[int, object]" = OrderedDict()

    def action(self, batch: int) -> str:
        return "replay" if batch in self._graphs else "capture"

    def get(self, batch: int):
        self._graphs.move_to_end(batch)
        return self._graphs[batch]

    def put(self, batch: int, graph) -> list:
        self._graphs[batch] = graph
        self._graphs.move_to_end(batch)
        evicted = []
        while len(self._graphs) > self.max_graphs:
            evicted.append(self._graphs.popitem(last=False)[1])
        return evicted

    def clear(self) -> list:
        graphs = list(self._graphs.values())
        self._graphs.clear()
        return graphs

    def __contains__(self, batch: int) -> bool:
        return batch in self._graphs

    def __len__(self) -> int:
        return len(self._graphs)
