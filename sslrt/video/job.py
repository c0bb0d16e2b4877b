"""`sslrt video`: where the sound comes from, frame by frame, in a bounded streaming pipeline.

    reader thread      decode frames (PyAV) -> sample at --fps -> for a sampled frame: RGB, the
                       audio window centred on its time (AudioTrack), Localizer.prepare (the runtime's
                       preprocessing)
    inference thread   batches of prepared pairs -> Localizer.run_prepared (encoder graphs and
                       embedding caches) -> track records; every frame gets the heatmap of its
                       time, interpolated between the sampled times around it
    render thread      overlay (heatmap, box, peak, "no sound source") on the frame
    encode thread      H.264 in MP4 (VideoWriter), the source's audio packets copied in

Stages are joined by bounded queues, so memory does not grow with the video's length: at most a
few queues of frames plus the frames between two sampled times wait at any moment. Outputs are
written to temporary files in their folders and renamed only when everything succeeded.
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from sslrt.errors import SslrtError
from sslrt.preprocess.media import MediaInfo, frame_rotation, frame_to_rgb, iter_video, open_media, probe
from sslrt.preprocess.window import window_clip
from sslrt.store.atomic import atomic_path
from sslrt.video.audio import AudioTrack
from sslrt.video.track import TrackWriter, track_record

COLOUR_WIDTH = 320  # width at which a frame's heatmap colours are computed (then enlarged)
STAGES = ("decode", "audio", "preprocess", "inference", "render", "encode")


@dataclass
class VideoOptions:
    fps: float = 4.0  # sampled times per second; 0 = every frame
    start: float | None = None  # seconds from the file's start
    end: float | None = None
    batch_size: int = 4
    video: bool = True  # write the overlay video
    heatmaps: bool = False  # put the native heatmap in each track record
    codec: str | None = None  # default: libx264, else mpeg4
    crf: int = 23
    preset: str = "ultrafast"  # x264: ~2x faster than veryfast at 720p; crf keeps the quality
    queue_size: int = 8  # frames per queue between stages


@dataclass
class VideoResult:
    input: str
    output: str | None
    track: str | None
    csv: str | None
    frames: int  # frames decoded in the range (= frames written to the overlay video)
    samples: int  # sampled times localized
    media_seconds: float  # length of the processed range
    wall_seconds: float
    stages: dict = field(default_factory=dict)  # busy seconds per stage (they overlap in time)
    codec: str | None = None
    notes: list = field(default_factory=list)
    size: tuple = (0, 0)  # (width, height) of the frames as displayed
    backend: str = ""
    precision: str = ""
    silent_samples: int = 0

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time / media time (< 1: faster than real time)."""
        return self.wall_seconds / self.media_seconds if self.media_seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"input": self.input, "output": self.output, "track": self.track, "csv": self.csv, "frames": self.frames,
                "samples": self.samples, "media_seconds": round(self.media_seconds, 4),
                "wall_seconds": round(self.wall_seconds, 4), "rtf": round(self.rtf, 4),
                "stages": {k: round(v, 4) for k, v in self.stages.items()}, "codec": self.codec, "notes": self.notes,
                "size": list(self.size), "backend": self.backend, "precision": self.precision,
                "silent_samples": self.silent_samples}


class _Stopped(Exception):
    """Another stage failed: this one stops quietly."""


_END = object()


@dataclass
class _Item:
    index: int
    time: float
    frame: object  # av.VideoFrame
    rgb: np.ndarray | None = None
    prepared: object = None
    result: object = None
    rotation: int = 0


class _Pipeline:
    def __init__(self, n_queues: int, size: int):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.queues = [queue.Queue(maxsize=size) for _ in range(n_queues)]
        self.busy = dict.fromkeys(STAGES, 0.0)
        self.frames_done = 0
        self.media_done = 0.0

    def put(self, q, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self, q):
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue

    def thread(self, target, name: str) -> threading.Thread:
        def run():
            try:
                target()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self.errors.append(exc)
                self.stop.set()
        t = threading.Thread(target=run, name=f"sslrt-video-{name}", daemon=True)
        t.start()
        return t


class Sampler:
    """Frames to localize: the first frame at or after each time start + k / fps (every frame at fps 0)."""

    def __init__(self, fps: float, start: float):
        self.fps, self.start, self.next = fps, start, start

    def take(self, t: float) -> bool:
        if self.fps <= 0:
            return True
        if t < self.next - 1e-9:
            return False
        self.next = self.start + (math.floor((t - self.start) * self.fps + 1e-9) + 1) / self.fps
        return True


def interpolate(item_t: float, prev: _Item, nxt: _Item | None):
    """(heatmap, bbox, peak, sounding) at a frame's time from the sampled results around it."""
    a = prev.result
    if nxt is None or nxt is prev or nxt.time <= prev.time:
        return a.heatmap, a.bbox, a.peak, a.sounding
    b = nxt.result
    w = min(1.0, max(0.0, (item_t - prev.time) / (nxt.time - prev.time)))
    heat = (1 - w) * a.heatmap + w * b.heatmap
    bbox = [(1 - w) * p + w * q for p, q in zip(a.bbox, b.bbox)]
    peak = [(1 - w) * p + w * q for p, q in zip(a.peak, b.peak)]
    return heat, bbox, peak, (a.sounding if w < 0.5 else b.sounding)


def check_media(info: MediaInfo, need_audio: bool = True) -> None:
    if info.video is None:
        raise SslrtError(f"{info.path} has no video stream (an audio-only file: give it as AUDIO to `sslrt run`)")
    if need_audio and info.audio is None:
        raise SslrtError(f"{info.path} has no audio stream")


def time_range(info: MediaInfo, start: float | None, end: float | None) -> tuple[float, float | None]:
    """[start, end) on the file clock, checked against the media's length."""
    s = float(start or 0.0)
    if s < 0 or (end is not None and end < 0):
        raise SslrtError("--start and --end must be >= 0 seconds")
    if info.duration > 0 and s >= info.duration:
        raise SslrtError(f"--start {s:g} s is past the end of {info.path} (duration {info.duration:.3f} s)")
    if end is not None and end <= s:
        raise SslrtError(f"--end {end:g} s is not after --start {s:g} s")
    return info.origin + s, (info.origin + end if end is not None else None)


def check_complete(info: MediaInfo, last_frame: float, end: float | None) -> None:
    """A file whose streams stop well before the length its container declares is truncated (its
    video may legitimately end before its audio: then the audio goes on)."""
    declared = info.origin + info.duration
    if info.duration <= 0 or (end is not None and end < declared):
        return
    step = 1 / info.video.fps if info.video and info.video.fps else 0.04
    if declared - (last_frame + step) <= max(0.5, 2 * step):
        return
    audio_end = last_frame
    with open_media(info.path, "video") as c:
        if c.streams.audio:
            st = c.streams.audio[0]
            c.seek(int(max(last_frame - 1, 0) / st.time_base), stream=st, backward=True)
            for pkt in c.demux(st):
                if pkt.pts is not None:
                    audio_end = max(audio_end, float((pkt.pts + (pkt.duration or 0)) * st.time_base))
    if declared - audio_end > max(0.5, 2 * step):
        raise SslrtError(f"{info.path} is truncated: its streams end at {max(last_frame, audio_end) - info.origin:.2f} s "
                         f"of the {info.duration:.2f} s its container declares")


def localize_video(localizer, path: str | os.PathLike, output: str | os.PathLike | None = None,
                   track: str | os.PathLike | None = None, csv_path: str | os.PathLike | None = None,
                   options: VideoOptions | None = None, progress=None) -> VideoResult:
    """Run the pipeline on one media file. `progress(frames_done, media_seconds_done, total_seconds)`
    is called from the caller's thread about five times a second."""
    from sslrt.runtime.overlay import render_overlay_bgr
    from sslrt.video.writer import VideoWriter, choose_codec

    opts = options or VideoOptions()
    path = os.fspath(path)
    if opts.fps < 0:
        raise SslrtError("--fps must be >= 0 (0: every frame)")
    if opts.batch_size < 1:
        raise SslrtError("--batch-size must be >= 1")
    write_video = opts.video and output is not None
    for target in (output if write_video else None, track, csv_path):
        if target is not None:
            folder = os.path.dirname(os.path.abspath(os.fspath(target)))
            if not os.path.isdir(folder):
                raise SslrtError(f"cannot write {target}: folder {folder} does not exist")
    info = probe(path, "video")
    check_media(info)
    start, end = time_range(info, opts.start, opts.end)
    total = ((end if end is not None else info.origin + info.duration) - start) if info.duration > 0 or end else 0.0
    spec = localizer.spec
    codec, note = choose_codec(opts.codec) if write_video else (None, None)
    result = VideoResult(path, os.fspath(output) if write_video else None, os.fspath(track) if track else None,
                         os.fspath(csv_path) if csv_path else None, 0, 0, 0.0, 0.0, codec=codec,
                         notes=[note] if note else [], size=(info.video.width, info.video.height),
                         backend=localizer.engine.backend, precision=localizer.engine.precision)
    pipe = _Pipeline(3, opts.queue_size)
    q_frames, q_render, q_encode = pipe.queues
    t_begin = time.perf_counter()
    last_time = [start]

    with contextlib.ExitStack() as stack:
        tmp_video = stack.enter_context(atomic_path(os.fspath(output), suffix=os.path.splitext(os.fspath(output))[1])) \
            if write_video else None
        tmp_track = stack.enter_context(atomic_path(os.fspath(track), suffix=".jsonl")) if track else None
        tmp_csv = stack.enter_context(atomic_path(os.fspath(csv_path), suffix=".csv")) if csv_path else None
        writer_box: list = []

        def reader():
            audio_start = info.origin
            audio = AudioTrack(path, spec, audio_start, first_time=start)
            sampler = Sampler(opts.fps, start)
            rate = spec.audio.sample_rate
            with open_media(path, "video") as c:
                frames = iter_video(c, start if start > info.origin else None, end)
                rotation = None
                while True:
                    t0 = time.perf_counter()
                    try:
                        item = next(frames)
                    except StopIteration:
                        break
                    if rotation is None:
                        rotation = frame_rotation(item.frame)
                    sampled = sampler.take(item.time)
                    entry = _Item(item.index, item.time, item.frame)
                    if sampled:
                        entry.rgb = frame_to_rgb(item.frame, rotation)
                    t1 = time.perf_counter()
                    pipe.busy["decode"] += t1 - t0
                    if sampled:
                        window = audio.window(item.time)
                        t2 = time.perf_counter()
                        pipe.busy["audio"] += t2 - t1
                        entry.prepared = localizer.prepare(entry.rgb, (window_clip(window, spec), rate))
                        pipe.busy["preprocess"] += time.perf_counter() - t2
                    elif not write_video:
                        last_time[0] = item.time
                        continue
                    entry.rotation = rotation
                    pipe.put(q_frames, entry)
                    last_time[0] = item.time
            check_complete(info, last_time[0], end)
            pipe.put(q_frames, _END)

        def infer():
            pending: deque = deque()
            batch: list = []
            prev = None  # the last sampled item with a result
            writer = TrackWriter(tmp_track, tmp_csv)
            try:
                def run_batch():
                    t0 = time.perf_counter()
                    located = localizer.run_prepared([it.prepared for it in batch])
                    pipe.busy["inference"] += time.perf_counter() - t0
                    for it, res in zip(batch, located):
                        it.result = res
                        it.prepared = None
                        if any("silent" in w for w in res.warnings):
                            result.silent_samples += 1
                        writer.write(track_record(it.time - info.origin, it.index, res, opts.heatmaps))
                        result.samples += 1
                    batch.clear()

                def emit(until_last_sample: bool):
                    """Send the frames whose surrounding results are known to the renderer."""
                    nonlocal prev
                    while pending:
                        it = pending[0]
                        if it.result is not None:
                            prev = it
                            nxt = it
                        else:
                            nxt = next((p for p in pending if p.result is not None and p.time >= it.time), None)
                            if nxt is None and not until_last_sample:
                                return
                        pending.popleft()
                        if write_video:
                            heat, bbox, peak, sounding = interpolate(it.time, prev, nxt)
                            pipe.put(q_render, (it, heat, bbox, peak, sounding))
                        else:
                            pipe.frames_done += 1
                            pipe.media_done = it.time - start

                while True:
                    it = pipe.get(q_frames)
                    if it is _END:
                        if batch:
                            run_batch()
                        emit(True)
                        break
                    pending.append(it)
                    if it.prepared is not None:
                        batch.append(it)
                    if len(batch) >= opts.batch_size:
                        run_batch()
                        emit(False)
                if write_video:
                    pipe.put(q_render, _END)
            finally:
                writer.close()

        def render():
            while True:
                msg = pipe.get(q_render)
                if msg is _END:
                    pipe.put(q_encode, _END)
                    return
                it, heat, bbox, peak, sounding = msg
                t0 = time.perf_counter()
                if it.rgb is not None:
                    import cv2

                    bgr = cv2.cvtColor(it.rgb, cv2.COLOR_RGB2BGR)
                else:
                    bgr = it.frame.to_ndarray(format="bgr24")
                    if it.rotation:
                        bgr = np.ascontiguousarray(np.rot90(bgr, k=it.rotation // 90))
                out = render_overlay_bgr(bgr, heat, bbox, peak, sounding=sounding, colour_width=COLOUR_WIDTH)
                pipe.busy["render"] += time.perf_counter() - t0
                pipe.put(q_encode, (it.time, out))

        def encode():
            writer = writer_box[0]
            while True:
                msg = pipe.get(q_encode)
                if msg is _END:
                    t0 = time.perf_counter()
                    writer.close()
                    pipe.busy["encode"] += time.perf_counter() - t0
                    return
                t, bgr = msg
                t0 = time.perf_counter()
                writer.encode(bgr, t - start)
                pipe.busy["encode"] += time.perf_counter() - t0
                pipe.frames_done += 1
                pipe.media_done = t - start

        if write_video:
            from fractions import Fraction

            with open_media(path, "video") as c:
                vs = c.streams.video[0]
                tb = vs.time_base or Fraction(1, 90000)
                rate = vs.average_rate
            writer_box.append(VideoWriter(tmp_video, path, info.video.width, info.video.height, tb, rate,
                                          start - info.origin if start > info.origin else 0.0,
                                          (end - info.origin) if end is not None else None, codec,
                                          crf=opts.crf, preset=opts.preset))
            result.notes.extend(writer_box[0].notes)
        threads = [pipe.thread(reader, "reader"), pipe.thread(infer, "inference")]
        if write_video:
            threads += [pipe.thread(render, "render"), pipe.thread(encode, "encode")]
        try:
            while any(t.is_alive() for t in threads):
                threads[-1].join(timeout=0.2)
                if progress is not None:
                    progress(pipe.frames_done, max(pipe.media_done, last_time[0] - start), total)
        except BaseException:
            pipe.stop.set()
            for t in threads:
                t.join()
            if writer_box:
                writer_box[0].abort()
            raise
        if pipe.errors:
            if writer_box:
                writer_box[0].abort()
            exc = pipe.errors[0]
            if isinstance(exc, SslrtError):
                raise exc
            import av

            if isinstance(exc, av.error.FFmpegError):
                raise SslrtError(f"{path}: corrupt or truncated media ({exc})") from None
            raise exc
        if pipe.frames_done == 0 and result.samples == 0:
            raise SslrtError(f"{path} has no video frames in the range processed")
        result.frames = pipe.frames_done
        result.media_seconds = total if total > 0 else pipe.media_done
        result.stages = dict(pipe.busy)
    result.wall_seconds = time.perf_counter() - t_begin
    if result.silent_samples:
        result.notes.append(f"the audio is silent (all zeros) at {result.silent_samples} of {result.samples} sampled "
                            "times: there the heatmap reflects the picture only")
    return result
