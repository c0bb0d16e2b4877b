"""Is there a CUDA GPU? Answered without torch: cuda-python's runtime if installed, else the
driver API through ctypes. Also the import of cuda-python's runtime bindings, for the adapters."""
from __future__ import annotations

from sslrt.errors import BackendUnavailable


def import_cudart():
    """cuda-python's runtime module (`cuda.bindings.runtime` since 12.8, `cuda.cudart` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendUnavailable("backend 'tensorrt' needs cuda-python: pip install 'sslrt[tensorrt]'") from None
    return cudart


def cuda_device_count() -> int:
    try:
        cudart = import_cudart()
        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0:
            return int(count)
    except Exception:
        pass
    try:
        import ctypes

        lib = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except OSError:
        return 0
