"""Audio windows of a longer track: what the model hears for a video frame at time t (pure numpy).

A family hears `spec.audio.segment_seconds` of audio (3 s for the paper's model). For a frame at
time t that is the window [t - s/2, t + s/2) of the 16 kHz track, moved to stay inside the track
at its ends; a track shorter than the window is used whole, and the family's transform then tiles
it as the official code tiles short clips.

`window_clip` turns a window into the waveform that the family's clip transform
(`spectrogram_from_waveform`) hears as exactly that window: for the paper's family, whose
transform keeps samples [56000, 104000) (3.5-6.5 s) of a 10 s clip, it is the 10 s clip with the
window at 3.5-6.5 s (zeros elsewhere, which the crop discards). `sslrt video`, `sslrt run
clip.mp4` and `sslrt run frame.png window_clip.wav` therefore compute the same spectrogram with
the same function; for a 10 s clip and t = 5 s the window is the official crop itself.

(A 3 s window written as a 3 s WAV is *not* heard as itself by the official transform: tiling
puts its copies at 0, 3, 6, 9 s, so the 3.5-6.5 s crop is the window turned by 0.5 s.)
"""
from __future__ import annotations

import numpy as np

from sslrt.errors import SslrtError


def window_length(spec) -> int:
    """Samples the family hears, at its sample rate."""
    return int(round(spec.audio.segment_seconds * spec.audio.sample_rate))


def window_start(t: float, track_length: int, spec, track_start: float = 0.0) -> int | None:
    """First sample (index into the track at the family's rate) of the window centred on t,
    moved inside [0, track_length); None when the track is shorter than the window (use it whole)."""
    n = window_length(spec)
    if track_length < n:
        return None
    first = int(round((t - track_start) * spec.audio.sample_rate)) - n // 2
    return min(max(first, 0), track_length - n)


def audio_window(track: np.ndarray, t: float, spec, track_start: float = 0.0) -> np.ndarray:
    """The window of `track` (1-D, at the family's sample rate, starting at `track_start` seconds)
    that a frame at time t hears; the whole track if it is shorter than the window."""
    track = np.asarray(track)
    if track.ndim != 1 or track.size == 0:
        raise SslrtError(f"audio window: expected a non-empty 1-D track, got shape {track.shape}")
    first = window_start(t, track.shape[0], spec, track_start)
    if first is None:
        return track
    return track[first:first + window_length(spec)]


def window_clip(window: np.ndarray, spec) -> np.ndarray:
    """The waveform (at the family's rate) whose clip transform hears exactly `window`.

    A window shorter than the family's segment (a short track) is returned as is: the transform
    tiles it as the official code tiles short clips. Families whose segment is not a fixed crop
    hear the window as their whole clip.
    """
    window = np.asarray(window, dtype=np.float64)
    a = spec.audio
    n = window_length(spec)
    if window.shape[0] != n or a.segment != "crop" or a.crop is None:
        return window
    lo, hi = a.crop
    if hi - lo != n:
        raise SslrtError(f"family {spec.name}: crop {a.crop} is not segment_seconds ({a.segment_seconds} s) long")
    clip = np.zeros(int(round(a.clip_seconds * a.sample_rate)), dtype=np.float64)
    clip[lo:hi] = window
    return clip
