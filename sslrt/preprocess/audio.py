"""Audio file -> (1, 257, 299) float32 log spectrogram, as the paper's evaluation computes it.

Official: soundfile.read (float64) -> channel 0 -> tile to 10 s -> keep 10 s -> keep samples
[56000, 104000) -> clip to [-1, 1] -> scipy.signal.spectrogram(nperseg=512, noverlap=353) ->
log(S + 1e-7) / 12. The official code assumes 16 kHz; other rates are resampled to 16 kHz first
so that the crop and the frequency axis mean what the model was trained on.

Files are read only as far as the transform looks (the first 10 s, see read_audio_head): a
1-hour file costs what a 10 s one does. Rates outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE and
truncated files are refused with one line; arrays follow the rules of waveform_channel0.
"""
from __future__ import annotations

import math
import os
import struct
import warnings
from math import gcd

import numpy as np
from scipy import signal

from sslrt.config import (
    CLIP_SECONDS,
    CROP_START,
    CROP_STOP,
    LOG_EPS,
    LOG_SCALE,
    NOVERLAP,
    NPERSEG,
    SAMPLE_RATE,
)
from sslrt.errors import AudioInputWarning, SslrtError


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


def read_audio_head(path: str | os.PathLike, seconds: float) -> tuple[np.ndarray, int]:
    """Channel 0 of the first `seconds` (plus a resampling margin) of an audio file, as float64.

    Returns (samples, sample_rate); the samples are those a full soundfile.read gives, so the
    spectrogram is the one of a full read while the cost is bounded by `seconds`, not by the file.
    Refuses, with one line naming the file: a rate outside MIN_SAMPLE_RATE..MAX_SAMPLE_RATE
    (before reading any sample) and a truncated file (a WAV whose header claims more data than the
    file holds, or any format but MPEG that yields fewer frames than its header announced).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SslrtError(f"audio not found: {path}")
    if os.path.getsize(path) == 0:
        raise SslrtError(f"audio is empty: {path}")
    import soundfile as sf  # here, not at import: the generated-input (parity, GPU test) path needs no libsndfile

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
                samples = f.read(want, dtype="float64", always_2d=True)[:, 0].copy()
            else:
                block, parts, got = max(1, _SINGLE_READ_SAMPLES // channels), [], 0
                while got < want:
                    part = f.read(min(block, want - got), dtype="float64", always_2d=True)
                    if part.shape[0] == 0:
                        break
                    parts.append(part[:, 0].copy())
                    got += part.shape[0]
                samples = np.concatenate(parts) if parts else np.zeros(0)
        except Exception as exc:
            raise SslrtError(f"audio is corrupt or in an unsupported format: {path} ({_first_line(exc)})") from None
        container = f.format
    if samples.shape[0] == 0:
        raise SslrtError(f"audio has no samples: {path}")
    if samples.shape[0] < want and container not in _ESTIMATED_LENGTH_FORMATS:
        raise SslrtError(f"audio is truncated: {path}: header says {announced} frames, file holds {samples.shape[0]}")
    return samples, sr


def waveform_channel0(samples, name: str = "audio") -> np.ndarray:
    """A waveform given to the Python API -> channel 0 as 1-D float64. Nothing is reinterpreted
    silently:

    dtype: float as is; int16 / 32768, int32 / 2**31, int8 / 128 and uint8 (x - 128) / 128, as
        soundfile reads PCM files of those widths; other dtypes (int64, bool, ...) are refused.
    layout: 1-D mono. 2-D (a, b): channels-first (C, N) when a <= 8 < b, frames-first (N, C) when
        b <= 8 < a (soundfile's layout); both axes <= 8 or both > 8 is ambiguous and refused.
    """
    if not isinstance(samples, np.ndarray):
        samples = np.asarray(samples, dtype=np.float64)
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
            samples = samples[0]
        elif b <= 8 < a:
            samples = samples[:, 0]
        else:
            raise SslrtError(f"{name}: ambiguous waveform shape {samples.shape}: pass (frames, channels) or "
                             "(channels, frames) with at most 8 channels and more than 8 frames")
    if samples.ndim != 1 or samples.size == 0:
        raise SslrtError(f"{name}: expected a non-empty 1-D waveform, got shape {samples.shape}")
    out = samples.astype(np.float64)
    if offset:
        out -= offset
    if scale != 1.0:
        out /= scale
    return out


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file (any format libsndfile reads: wav, flac, ogg, mp3) as float64.

    Returns (samples, sample_rate); samples is 1-D (channel 0 of a multi-channel file, as the
    official code keeps) and holds the first CLIP_SECONDS (plus a margin): all the transform uses
    (it tiles a shorter clip and drops the rest), read without decoding the rest of the file.
    """
    return read_audio_head(path, CLIP_SECONDS)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def resample_to_16k(samples: np.ndarray, sr: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (identity at 16 kHz)."""
    if sr == SAMPLE_RATE:
        return samples
    check_sample_rate(sr)
    g = gcd(SAMPLE_RATE, sr)
    return signal.resample_poly(samples, SAMPLE_RATE // g, sr // g)


def spectrogram_from_waveform(samples: np.ndarray, sr: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """1-D waveform at any rate -> (1, 257, 299) float32, the model's audio input."""
    samples = waveform_channel0(samples, name)  # dtype and layout rules: see there
    sr = check_sample_rate(sr, name)  # before resampling: its cost grows with the rate ratio
    if not np.isfinite(samples).all():
        raise SslrtError(f"{name}: audio contains NaN or infinite samples")
    samples = resample_to_16k(samples, sr)
    sr = SAMPLE_RATE
    if not samples.any():
        warnings.warn(f"{name}: audio is silent (all zeros); the heatmap reflects the image only",
                      SilentAudioWarning, stacklevel=2)
    clip = sr * CLIP_SECONDS
    if samples.shape[0] < clip:
        samples = np.tile(samples, int(clip / samples.shape[0]) + 1)
    samples = samples[:clip][CROP_START:CROP_STOP]
    samples = np.clip(samples, -1.0, 1.0)
    _, _, spec = signal.spectrogram(samples, sr, nperseg=NPERSEG, noverlap=NOVERLAP)
    spec = np.log(spec + LOG_EPS) / LOG_SCALE
    return spec[None].astype(np.float32)


def audio_to_spectrogram(path: str | os.PathLike) -> np.ndarray:
    """Audio file -> (1, 257, 299) float32."""
    samples, sr = load_audio(path)
    return spectrogram_from_waveform(samples, sr, name=os.fspath(path))
