"""Where sslrt keeps what it makes on the user's behalf (checkpoint exports, TensorRT timing
caches): $SSLRT_CACHE_DIR, else $XDG_CACHE_HOME/sslrt, else ~/.cache/sslrt."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("SSLRT_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sslrt"


def export_cache_dir(checkpoint_sha256: str) -> Path:
    """The cache entry of a checkpoint's export, keyed by the checkpoint's content."""
    return cache_root() / "exports" / checkpoint_sha256[:24]
