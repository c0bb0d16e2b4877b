"""The 16 kHz windows of a media file's audio, read once, forward, in bounded memory.

Samples are decoded as `load_audio` decodes them (channel 0, soundfile's scaling) and brought to
the family's rate with the same polyphase resampler (scipy.signal.resample_poly) as every other
audio input; each window is resampled from a native-rate stretch that starts on a polyphase
period and has the filter's reach on both sides, so it equals the same samples of the whole
track resampled at once. Only native samples that later windows can need are kept.
"""
from __future__ import annotations

import math
import os

import numpy as np
from scipy import signal

from sslrt.errors import SslrtError
from sslrt.preprocess.media import iter_audio
from sslrt.preprocess.window import window_length


class AudioTrack:
    """`window(t)`: the family's window centred on t (seconds, file clock), for increasing t."""

    def __init__(self, path: str | os.PathLike, spec, track_start: float, first_time: float = 0.0):
        self.path = os.fspath(path)
        self.spec = spec
        self.rate_out = spec.audio.sample_rate
        self.n = window_length(spec)
        self.track_start = track_start
        seek = first_time - spec.audio.segment_seconds - 2.0
        self._blocks = iter_audio(self.path, start=seek if seek > track_start else None)
        self.rate: int | None = None
        self._buf = np.zeros(0)
        self._i0 = 0  # native index (from track_start) of _buf[0]
        self._end = 0  # native index one past the last sample read
        self.eof = False
        self._fill(1)

    # -- native buffer ---------------------------------------------------------------------------
    def _fill(self, native_end: int) -> None:
        """Read blocks until the buffer reaches native index `native_end` or the stream ends."""
        parts = [self._buf]
        while self._end < native_end and not self.eof:
            try:
                t0, x, rate = next(self._blocks)
            except StopIteration:
                self.eof = True
                break
            if self.rate is None:
                self.rate = rate
                self._i0 = self._end = max(0, int(round((t0 - self.track_start) * rate)))
                parts = [np.zeros(0)]
            elif rate != self.rate:
                raise SslrtError(f"{self.path}: the audio's sample rate changes inside the stream ({self.rate} -> {rate} Hz)")
            parts.append(x)
            self._end += x.shape[0]
        if len(parts) > 1:
            self._buf = np.concatenate(parts)
        if self.rate is None:
            raise SslrtError(f"{self.path} has no audio samples")

    def _drop_before(self, native_index: int) -> None:
        cut = native_index - self._i0
        if cut > 0:
            self._buf = self._buf[cut:]
            self._i0 = native_index

    def _ratio(self) -> tuple[int, int]:
        g = math.gcd(self.rate_out, self.rate)
        return self.rate_out // g, self.rate // g

    # -- windows ---------------------------------------------------------------------------------
    def window(self, t: float) -> np.ndarray:
        """The window (at the family's rate) a frame at t hears; the whole track if it is shorter."""
        up, down = self._ratio()
        reach = 10 * max(up, down) // up + 2  # resample_poly's filter reach, in native samples
        half = self.n // 2
        # Read far enough to know the window's end (or that the track ends before it).
        want_out = max(int(round((t - self.track_start) * self.rate_out)) - half, 0) + self.n
        self._fill(math.ceil(want_out * down / up) + reach + down)
        length_out = math.ceil(self._end * up / down) if self.eof else None
        if length_out is not None and length_out < self.n:
            if self._i0 != 0:
                raise SslrtError(f"{self.path}: audio too short for a window after seeking")  # pragma: no cover
            return self._resample(0, length_out)
        first = int(round((t - self.track_start) * self.rate_out)) - half
        first = max(first, 0)
        if length_out is not None:
            first = min(first, length_out - self.n)
        out = self._resample(first, first + self.n)
        # Later windows start no earlier than this one's start minus half a window (times increase).
        keep_from = max(0, ((first - half) * down // up - reach - down) // down * down)
        self._drop_before(max(self._i0, keep_from))
        return out

    def _resample(self, o0: int, o1: int) -> np.ndarray:
        """Output samples [o0, o1) of the whole native track resampled to the family's rate."""
        up, down = self._ratio()
        if up == down == 1:
            lo = o0 - self._i0
            if lo < 0:
                raise SslrtError(f"{self.path}: audio window before the kept samples")  # pragma: no cover
            return self._buf[lo:o1 - self._i0].copy()
        reach = 10 * max(up, down) // up + 2
        a = max(0, (o0 * down // up - reach) // down * down)  # a multiple of `down`: a whole polyphase period
        if a < self._i0:
            a = self._i0 if self._i0 % down == 0 else -(-self._i0 // down) * down
        b = min(self._end, math.ceil(o1 * down / up) + reach)
        seg = self._buf[a - self._i0:b - self._i0]
        y = signal.resample_poly(seg, up, down)
        off = a * up // down
        return y[o0 - off:o1 - off].copy()
