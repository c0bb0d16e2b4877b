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
no scipy at 16 kHz; PyAV (for the PyAV-reader families) is imported only when such a file is read.
"""
from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np
import soundfile as sf

from sslrt.errors import SslrtError
from sslrt.preprocess.spectrogram import linear_spectrogram, mel_spectrogram_db, resample
from sslrt.spec.base import AudioSpec

_OURS_AUDIO = AudioSpec()  # the dataclass defaults are the paper's front end (sslrt/spec/ours.py)


class SilentAudioWarning(UserWarning):
    """The clip is all zeros. Valid input (the extended test sets hold such clips); the heatmap
    then reflects the image alone."""


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


def read_audio(path: str | os.PathLike, audio_spec: AudioSpec | None = None) -> AudioClip:
    """Read an audio file the way the family's official reader does, channels made one.

    "soundfile" (ours, lvs): libsndfile float64 (wav, flac, ogg, mp3), channel 0.
    "torchaudio" (ssltie): libsndfile float32, which equals torchaudio.load's (PCM_16 / 32768).
    "pyav" (ezvsl, slavc, fnac): PyAV decode, FFmpeg resampled to s16 mono at the file's rate,
    / 32767, with the container's duration (what their centring uses).
    """
    spec = _audio_spec(audio_spec)
    path = os.fspath(path)
    _check_file(path)
    if spec.reader == "pyav":
        return _read_pyav(path)
    if spec.reader not in ("soundfile", "torchaudio"):
        raise SslrtError(f"unknown audio reader {spec.reader!r} in the model spec")
    dtype = "float32" if spec.reader == "torchaudio" else "float64"
    try:
        samples, sr = sf.read(path, dtype=dtype, always_2d=True)
    except Exception as exc:  # libsndfile's errors are plain RuntimeErrors/LibsndfileErrors
        raise SslrtError(f"audio is corrupt or in an unsupported format: {path} ({_first_line(exc)})") from None
    if samples.shape[0] == 0:
        raise SslrtError(f"audio has no samples: {path}")
    return AudioClip(_to_mono(samples, spec), int(sr), None)


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
        rate = int(stream.rate or 0)
        if rate <= 0:
            raise SslrtError(f"audio stream has no sample rate: {path}")
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
    samples 1-D (channel 0 for ours and lvs, as the official code keeps)."""
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
    return resample(samples, sr, 16000)


def _tile(x: np.ndarray, length: int) -> np.ndarray:
    """The official "repeat if too short, then keep `length`": tile int(length / n) + 1 times."""
    if x.shape[0] < length:
        x = np.tile(x, int(length / x.shape[0]) + 1)
    return x[:length]


def spectrogram_from_waveform(samples: np.ndarray, sr: int = 16000, audio_spec: AudioSpec | None = None,
                              name: str = "audio", duration: float | None = None) -> np.ndarray:
    """Waveform at any rate -> the family's audio input, float32 `audio_spec.shape` (None: ours',
    (1, 257, 299)). `samples` is 1-D or (N, C); `duration` is the container's duration in seconds
    where the file declares one (the PyAV families centre on it), else len(samples) / sr."""
    spec = _audio_spec(audio_spec)
    x = np.asarray(samples)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
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
    if sr <= 0:
        raise SslrtError(f"{name}: invalid sample rate {sr}")
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
        spectrum = mel_spectrogram_db(x, sr, n_fft=spec.n_fft, hop=spec.hop, n_mels=spec.n_mels, amin=spec.log_eps)
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


def audio_to_spectrogram(path: str | os.PathLike, audio_spec: AudioSpec | None = None) -> np.ndarray:
    """Audio file -> the family's audio input (None: ours', (1, 257, 299) float32)."""
    clip = read_audio(path, audio_spec)
    return spectrogram_from_waveform(clip.samples, clip.sample_rate, audio_spec, name=os.fspath(path),
                                     duration=clip.duration)
