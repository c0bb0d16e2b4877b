"""The picture a person looks at: the heatmap over the original image, with the box and the peak."""
from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from sslrt.errors import SslrtError, first_line
from sslrt.store.atomic import atomic_path, deferred_signals, make_public, remove_stale
from sslrt.runtime.localization import minmax_normalize


def render_overlay(rgb: np.ndarray, heatmap: np.ndarray, bbox: list[float], peak: list[float], alpha: float = 0.45,
                   sounding: bool | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) + native heatmap -> BGR uint8 overlay, ready for cv2.imwrite. Where the
    family's "no sound source" flag is false (`sounding` False), the picture says so."""
    return render_overlay_bgr(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), heatmap, bbox, peak, alpha, sounding)


def render_overlay_bgr(bgr: np.ndarray, heatmap: np.ndarray, bbox: list[float], peak: list[float], alpha: float = 0.45,
                       sounding: bool | None = None, colour_width: int | None = None) -> np.ndarray:
    """`render_overlay` of a BGR picture (video frames are decoded to BGR directly). With
    `colour_width`, the colour layer is computed at that width and enlarged bilinearly: the map
    is 14x14, so a few hundred pixels lose nothing visible and a 720p frame costs ~5x less."""
    h, w = bgr.shape[:2]
    norm = minmax_normalize(np.asarray(heatmap, dtype=np.float32)[None])[0]
    cw, ch = w, h
    if colour_width and colour_width < w:
        cw, ch = colour_width, max(1, round(h * colour_width / w))
    up = cv2.resize(norm, (cw, ch), interpolation=cv2.INTER_CUBIC)
    colour = cv2.applyColorMap(np.clip(up * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    if (cw, ch) != (w, h):
        colour = cv2.resize(colour, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.addWeighted(bgr, 1 - alpha, colour, alpha, 0)
    thick = max(2, round(min(h, w) / 200))
    x0, y0, x1, y1 = (int(round(v)) for v in bbox)
    cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (255, 255, 255), thick)
    cv2.drawMarker(out, (int(peak[0]), int(peak[1])), (255, 255, 255), cv2.MARKER_CROSS, 6 * thick, thick)
    if sounding is False:
        scale = max(0.5, min(h, w) / 500)
        org = (int(10 * scale), int(30 * scale))
        for colour, width in (((0, 0, 0), 4 * thick), ((255, 255, 255), thick)):  # outlined: readable on any map
            cv2.putText(out, "no sound source", org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, width, cv2.LINE_AA)
    return out


# What an overlay may be written as: the file's extension says the format.
PICTURE_FORMATS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


def check_picture_path(path: str | os.PathLike, what: str = "overlay") -> str:
    """The encoder extension for writing a picture to `path`; one-line errors for a folder, an
    unknown extension or a missing parent folder (checked before any work is done)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise SslrtError(f"cannot write the {what} to {path}: it is a folder (give a file name ending in .png or .jpg)")
    ext = os.path.splitext(path)[1].lower()
    if ext not in PICTURE_FORMATS:
        raise SslrtError(f"cannot write the {what} to {path}: the name must end in .png, .jpg or .jpeg")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise SslrtError(f"cannot write {path}: folder {folder} does not exist")
    return PICTURE_FORMATS[ext]


def save_png(path: str | os.PathLike, bgr: np.ndarray) -> None:
    """Write atomically, as PNG or JPEG by the name's extension: a reader never sees half a
    picture, a failure leaves none."""
    path = os.fspath(path)
    ext = check_picture_path(path)
    with atomic_path(path, suffix=ext) as tmp:
        _encode_to(tmp, path, ext, bgr)


def _encode_to(tmp: str, path: str, ext: str, bgr: np.ndarray) -> None:
    ok, data = cv2.imencode(ext, bgr)
    if not ok:
        raise SslrtError(f"could not encode the overlay for {path}")
    try:
        data.tofile(tmp)
    except OSError as exc:  # a full disk, a quota: the user's to fix, in one line
        raise SslrtError(f"cannot write {path}: {exc.strerror or first_line(exc)}") from None


# Hidden names of staged pictures: .sslrt-staged.HOST.PID.NAME.XXXX.tmp.EXT beside their targets.
# The PID lets the next run remove what a killed run (SIGKILL, power loss: no `finally`) left.
# The host is in the name too: a PID says nothing about a run on another machine (or container)
# that shares the folder, so only this host's staged pictures are ever swept.
_STAGED_PREFIX = ".sslrt-staged."


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def remove_stale_pictures(folder: str | os.PathLike) -> list[str]:
    """Remove the staged pictures in `folder` left by runs of this host that are no longer alive;
    returns their paths."""
    pattern = re.compile(rf"^{re.escape(_STAGED_PREFIX + _host())}\.(\d+)\..*\.tmp\.[a-z]+$")
    return remove_stale(os.fspath(folder), pattern)


class StagedPictures:
    """Pictures of one run, each written to a hidden file beside its target as soon as it is made
    and renamed to its name only when the run commits: memory holds a few pictures at a time, not
    the run's (10,000 overlays of 1024 px images held in memory until the end would be ~30 GB),
    and a failed or interrupted run leaves none of them (the `with` block removes what it staged;
    the files of a killed run carry its PID and are removed by the next run's
    `remove_stale_pictures`). The renames of `commit` run with Ctrl-C and SIGTERM held back, so
    that a run is published whole.
    """

    def __init__(self, threads: int = 0) -> None:
        self._staged: list[tuple[str, str]] = []  # (hidden file, target)
        # add_later's drawing threads, and its pictures in flight (at most 2 per thread: memory
        # holds that many pictures, whatever the run's length)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sslrt-overlay") if threads > 0 else None
        self._in_flight: deque = deque()
        self._max_in_flight = 2 * threads

    def __enter__(self) -> "StagedPictures":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def _reserve(self, path: str | os.PathLike) -> tuple[str, str, str]:
        """(hidden file, target, encoder extension): the hidden file created now, in the order of
        the calls, whichever thread fills it."""
        path = os.fspath(path)
        ext = check_picture_path(path)
        # Ctrl-C or SIGTERM held back from the file's creation until it is on the list that
        # discard() removes: arriving in between, it would leave the file to the next run's sweep.
        with deferred_signals():
            fd, tmp = tempfile.mkstemp(prefix=f"{_STAGED_PREFIX}{_host()}.{os.getpid()}.{os.path.basename(path)}.",
                                       suffix=f".tmp{ext}", dir=os.path.dirname(os.path.abspath(path)))
            self._staged.append((tmp, path))
            os.close(fd)
        return tmp, path, ext

    def add(self, path: str | os.PathLike, bgr: np.ndarray) -> None:
        _encode_to(*self._reserve(path), bgr)

    def add_later(self, path: str | os.PathLike, make) -> None:
        """Stage the picture that `make()` returns (BGR), drawn and encoded in one of the drawing
        threads: an overlay of a 1024 px image costs ~40 ms (decoding it again, drawing, PNG), which
        in the caller's thread would stall the engine's loop. Errors surface here (at most
        2 x threads pictures later) or at commit()."""
        tmp, path, ext = self._reserve(path)
        if self._pool is None:
            _encode_to(tmp, path, ext, make())
            return
        # Ctrl-C held back while the pool may be starting a thread: one interrupted there would run
        # unseen by shutdown() and write its hidden file after discard() removed it.
        with deferred_signals():
            self._in_flight.append(self._pool.submit(lambda: _encode_to(tmp, path, ext, make())))
        while len(self._in_flight) > self._max_in_flight:
            self._in_flight.popleft().result()

    def _stop_drawing(self, wait_for_all: bool) -> None:
        """The drawing threads finished (every picture, or what they are drawing now) before the
        hidden files are renamed or removed: a thread still writing would recreate a removed one."""
        if self._pool is None:
            return
        try:
            if wait_for_all:
                while self._in_flight:
                    self._in_flight.popleft().result()
        finally:
            self._in_flight.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def commit(self) -> list[str]:
        """Rename every staged picture to its target; returns the targets in the order added."""
        self._stop_drawing(wait_for_all=True)
        done = 0
        with deferred_signals():
            try:
                for tmp, path in self._staged:
                    make_public(tmp)
                    os.replace(tmp, path)
                    done += 1
            except OSError as exc:
                raise SslrtError(f"cannot write {path}: {exc.strerror or exc}; {done} of {len(self._staged)} "
                                 "overlays were written") from None
            finally:  # discard() removes only what was not renamed
                targets = [path for _, path in self._staged[:done]]
                del self._staged[:done]
        return targets

    def discard(self) -> None:
        try:
            self._stop_drawing(wait_for_all=False)
        finally:  # a second Ctrl-C while the drawings finish still removes what was staged
            for tmp, _ in self._staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            self._staged.clear()
