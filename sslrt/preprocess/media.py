"""Media files -> numpy, through PyAV (whose wheels bundle FFmpeg: no system ffmpeg needed).

Audio: any container and codec FFmpeg reads (mp4/m4a/aac, webm/opus, mkv, mov, mp3, flac, ...),
decoded to what soundfile would give for the same PCM data: float64, channel 0 (no downmix),
integer samples scaled like libsndfile (s16 / 32768, s32 / 2**31, u8 (x - 128) / 128), float
samples as they are. So the same samples give the same spectrogram whatever the container.

Video: frames in presentation order with their time (pts x time base: variable frame rates keep
their real times), decoded to RGB uint8 and turned upright where the stream carries a rotation
(display matrix), as a player shows them.

PyAV is imported lazily: image + WAV workloads never load it. Times are seconds on the file's
clock (pts x time base); `MediaInfo.origin` is where the file starts (0 for most files).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from sslrt.errors import BackendUnavailable, SslrtError, first_line

# Extensions taken as video without probing (others are probed when an image decoder refuses them).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                              ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".gif", ".y4m"})


def _av():
    try:
        import av
        import av.logging
    except ImportError:  # pragma: no cover - av is a dependency
        raise BackendUnavailable("video and compressed audio need PyAV: pip install av") from None
    av.logging.set_level(None)  # FFmpeg's own log lines never reach the user's stderr
    return av


def check_file(path: str | os.PathLike, what: str = "media") -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SslrtError(f"{what} not found: {path}")
    if os.path.getsize(path) == 0:
        raise SslrtError(f"{what} is empty: {path}")
    return path


@contextlib.contextmanager
def open_media(path: str | os.PathLike, what: str = "media"):
    """An input container; FFmpeg's errors (here and inside the block) become one line naming the file."""
    path = check_file(path, what)
    av = _av()
    try:
        container = av.open(path, "r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise SslrtError(f"{what} is corrupt or in an unsupported format: {path} ({first_line(exc)})") from None
    try:
        yield container
    except av.error.FFmpegError as exc:
        raise SslrtError(f"{what} is corrupt or truncated: {path} ({first_line(exc)})") from None
    finally:
        container.close()


# -- what a file holds ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int  # as displayed (after rotation)
    height: int
    rotation: int  # degrees counterclockwise the stored picture is turned for display (0, 90, 180, 270)
    fps: float  # average frame rate (frame times are the pts, so variable rates are kept)
    frames: int  # frames declared by the container (0: unknown)


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MediaInfo:
    path: str
    format: str
    origin: float  # the file's start time, seconds
    duration: float  # seconds (0 when the container does not say)
    video: VideoInfo | None
    audio: AudioInfo | None


def _decoder_name(stream, path: str, kind: str) -> str:
    ctx = stream.codec_context
    codec = getattr(ctx, "codec", None)
    name = getattr(ctx, "name", None) or getattr(codec, "name", None)
    if not name or name == "none":
        raise SslrtError(f"{path}: the {kind} stream's codec is not supported (no FFmpeg decoder for it)")
    return name


def probe(path: str | os.PathLike, what: str = "media") -> MediaInfo:
    """Streams, sizes, rates and duration, without decoding; the rotation is read from the first
    frame's display matrix (decoders attach it there)."""
    with open_media(path, what) as c:
        return _info(c, os.fspath(path))


def _info(c, path: str) -> MediaInfo:
    origin = (c.start_time or 0) / 1e6
    duration = (c.duration or 0) / 1e6
    video = audio = None
    if c.streams.video:
        vs = c.streams.video[0]
        name = _decoder_name(vs, path, "video")
        rotation = _first_frame_rotation(c, vs)
        w, h = vs.codec_context.width, vs.codec_context.height
        if rotation in (90, 270):
            w, h = h, w
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        video = VideoInfo(name, int(w), int(h), rotation, float(rate) if rate else 0.0, int(vs.frames or 0))
    if c.streams.audio:
        st = c.streams.audio[0]
        name = _decoder_name(st, path, "audio")
        audio = AudioInfo(name, int(st.codec_context.sample_rate or 0), int(st.codec_context.channels or 0))
    if duration <= 0:
        for st in c.streams:
            if st.duration and st.time_base:
                duration = max(duration, float(st.duration * st.time_base))
    return MediaInfo(path, c.format.name, origin, duration, video, audio)


def _first_frame_rotation(c, vs) -> int:
    """Decode one frame to read its rotation, then rewind (cheap: one keyframe)."""
    try:
        for frame in c.decode(vs):
            return frame_rotation(frame)
    except Exception:  # corrupt streams are reported by the readers, with context
        return 0
    finally:
        with contextlib.suppress(Exception):
            c.seek(0)
    return 0


def frame_rotation(frame) -> int:
    """Degrees counterclockwise a decoded frame must turn to be shown upright (0/90/180/270)."""
    try:
        angle = frame.rotation  # PyAV: the display matrix's rotation, counterclockwise, [-180, 180]
    except Exception:  # pragma: no cover - old PyAV
        return 0
    return int(round(angle / 90.0)) * 90 % 360


def is_video_file(path: str | os.PathLike) -> bool:
    """By extension first; files of other extensions that an image decoder cannot read are probed."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return True
    if ext in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"):
        return False
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return False
    try:
        with open_media(path) as c:
            return bool(c.streams.video) and c.format.name not in ("image2", "png_pipe", "jpeg_pipe")
    except SslrtError:
        return False


# -- audio -----------------------------------------------------------------------------------------
_SCALE = {"s16": 1 / 32768, "s16p": 1 / 32768, "s32": 1 / 2**31, "s32p": 1 / 2**31, "s64": 1 / 2**63, "s64p": 1 / 2**63,
          "flt": None, "fltp": None, "dbl": None, "dblp": None}


def frame_channel0(frame) -> np.ndarray:
    """One decoded audio frame -> float64 channel 0, scaled as libsndfile scales that sample type."""
    fmt = frame.format.name
    arr = frame.to_ndarray()
    if frame.format.is_planar:
        x = arr[0]
    else:
        x = arr.reshape(-1)[:: max(1, len(frame.layout.channels))]
    if fmt in ("u8", "u8p"):
        return (x.astype(np.float64) - 128.0) / 128.0
    if fmt not in _SCALE:
        raise SslrtError(f"unsupported audio sample format {fmt}")
    scale = _SCALE[fmt]
    return x.astype(np.float64) if scale is None else x.astype(np.float64) * scale


def iter_audio(path: str | os.PathLike, start: float | None = None, what: str = "audio") -> Iterator[tuple[float, np.ndarray, int]]:
    """(time of the block's first sample, float64 channel-0 samples, rate) per decoded frame, in order;
    from `start` seconds (file clock) when given (the first block may begin earlier)."""
    with open_media(path, what) as c:
        if not c.streams.audio:
            raise SslrtError(f"{os.fspath(path)} has no audio stream")
        st = c.streams.audio[0]
        _decoder_name(st, os.fspath(path), "audio")
        st.thread_type = "AUTO"
        if start is not None and start > 0 and st.time_base:
            c.seek(int(start / st.time_base), stream=st, backward=True)
        t_next = None
        for frame in c.decode(st):
            if frame.samples == 0:
                continue
            rate = frame.sample_rate
            t0 = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else t_next
            if t0 is None:
                t0 = (c.start_time or 0) / 1e6
            yield t0, frame_channel0(frame), rate
            t_next = t0 + frame.samples / rate


def decode_audio(path: str | os.PathLike, what: str = "audio") -> tuple[np.ndarray, int]:
    """The whole audio stream: (float64 channel-0 samples, rate), as soundfile.read would give for
    the same PCM data."""
    blocks, rate = [], None
    for _, x, r in iter_audio(path, what=what):
        if rate is None:
            rate = r
        elif r != rate:
            raise SslrtError(f"{what}: the sample rate changes inside the stream ({rate} -> {r} Hz): {path}")
        blocks.append(x)
    if not blocks:
        raise SslrtError(f"{what} has no samples: {path}")
    return np.concatenate(blocks), int(rate)


# -- video -----------------------------------------------------------------------------------------
def frame_to_rgb(frame, rotation: int = 0) -> np.ndarray:
    """A decoded video frame -> RGB uint8 (H, W, 3), turned upright."""
    rgb = frame.to_ndarray(format="rgb24")
    if rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    return rgb


@dataclass
class DecodedFrame:
    index: int  # position in the decoded range, from 0
    time: float  # seconds, file clock
    frame: object  # av.VideoFrame (converted only where needed)


def iter_video(container, start: float | None = None, end: float | None = None) -> Iterator[DecodedFrame]:
    """Frames of the first video stream with time in [start, end), in presentation order. Missing
    timestamps are filled from the previous frame and the average rate."""
    vs = container.streams.video[0]
    vs.thread_type = "AUTO"
    if start is not None and start > 0 and vs.time_base:
        container.seek(int(start / vs.time_base), stream=vs, backward=True)
    rate = float(vs.average_rate or vs.guessed_rate or 25)
    index, last = 0, None
    for frame in container.decode(vs):
        t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None
        if t is None or (last is not None and t <= last):
            t = (last + 1 / rate) if last is not None else 0.0
        last = t
        if start is not None and t < start - 1e-9:
            continue
        if end is not None and t >= end - 1e-9:
            break
        yield DecodedFrame(index, t, frame)
        index += 1


def read_frame(path: str | os.PathLike, at: float, what: str = "video") -> tuple[np.ndarray, float]:
    """The frame shown at `at` seconds (file clock): the last one whose time is <= at (the first
    frame before it). Returns (RGB uint8, the frame's time)."""
    with open_media(path, what) as c:
        if not c.streams.video:
            raise SslrtError(f"{os.fspath(path)} has no video stream")
        _decoder_name(c.streams.video[0], os.fspath(path), "video")
        chosen = None
        for item in iter_video(c, start=max(0.0, at - 10.0)):
            if chosen is not None and item.time > at + 1e-6:
                break
            chosen = item
        if chosen is None:
            raise SslrtError(f"{what} has no frames at {at:.3f} s: {path}")
        return frame_to_rgb(chosen.frame, frame_rotation(chosen.frame)), chosen.time
