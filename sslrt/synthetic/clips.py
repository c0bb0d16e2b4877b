"""Generated video clips: a scene whose sounding object moves, a silent distractor, their sound,
and the true box of the sounding object in every frame; written with PyAV (no system ffmpeg).

Used by `sslrt demo --video`, the video tests and benchmarks/video_bench.py.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from sslrt.synthetic.generated import SAMPLE_RATE
from sslrt.synthetic.scenes.classes import CLASS_BY_NAME, CLASS_NAMES
from sslrt.synthetic.scenes.generator import _vary_colour, render_background, synthesize_sound


@dataclass
class MovingClip:
    """Frame i: the background, the silent object (fixed) and the sounding object moving back and
    forth along a horizontal path (a sine in time). Boxes are in frame pixels, x1/y1 exclusive."""

    width: int
    height: int
    fps: float
    seconds: float
    sounding: str
    silent: str
    waveform: np.ndarray = field(repr=False)  # float32 mono at sample_rate
    sample_rate: int = SAMPLE_RATE
    background: np.ndarray = field(repr=False, default=None)  # (H, W, 3) uint8
    sprites: list = field(repr=False, default_factory=list)  # [(mask, texture)] sounding, silent
    silent_xy: tuple = (0, 0)
    path_y: int = 0
    path_x: tuple = (0, 0)  # leftmost and rightmost x of the sounding object's top-left corner
    period: float = 4.0  # seconds for a full back-and-forth

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))

    def sounding_xy(self, t: float) -> tuple[int, int]:
        x_lo, x_hi = self.path_x
        u = 0.5 - 0.5 * math.cos(2 * math.pi * t / self.period)  # 0 -> 1 -> 0, smooth at the ends
        return int(round(x_lo + u * (x_hi - x_lo))), self.path_y

    def box_at(self, t: float) -> list[int]:
        """True box of the sounding object at time t, frame pixels."""
        mask = self.sprites[0][0]
        x, y = self.sounding_xy(t)
        ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        return [x + int(xs[0]), y + int(ys[0]), x + int(xs[-1]) + 1, y + int(ys[-1]) + 1]

    def frame(self, i: int) -> np.ndarray:
        img = self.background.copy()
        for (mask, tex), (x, y) in zip(self.sprites, (self.sounding_xy(i / self.fps), self.silent_xy)):
            h, w = mask.shape
            region = img[y:y + h, x:x + w]
            region[mask] = tex[mask]
        return img


def moving_clip(seed: int = 0, seconds: float = 4.0, fps: float = 25, size: tuple[int, int] = (224, 224),
                sounding: str | None = None, silent: str | None = None) -> MovingClip:
    """A clip of `size` (width, height): the sounding object sweeps the upper half of the picture,
    the silent one sits in the lower half, sized like the objects of the training scenes."""
    w, h = size
    rng = np.random.default_rng([seed, 7])
    names = [CLASS_NAMES[i] for i in rng.choice(len(CLASS_NAMES), size=2, replace=False)]
    sounding, silent = sounding or names[0], silent or names[1]
    side = max(w, h)
    bg = render_background(rng, side)[:h, :w]
    background = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    obj = max(24, int(round(0.42 * min(w, h))))
    sprites = []
    for name in (sounding, silent):
        cls = CLASS_BY_NAME[name]
        mask = cls.shape(obj, obj)
        tex = np.clip(np.rint(cls.texture(obj, obj, _vary_colour(cls.colour, rng), rng)), 0, 255).astype(np.uint8)
        sprites.append((mask, tex))
    margin = max(2, int(0.05 * min(w, h)))
    path_y = margin
    silent_xy = (int(rng.integers(margin, max(margin + 1, w - obj - margin))), h - obj - margin)
    wave = synthesize_sound(sounding, np.random.default_rng([seed, 8]), seconds=seconds)
    return MovingClip(w, h, fps, seconds, sounding, silent, wave, SAMPLE_RATE, background, sprites, silent_xy,
                      path_y, (margin, w - obj - margin), period=min(4.0, max(2.0, seconds)))


def write_clip(path: str | os.PathLike, frames, fps: float, width: int, height: int, audio: np.ndarray | None = None,
               sample_rate: int = SAMPLE_RATE, vcodec: str = "libx264", acodec: str = "aac", fmt: str | None = None,
               crf: int = 23, preset: str = "ultrafast", times=None) -> str:
    """Encode RGB frames (an iterable of (H, W, 3) uint8) and a mono waveform (float in [-1, 1] or
    int16) into a media file. `times` (seconds per frame) gives a variable frame rate."""
    import av

    path = os.fspath(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(path, "w", format=fmt) as out:
        if frames is None:  # audio only
            _AudioWriter(out, acodec, np.asarray(audio), sample_rate).until(None)
            return path
        vs = out.add_stream(vcodec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if times is not None:
            vs.time_base = Fraction(1, 1000)
            vs.codec_context.time_base = Fraction(1, 1000)
        if vcodec == "libx264":
            vs.codec_context.options = {"crf": str(crf), "preset": preset}
        audio_writer = _AudioWriter(out, acodec, np.asarray(audio), sample_rate) if audio is not None else None
        times_it = iter(times) if times is not None else None
        t = 0.0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if times_it is not None:
                t = next(times_it)
                frame.pts = int(round(t * 1000))
                frame.time_base = Fraction(1, 1000)
            else:
                frame.pts = i
                t = i / fps
            for p in vs.encode(frame):
                out.mux(p)
            if audio_writer is not None:
                audio_writer.until(t + 1.0)  # interleaved: audio a little ahead of the video
        for p in vs.encode(None):
            out.mux(p)
        if audio_writer is not None:
            audio_writer.until(None)
    return path


class _AudioWriter:
    """A mono waveform (float in [-1, 1] or int16) encoded in frames of the encoder's size."""

    def __init__(self, out, codec: str, audio: np.ndarray, sample_rate: int):
        self.out, self.rate = out, sample_rate
        self.stream = out.add_stream(codec, rate=sample_rate)
        self.stream.layout = "mono"
        if audio.dtype == np.int16:
            self.ints, self.floats = audio, audio.astype(np.float32) / 32768
        else:
            self.floats = np.clip(audio.astype(np.float32), -1, 1)
            self.ints = np.clip(np.rint(self.floats * 32767), -32768, 32767).astype(np.int16)
        self.pos = 0

    def until(self, t: float | None) -> None:
        import av

        ctx = self.stream.codec_context
        fmt = ctx.format.name if ctx.format is not None else "s16"
        n = ctx.frame_size or 1024
        stop = len(self.ints) if t is None else min(len(self.ints), int(t * self.rate))
        while self.pos < stop:
            k = self.pos
            if fmt.startswith("s16"):
                frame = av.AudioFrame.from_ndarray(self.ints[None, k:k + n], format=fmt, layout="mono")
            elif fmt.startswith("s32"):
                frame = av.AudioFrame.from_ndarray(self.ints[None, k:k + n].astype(np.int32) << 16, format=fmt, layout="mono")
            else:
                frame = av.AudioFrame.from_ndarray(self.floats[None, k:k + n], format="fltp" if fmt.endswith("p") else "flt",
                                                   layout="mono")
            frame.sample_rate = self.rate
            frame.pts = k
            frame.time_base = Fraction(1, self.rate)
            for p in self.stream.encode(frame):
                self.out.mux(p)
            self.pos += n
        if t is None:
            for p in self.stream.encode(None):
                self.out.mux(p)


def write_moving_clip(path: str | os.PathLike, clip: MovingClip, **kwargs) -> str:
    return write_clip(path, (clip.frame(i) for i in range(clip.frames)), clip.fps, clip.width, clip.height,
                      clip.waveform, clip.sample_rate, **kwargs)
