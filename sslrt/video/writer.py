"""The overlay video: frames encoded (H.264 in MP4 by default), the source's audio packets copied
in (remuxed, not re-encoded), written to a temporary file that the job renames at the end.

H.264 4:2:0 needs an even width and height: an odd-sized picture is padded by one pixel on the
right and/or bottom (the last column/row repeated), so no source pixel is lost.
"""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from sslrt.errors import SslrtError
from sslrt.preprocess.media import _av

PREFERRED_CODECS = ("libx264", "mpeg4")


def choose_codec(wanted: str | None = None) -> tuple[str, str | None]:
    """(codec, note): libx264 where PyAV's FFmpeg has it, else mpeg4 (MPEG-4 Part 2), said in the note."""
    av = _av()
    if wanted:
        if wanted not in av.codecs_available:
            raise SslrtError(f"video codec {wanted!r} is not in this FFmpeg (PyAV {av.__version__})")
        return wanted, None
    if "libx264" in av.codecs_available:
        return "libx264", None
    return "mpeg4", "libx264 is not in this PyAV build: the overlay video is MPEG-4 Part 2 (mpeg4)"


def even_size(width: int, height: int) -> tuple[int, int]:
    return width + (width & 1), height + (height & 1)


def pad_even(bgr: np.ndarray) -> np.ndarray:
    h, w = bgr.shape[:2]
    if not (h & 1 or w & 1):
        return bgr
    return np.pad(bgr, ((0, h & 1), (0, w & 1), (0, 0)), mode="edge")


class VideoWriter:
    """encode(bgr, time) for each frame in order, then close(); audio packets of the source in
    [start, end) are interleaved as the video advances, their times shifted by -start."""

    def __init__(self, path: str, source: str, width: int, height: int, time_base: Fraction, rate: Fraction | None,
                 start: float, end: float | None, codec: str, crf: int = 23, preset: str = "veryfast",
                 audio: bool = True, threads: int = 0):
        av = _av()
        self.av = av
        self.notes: list[str] = []
        self.start = start
        self.end = end
        ext = os.path.splitext(path)[1].lower()
        fmt = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}.get(ext, "mp4")
        self.out = av.open(path, "w", format=fmt)
        try:
            self.width, self.height = even_size(width, height)
            vs = self.out.add_stream(codec, rate=rate or Fraction(25))
            vs.width, vs.height, vs.pix_fmt = self.width, self.height, "yuv420p"
            vs.time_base = time_base
            vs.codec_context.time_base = time_base
            if threads:
                vs.codec_context.thread_count = threads
            if codec == "libx264":
                vs.codec_context.options = {"crf": str(crf), "preset": preset}
            elif codec == "mpeg4":
                vs.codec_context.options = {"qscale": "4"}
                vs.codec_context.flags |= 2  # qscale
            self.vs = vs
            self.tb = time_base
            self.src = None
            self.audio_out = None
            self._pending = None
            if audio:
                self._open_audio(source)
        except Exception:
            self.out.close()
            raise

    def _open_audio(self, source: str) -> None:
        av = self.av
        self.src = av.open(source, "r")
        ast = self.src.streams.audio[0]
        name = ast.codec_context.name
        supported = getattr(self.out, "supported_codecs", None)
        if supported is not None and name not in supported:
            # The container cannot hold the source's codec (e.g. PCM or Vorbis in MP4): AAC instead.
            self.notes.append(f"the source's {name} audio cannot go into {self.out.format.name}: re-encoded to AAC")
            self.audio_out = self.out.add_stream("aac", rate=ast.codec_context.sample_rate)
            self._transcode = True
        else:
            self.audio_out = self.out.add_stream_from_template(ast)
            self._transcode = False
        self._ast = ast
        if self.start > 0:
            self.src.seek(int(self.start / ast.time_base), stream=ast, backward=True)
        self._packets = self.src.demux(ast)
        self._shift = int(round(self.start / ast.time_base))
        self._resampler = None

    def _audio_until(self, t: float | None) -> None:
        """Mux the source's audio packets whose time is before t (all remaining when None)."""
        if self.src is None:
            return
        tb = self._ast.time_base
        while True:
            pkt = self._pending
            if pkt is None:
                try:
                    pkt = next(self._packets)
                except StopIteration:
                    self.src.close()
                    self.src = None
                    self._flush_audio_encoder()
                    return
                if pkt.dts is None and pkt.pts is None:
                    continue  # the demuxer's flush packet
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            pt = float(ts * tb)
            if self.end is not None and pt >= self.end:
                self._pending = None
                self.src.close()
                self.src = None
                self._flush_audio_encoder()
                return
            if t is not None and pt - self.start > t:
                self._pending = pkt
                return
            self._pending = None
            if self.start > 0 and pt + float((pkt.duration or 0) * tb) <= self.start:
                continue
            if self._transcode:
                self._encode_audio(pkt)
                continue
            if pkt.pts is not None:
                pkt.pts -= self._shift
            if pkt.dts is not None:
                pkt.dts -= self._shift
            pkt.stream = self.audio_out
            self.out.mux(pkt)

    def _encode_audio(self, pkt) -> None:
        av = self.av
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout=self.audio_out.codec_context.layout,
                                                rate=self.audio_out.codec_context.sample_rate)
        for frame in pkt.decode():
            frame.pts = None
            for f in self._resampler.resample(frame):
                for p in self.audio_out.encode(f):
                    self.out.mux(p)

    def _flush_audio_encoder(self) -> None:
        if getattr(self, "_transcode", False):
            for p in self.audio_out.encode(None):
                self.out.mux(p)

    def encode(self, bgr: np.ndarray, t: float) -> None:
        """One frame shown from `t` seconds after the start of the output."""
        frame = self.av.VideoFrame.from_ndarray(pad_even(bgr), format="bgr24")
        frame.pts = int(round(t / self.tb))
        frame.time_base = self.tb
        self._audio_until(t)
        for p in self.vs.encode(frame):
            self.out.mux(p)

    def close(self) -> None:
        try:
            for p in self.vs.encode(None):
                self.out.mux(p)
            self._audio_until(None)
        finally:
            if self.src is not None:
                self.src.close()
            self.out.close()

    def abort(self) -> None:
        for c in (self.src, self.out):
            if c is not None:
                try:
                    c.close()
                except Exception:
                    pass
