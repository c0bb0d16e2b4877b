"""One frame of a video and the audio window centred on it: what `sslrt run clip.mp4` localizes.

The frame shown at time t (default: the middle of the clip) and the family's window of the
video's own audio centred on t (preprocess.window), fed through `window_clip` exactly as
`sslrt video` feeds its sampled frames; for a 10 s clip that is the official crop (3.5-6.5 s)
and the middle frame. An audio file given beside the video replaces its audio (whole file, the
family's usual transform).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sslrt.errors import SslrtError
from sslrt.preprocess.media import MediaInfo, probe, read_frame


@dataclass
class VideoPair:
    rgb: np.ndarray
    audio: object  # a path, or (waveform, rate)
    time: float  # seconds from the start of the file
    frame_time: float
    image_name: str
    audio_name: str


def check_video_input(path: str, audio: str | None, at: float | None) -> MediaInfo:
    from sslrt.video.job import check_media

    info = probe(path, "video")
    check_media(info, need_audio=audio is None)
    if at is not None and (at < 0 or (info.duration > 0 and at > info.duration)):
        raise SslrtError(f"--at {at:g} s is outside {path} (duration {info.duration:.3f} s)")
    return info


def video_pair(path: str | os.PathLike, audio: str | None, at: float | None, spec, info: MediaInfo | None = None) -> VideoPair:
    from sslrt.preprocess.audio import load_audio, resample_to_16k
    from sslrt.preprocess.window import audio_window, window_clip

    path = os.fspath(path)
    info = info or check_video_input(path, audio, at)
    t = at if at is not None else info.duration / 2
    rgb, frame_time = read_frame(path, info.origin + t)
    if audio is None:
        samples, sr = load_audio(path)
        if spec.audio.sample_rate != 16000:  # pragma: no cover - every family hears 16 kHz today
            raise SslrtError(f"family {spec.name} hears {spec.audio.sample_rate} Hz; video windows are built at 16 kHz")
        track = resample_to_16k(samples, sr)
        window = audio_window(track, info.origin + t, spec, track_start=info.origin)
        audio_in = (window_clip(window, spec), spec.audio.sample_rate)
        audio_name = f"{path}@{t:.3f}s"
    else:
        audio_in, audio_name = audio, audio
    return VideoPair(rgb, audio_in, t, frame_time - info.origin, f"{path}@{frame_time - info.origin:.3f}s", audio_name)
