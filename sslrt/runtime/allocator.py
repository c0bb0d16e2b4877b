"""glibc's malloc in a process sslrt owns: keep freed memory for the next pair.

Preparing a pair allocates ~10 MB of temporaries (the decoded image, the resize's passes, the
spectrogram's frames) and frees them. glibc's default hands memory above its (adaptive) trim
threshold back to the kernel and takes it back page by page on the next pair: ~2300 minor page
faults per 1024 px pair. Measured with benchmarks/prepare_scaling.py (preparation alone, 32 pairs
of a 1024 px JPEG and a 10 s WAV): on the 2-core EPYC, one thread 72 -> 119 pairs/s (14.0 -> 8.4
ms of CPU per pair), two threads 164 -> 211; page faults per pair 2321 -> 0. In a Ray Serve replica,
before: ~2000 faults and ~5 ms of system time per request.

Applied where the process is sslrt's: the `sslrt` command (the commands that prepare pairs), Ray
actors and Serve replicas. Not in a user's own process (the in-process API): the allocator there
is theirs. A MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ in the environment is the user's
choice and is left alone.
"""
from __future__ import annotations

import os

_applied: bool | None = None  # once per process


def keep_freed_memory() -> bool:
    """Blocks under 32 MB come from malloc's arenas and freed memory stays there, up to 256 MB
    per arena. The cost: that much freed memory may stay mapped per arena (one per preparation
    thread). Returns whether it applies (glibc only)."""
    global _applied
    if _applied is not None:
        return _applied
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        _applied = False
        return False
    import ctypes

    try:
        # the symbols this process already has (libc's among them): no library search, which
        # would spawn ldconfig at every actor's start
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), no CDLL(None) (Windows)
        _applied = False
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    # 32 MB: a value every glibc accepts (older ones cap the mmap threshold there)
    _applied = bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))
    return _applied
