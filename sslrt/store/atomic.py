"""Atomic writes: a reader never sees a half-written file, an interrupted writer leaves none behind."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_public(path: str) -> None:
    """Give a temp file/folder the permissions a plain open()/mkdir() would have (mkstemp's are 0600)."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_path(final_path: str, suffix: str = ""):
    """Yield a temporary path in the same folder; on success it replaces `final_path` in one rename."""
    folder = os.path.dirname(os.path.abspath(final_path)) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final_path)}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        make_public(tmp)
        os.replace(tmp, final_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str, obj) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


@contextlib.contextmanager
def staging_dir(final_dir: str):
    """Build a directory's content in a sibling temp folder, then publish it.

    A new directory is published by one rename. An existing one first loses its manifest (so a
    reader sees "not an export" rather than a manifest describing old files), then receives each
    file by rename, manifest.json last.
    """
    final_dir = os.path.abspath(final_dir)
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final_dir)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        # mkdtemp/mkstemp make private files; an export is meant to be shared like any other output.
        make_public(tmp)
        for name in os.listdir(tmp):
            make_public(os.path.join(tmp, name))
        if not os.path.exists(final_dir):
            os.rename(tmp, final_dir)
            return
        names = sorted(os.listdir(tmp), key=lambda n: n == "manifest.json")
        manifest = os.path.join(final_dir, "manifest.json")
        if os.path.exists(manifest) and "manifest.json" in names:
            os.unlink(manifest)
        for name in names:
            os.replace(os.path.join(tmp, name), os.path.join(final_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
