"""Audio file -> the model's audio input, for every family, as its official evaluation computes it.

A family's `AudioSpec` (sslrt/spec) says how: which reader turns the file into floats, how
channels become one, which part of the clip the model hears, which spectrogram, which log.
With no spec, the paper's own front end (ours):

  soundfile.read (float64) -> channel 0 -> tile to 10 s -> keep 10 s -> keep samples
  [56000, 104000) -> clip to [-1, 1] -> scipy.signal.spectrogram(nperseg=512, noverlap=353) ->
  log(S + 1e-7) / 12 -> (1, 257, 299) float32.

The official code assumes 16 kHz; other rates are resampled to 16 kHz first so that the crop,
the roll and the frequency axis mean what the model was trained on (scipy's resample_poly,
imported only then). Silent audio is valid input (SilentAudioWarning). numpy only: no torch,
no scipy at 16 kHz; soundfile and PyAV are imported when a file is read.

Files are read only as far as the transform looks (the libsndfile families: the first clip
seconds, see read_audio_head): a 1-hour file costs what a 10 s one does. Rates outside
MIN_SAMPLE_RATE..MAX_SAMPLE_RATE and truncated files are refused with one line; arrays follow the
rules of waveform_frames.
"""
from __future__ import annotations

import math
import os
import struct
import warnings
from typing import NamedTuple

import numpy as np

from sslrt.errors import AudioInputWarning, SslrtError
from sslrt.preprocess.spectrogram import linear_spectrogram, mel_spectrogram_db, mel_spectrogram_db_exact, resample
from sslrt.spec.base import AudioSpec

_OURS_AUDIO = AudioSpec()  # the dataclass defaults are the paper's front end (sslrt/spec/ours.py)


class SilentAudioWarning(AudioInputWarning):
    """The clip is all zeros. Valid input (the extended test sets hold such clips); the heatmap
    then reflects the image alone."""


# Sample rates accepted, from files and arrays alike, checked before any decoding or resampling:
# the resampler's cost grows with the rate ratio (a header claiming 1 Hz cost 84 s and 20 GB).
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
# Frames read past the clip: the resampler's filter reaches ~10 * max(up, down) / up input samples
# (<= 240 at 384 kHz) past an output sample, so with this margin every output sample of the clip is
# the one a full read gives.
_HEAD_MARGIN_SECONDS = 0.5
# Head reads of at most this many samples (all channels) are one read call: libsndfile's MP3
# decoder returns different samples when reads split an MPEG frame. Larger (many-channel) heads
# are read in blocks of this size, channel 0 kept, so memory stays bounded.
_SINGLE_READ_SAMPLES = 1 << 24
# libsndfile may estimate an MPEG file's length, so fewer frames than it announced is no proof
# of truncation there.
_ESTIMATED_LENGTH_FORMATS = {"MP3", "MPEG"}
# WAVE format tags whose block_align is one frame: sizes are then reported in frames.
_WAV_FRAME_TAGS = {0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE}


def check_sample_rate(sr, name: str = "audio") -> int:
    """The rate as an int, or one-line SslrtError if it is not a whole number of Hz in range."""
    if isinstance(sr, (bool, np.bool_)) or not isinstance(sr, (int, float, np.integer, np.floating)):
        raise SslrtError(f"{name}: sample rate must be a number of Hz, got {sr!r}")
    if not np.isfinite(sr) or int(sr) != sr:
        raise SslrtError(f"{name}: sample rate must be a whole number of Hz, got {sr!r}")
    if not MIN_SAMPLE_RATE <= int(sr) <= MAX_SAMPLE_RATE:
        raise SslrtError(f"{name}: sample rate {int(sr)} Hz is outside the supported "
                         f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return int(sr)


def _wav_truncation(path: str) -> str | None:
    """For a RIFF/WAVE file whose data chunk claims more bytes than the file holds, the one-line
    reason; None otherwise. libsndfile clamps such a file to what is there and says nothing."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos, tag, align = 12, None, 0
        for _ in range(1024):  # chunks before the data: a handful in real files
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(14)
                if len(fmt) == 14:
                    tag, _, _, _, align = struct.unpack("<HHIIH", fmt)
            elif cid == b"data":
                held = size - pos - 8
                # 0 and 0xFFFFFFFF are the "length unknown" of streamed writers: read to the end.
                if length in (0, 0xFFFFFFFF) or held >= length:
                    return None
                if tag in _WAV_FRAME_TAGS and align > 0:
                    return f"header says {length // align} frames, file holds {held // align}"
                return f"header says {length} data bytes, file holds {held}"
            pos += 8 + length + (length & 1)
    return None


class AudioClip(NamedTuple):
    """A decoded file: samples (1-D, or (N, C) where the reader keeps channels), their rate, and
    the duration in seconds the container declares (None: take len / rate)."""

    samples: np.ndarray
    sample_rate: int
    duration: float | None = None


def _audio_spec(spec) -> AudioSpec:
    """None -> ours' AudioSpec; a ModelSpec -> its audio part."""
    if spec is None:
        return _OURS_AUDIO
    return spec if isinstance(spec, AudioSpec) else spec.audio


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise SslrtError(f"audio not found: {path}")
    if os.path.getsize(path) == 0:
        raise SslrtError(f"audio is empty: {path}")


def _keep(block: np.ndarray, all_channels: bool) -> np.ndarray:
    return block.copy() if all_channels else block[:, 0].copy()


def read_audio(path: str | os.PathLike, audio_spec: AudioSpec | None = None) -> AudioClip:
    """Read an audio file the way the family's official reader does, channels made one.

    "soundfile" (ours, lvs): libsndfile float64 (wav, flac, ogg, mp3), channel 0.
    "torchaudio" (ssltie): libsndfile float32, which equals torchaudio.load's (PCM_16 / 32768).
    "pyav" (ezvsl, slavc, fnac): PyAV decode, FFmpeg resampled to s16 mono at the file's rate,
    / 32767, with the container's duration (what their centring uses).
    The libsndfile readers read only the clip the transform uses (read_audio_head).
    """
    spec = _audio_spec(audio_spec)
    path = os.fspath(path)
    _check_file(path)
    if spec.reader == "pyav":
        return _read_pyav(path)
    if spec.reader not in ("soundfile", "torchaudio"):
        raise SslrtError(f"unknown audio reader {spec.reader!r} in the model spec")
    dtype = "float32" if spec.reader == "torchaudio" else "float64"
    samples, sr = read_audio_head(path, spec.clip_seconds, dtype=dtype, all_channels=spec.channels != "first")
    return AudioClip(_to_mono(samples, spec), int(sr), None)


def _read_head_ffmpeg(path: str, seconds: float, dtype: str, all_channels: bool) -> tuple[np.ndarray, int]:
    """read_audio_head for containers libsndfile does not read, through PyAV (media.py): channel 0
    scaled as soundfile scales the same PCM data, decoding stopped once the head is complete."""
    from sslrt.preprocess.media import iter_audio

    blocks, rate, got = [], None, 0
    for _, x, r in iter_audio(path, what="audio"):
        if rate is None:
            rate = check_sample_rate(r, f"audio {path}")
            want = math.ceil((seconds + _HEAD_MARGIN_SECONDS) * rate)
        elif r != rate:
            raise SslrtError(f"audio: the sample rate changes inside the stream ({rate} -> {r} Hz): {path}")
        blocks.append(x)
        got += x.shape[0]
        if got >= want:
            break
    if not got:
        raise SslrtError(f"audio has no samples: {path}")
    samples = np.concatenate(blocks)[:want].astype(dtype)
    return (samples[:, None] if all_channels else samples), int(rate)


def read_audio_head(path: str | os.PathLike, seconds: float, dtype: str = "float64",
                    all_channels: bool = False) -> tuple[np.ndarray, int]:
    """Channel 0 (or, with `all_channels`, every channel as (N, C)) of the first `seconds` (plus a
    resampling margin) of an audio file, as `dtype`.

    Returns (samples, sample_rate); the samples are those a full soundfile.read gives, so the
    spectrogram is the one of a full read while the cost is bounded by `seconds`, not by the file.
    Refuses, with one line naming the file: a rate outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE
    (before reading any sample) and a truncated file (a WAV whose header claims more data than the
    file holds, or any format but MPEG that yields fewer frames than its header announced).
    """
    path = os.fspath(path)
    _check_file(path)
    import soundfile as sf  # here, not at import: the generated-input (parity, GPU test) path needs no libsndfile

    try:
        sf.info(path)
    except Exception:  # not a format libsndfile knows (mp4/m4a, webm, mkv, a video's audio): FFmpeg's turn
        return _read_head_ffmpeg(path, seconds, dtype, all_channels)
    try:
        f = sf.SoundFile(path)
    except Exception as exc:  # libsndfile's errors are plain RuntimeErrors/LibsndfileErrors
        raise SslrtError(f"audio is corrupt or in an unsupported format: {path} ({_first_line(exc)})") from None
    with f:
        sr = check_sample_rate(f.samplerate, f"audio {path}")
        truncated = _wav_truncation(path)
        if truncated:
            raise SslrtError(f"audio is truncated: {path}: {truncated}")
        want = math.ceil((seconds + _HEAD_MARGIN_SECONDS) * sr)
        announced = f.frames
        if announced > 0:
            want = min(want, announced)
        channels = max(1, f.channels)
        try:
            if want * channels <= _SINGLE_READ_SAMPLES:
                samples = _keep(f.read(want, dtype=dtype, always_2d=True), all_channels)
            else:
                block, parts, got = max(1, _SINGLE_READ_SAMPLES // channels), [], 0
                while got < want:
                    part = f.read(min(block, want - got), dtype=dtype, always_2d=True)
                    if part.shape[0] == 0:
                        break
                    parts.append(_keep(part, all_channels))
                    got += part.shape[0]
                samples = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        except Exception as exc:
            raise SslrtError(f"audio is corrupt or in an unsupported format: {path} ({_first_line(exc)})") from None
        container = f.format
    if samples.shape[0] == 0:
        raise SslrtError(f"audio has no samples: {path}")
    if samples.shape[0] < want and container not in _ESTIMATED_LENGTH_FORMATS:
        raise SslrtError(f"audio is truncated: {path}: header says {announced} frames, file holds {samples.shape[0]}")
    return samples, sr


def waveform_frames(samples, name: str = "audio") -> np.ndarray:
    """A waveform given to the Python API -> float64, (N,) or frames-first (N, C). Nothing is
    reinterpreted silently:

    dtype: float as is; int16 / 32768, int32 / 2**31, int8 / 128 and uint8 (x - 128) / 128, as
        soundfile reads PCM files of those widths; other dtypes (int64, bool, ...) are refused.
    layout: 1-D mono. 2-D (a, b): channels-first (C, N) when a <= 8 < b, frames-first (N, C) when
        b <= 8 < a (soundfile's layout); both axes <= 8 or both > 8 is ambiguous and refused.
    """
    if not isinstance(samples, np.ndarray):
        try:
            samples = np.asarray(samples, dtype=np.float64)
        except (TypeError, ValueError):  # an ImageBytes, a dict, ragged lists: not samples
            raise SslrtError(f"{name}: expected a path, a waveform or (waveform, sample_rate), "
                             f"got {type(samples).__name__}") from None
    kind, width = samples.dtype.kind, samples.dtype.itemsize
    if kind == "f":
        scale, offset = 1.0, 0.0
    elif kind == "i" and width in (1, 2, 4):
        scale, offset = float(2 ** (8 * width - 1)), 0.0
    elif kind == "u" and width == 1:
        scale, offset = 128.0, 128.0
    else:
        raise SslrtError(f"{name}: unsupported waveform dtype {samples.dtype}; pass float in [-1, 1], "
                         "or int16/int32 PCM")
    if samples.ndim == 2:
        a, b = samples.shape
        if a <= 8 < b:
            samples = samples.T
        elif not b <= 8 < a:
            raise SslrtError(f"{name}: ambiguous waveform shape {samples.shape}: pass (frames, channels) or "
                             "(channels, frames) with at most 8 channels and more than 8 frames")
    if samples.ndim not in (1, 2) or samples.size == 0:
        raise SslrtError(f"{name}: expected a non-empty 1-D waveform, got shape {samples.shape}")
    out = samples.astype(np.float64)
    if offset:
        out -= offset
    if scale != 1.0:
        out /= scale
    return out


def waveform_channel0(samples, name: str = "audio") -> np.ndarray:
    """waveform_frames, then channel 0 (the paper's rule), as 1-D float64."""
    frames = waveform_frames(samples, name)
    return frames[:, 0] if frames.ndim == 2 else frames


def _read_pyav(path: str) -> AudioClip:
    """SA:audio_io.py load_audio_av over the whole file: every frame through
    AudioResampler(format='s16p', layout='mono', rate=<file rate>) (no rate change; FFmpeg's own
    downmix of several channels, rounded to int16), then / iinfo(int16).max = 32767."""
    try:
        import av
    except ImportError:  # a core dependency; say so rather than fail deep inside
        raise SslrtError("this model family reads audio with PyAV: pip install av") from None
    try:
        container = av.open(path)
    except Exception as exc:
        raise SslrtError(f"audio is corrupt or in an unsupported format: {path} ({_first_line(exc)})") from None
    with container:
        if not container.streams.audio:
            raise SslrtError(f"file has no audio stream: {path}")
        stream = container.streams.audio[0]
        rate = check_sample_rate(int(stream.rate or 0), f"audio {path}")
        duration = float(stream.duration * stream.time_base) if stream.duration is not None else None
        resampler = av.AudioResampler(format="s16p", layout="mono", rate=rate)
        chunks = []
        try:
            for frame in container.decode(audio=0):
                frame.pts = None
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))  # flush (empty at an unchanged rate)
        except Exception as exc:  # av.error.* on damaged streams
            raise SslrtError(f"audio is corrupt: {path} ({_first_line(exc)})") from None
    if not chunks or sum(c.shape[-1] for c in chunks) == 0:
        raise SslrtError(f"audio has no samples: {path}")
    samples = np.concatenate(chunks, axis=1)[0] / np.iinfo(np.int16).max
    return AudioClip(samples, rate, duration)


def load_audio(path: str | os.PathLike, audio_spec: AudioSpec | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file as the family's reader does (None: ours'); returns (samples, sample_rate),
    samples 1-D (channel 0 for ours and lvs, as the official code keeps) holding what the
    transform uses (for ours, the first 10 s plus a resampling margin)."""
    clip = read_audio(path, audio_spec)
    return clip.samples, clip.sample_rate


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _to_mono(samples: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """(N,) or (N, C) -> (N,). "first": channel 0; "mean": the channels' average (for float arrays
    the equivalent of FFmpeg's stereo downmix, (L + R) / 2, without its int16 rounding)."""
    if samples.ndim != 2:
        return samples
    if spec.channels == "first":
        return samples[:, 0]
    if spec.channels == "mean":
        return samples.mean(axis=1, dtype=np.float64).astype(samples.dtype, copy=False)
    raise SslrtError(f"unknown channel rule {spec.channels!r} in the model spec")


def resample_to_16k(samples: np.ndarray, sr: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (identity at 16 kHz)."""
    if sr == 16000:
        return samples
    return resample(samples, check_sample_rate(sr), 16000)


def _tile(x: np.ndarray, length: int) -> np.ndarray:
    """The official "repeat if too short, then keep `length`": tile int(length / n) + 1 times."""
    if x.shape[0] < length:
        x = np.tile(x, int(length / x.shape[0]) + 1)
    return x[:length]


def spectrogram_from_waveform(samples: np.ndarray, sr: int = 16000, audio_spec: AudioSpec | None = None,
                              name: str = "audio", duration: float | None = None, exact: bool = False) -> np.ndarray:
    """Waveform at any rate -> the family's audio input, float32 `audio_spec.shape` (None: ours',
    (1, 257, 299)). `samples` is 1-D or (N, C); `duration` is the container's duration in seconds
    where the file declares one (the PyAV families centre on it), else len(samples) / sr. `exact`:
    a mel front end (SSL-TIE's) computed in torch's float32 kernels, bit for bit as the official
    code's (needs torch); the linear front ends are bit for bit either way."""
    spec = _audio_spec(audio_spec)
    x = waveform_frames(samples, name)  # dtype and layout rules: see there
    sr = check_sample_rate(sr, name)  # before resampling: its cost grows with the rate ratio
    if spec.reader == "torchaudio":
        x = x.astype(np.float32, copy=False)  # torchaudio hands the transform float32
    else:
        x = x.astype(np.float64, copy=False)
    if x.ndim == 2:
        x = _to_mono(x, spec)
    if x.ndim != 1 or x.size == 0:
        raise SslrtError(f"{name}: expected a non-empty 1-D waveform, got shape {np.shape(samples)}")
    if not np.isfinite(x).all():
        raise SslrtError(f"{name}: audio contains NaN or infinite samples")
    duration = x.shape[0] / sr if duration is None else float(duration)
    x = resample(x, sr, spec.sample_rate)
    sr = spec.sample_rate
    if not x.any():
        warnings.warn(f"{name}: audio is silent (all zeros); the heatmap reflects the image only",
                      SilentAudioWarning, stacklevel=2)
    x = _segment(x, sr, spec, duration, name)
    if spec.spectrogram == "linear":
        spectrum = linear_spectrogram(x, sr, nperseg=spec.n_fft, noverlap=spec.noverlap)
    elif spec.spectrogram == "mel":
        mel = mel_spectrogram_db_exact if exact else mel_spectrogram_db
        spectrum = mel(x, sr, n_fft=spec.n_fft, hop=spec.hop, n_mels=spec.n_mels, amin=spec.log_eps)
    else:
        raise SslrtError(f"unknown spectrogram {spec.spectrogram!r} in the model spec")
    if spec.log == "log":
        spectrum = np.log(spectrum + spec.log_eps)
    elif spec.log != "db":  # mel_spectrogram_db is already in dB
        raise SslrtError(f"unknown log {spec.log!r} in the model spec")
    if spec.frames is not None:  # torchvision CenterCrop((bins, frames)): left = int(round((n - frames) / 2))
        n = spectrum.shape[1]
        if n < spec.frames:
            raise SslrtError(f"{name}: {n} spectrogram frames, fewer than the {spec.frames} the model takes")
        left = int(round((n - spec.frames) / 2.0))
        spectrum = spectrum[:, left:left + spec.frames]
    if spec.log_scale != 1.0:
        spectrum = spectrum / spec.log_scale
    out = spectrum[None].astype(np.float32)
    if out.shape != tuple(spec.shape):
        raise SslrtError(f"{name}: the front end gave {list(out.shape)}, the model takes {list(spec.shape)}")
    return out


def _segment(x: np.ndarray, sr: int, spec: AudioSpec, duration: float, name: str) -> np.ndarray:
    """The part of the clip the family's model hears (see AudioSpec.segment)."""
    clip = int(sr * spec.clip_seconds)
    if spec.segment == "crop":  # ours, lvs (SA:datasets_lvs.py:278-285)
        x = _tile(x, clip)[spec.crop[0]:spec.crop[1]]
    elif spec.segment == "head":  # ssltie (SA:datasets_ssltie.py:432-440)
        x = _tile(x, clip)
    elif spec.segment == "centre_roll":  # ezvsl, slavc (SA:datasets.py:37-55)
        # The read: int(min(clip, duration) * sr) samples from 0; clip; tile; roll so that the
        # file's centre (int(duration / 2 * sr)) moves to the clip's centre.
        x = np.clip(x[:int(min(spec.clip_seconds, duration) * sr)], -1.0, 1.0) if spec.clip_samples else x
        x = np.roll(_tile(_nonempty(x, name), clip), int(sr * spec.clip_seconds / 2) - int(duration / 2 * sr))
        return x
    elif spec.segment == "centre_window":  # fnac (SA:datasets.py:17-31)
        # PyAV read of segment_seconds from max(duration/2 - segment/2, 0); its first sample is
        # int(start * sr) for files whose frames start on whole samples (PEER_FACTS §8).
        start = max(duration / 2 - spec.segment_seconds / 2, 0)
        length = min(spec.segment_seconds, duration - start)
        first = int(start * sr)
        x = x[first:first + int(length * sr)]
        x = np.clip(x, -1.0, 1.0) if spec.clip_samples else x
        return _tile(_nonempty(x, name), int(sr * spec.segment_seconds))
    else:
        raise SslrtError(f"unknown audio segment {spec.segment!r} in the model spec")
    return np.clip(x, -1.0, 1.0) if spec.clip_samples else x


def _nonempty(x: np.ndarray, name: str) -> np.ndarray:
    if x.size == 0:
        raise SslrtError(f"{name}: no samples in the part of the clip the model hears")
    return x


def audio_to_spectrogram(path: str | os.PathLike, audio_spec: AudioSpec | None = None, exact: bool = False) -> np.ndarray:
    """Audio file -> the family's audio input (None: ours', (1, 257, 299) float32)."""
    clip = read_audio(path, audio_spec)
    return spectrogram_from_waveform(clip.samples, clip.sample_rate, audio_spec, name=os.fspath(path),
                                     duration=clip.duration, exact=exact)
