"""Atomic writes: a reader never sees a half-written file, an interrupted writer leaves none behind."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading


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
    tmp = None
    try:
        # A signal between the file's creation and `tmp` naming it would leave the file behind
        # (its handler raises wherever the main thread is): held back until `tmp` is set.
        with deferred_signals():
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(final_path)}.", suffix=f".tmp{suffix}", dir=folder)
            os.close(fd)
        yield tmp
        make_public(tmp)
        os.replace(tmp, final_path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str, obj) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; no PID that large (a name made up)
        return False
    except (PermissionError, OSError):
        return True  # another user's process: alive as far as we can tell
    return True


def remove_stale_staging(final_dir: str) -> list[str]:
    """Remove the staging folders of `final_dir` left by writers that were killed (SIGKILL, power
    loss: no `finally` ran). A staging folder is named .NAME.PID.XXXX.tmp; one whose PID is no
    longer running is stale. Folders of running writers (concurrent exports) are left alone.
    Returns the removed paths."""
    final_dir = os.path.abspath(final_dir)
    parent, name = os.path.dirname(final_dir), os.path.basename(final_dir)
    return remove_stale(parent, re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[^/]*\.tmp$"), folders=True)


def remove_stale(parent: str, pattern: re.Pattern, folders: bool = False) -> list[str]:
    """Remove the entries of `parent` (files, or with `folders` folders) whose names match
    `pattern`, its first group being the PID of the process that made them, where that process is
    no longer running: what killed writers left. Returns the removed paths."""
    removed = []
    try:
        entries = os.listdir(parent)
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry)
        if not m:  # before any stat: a folder may hold many other files
            continue
        path = os.path.join(parent, entry)
        kind_ok = os.path.isdir(path) if folders else os.path.isfile(path)
        if os.path.islink(path) or not kind_ok or pid_alive(int(m.group(1))):
            continue
        if folders:
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                continue
        removed.append(path)
    return removed


@contextlib.contextmanager
def staging_dir(final_dir: str):
    """Build a directory's content in a sibling temp folder, then publish it.

    A new directory is published by one rename. An existing one first loses its manifest (so a
    reader sees "not an export" rather than a manifest describing old files), then receives each
    file by rename, manifest.json last. The temp folder carries the writer's PID, so the staging
    folders of killed writers are removed by the next writer of the same directory.
    """
    final_dir = os.path.abspath(final_dir)
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    remove_stale_staging(final_dir)
    tmp = None
    try:
        with deferred_signals():  # as in atomic_path: the folder and `tmp` come into being together
            tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final_dir)}.{os.getpid()}.", suffix=".tmp", dir=parent)
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
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(path: str):
    """Hold an exclusive lock on the file `path` (created if needed) while the block runs: two
    processes exporting one checkpoint into the cache take turns, and the second finds the first's
    export. Where the platform has no flock the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def deferred_signals():
    """SIGINT and SIGTERM held back while the block runs, then delivered: for a publishing step
    (a loop of renames) that must not stop halfway. In the main thread only (where Python runs
    signal handlers); elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is None:  # a handler set from C (an embedding host): left alone
                continue
            try:
                previous[sig] = signal.signal(sig, lambda signum, frame: arrived.append(signum))
            except (ValueError, OSError):
                pass
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)  # now to the handler the block held it from
