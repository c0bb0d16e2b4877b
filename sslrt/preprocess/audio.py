"""Audio file -> (1, 257, 299) float32 log spectrogram, as the paper's evaluation computes it.

Official: soundfile.read (float64) -> channel 0 -> tile to 10 s -> keep 10 s -> keep samples
[56000, 104000) -> clip to [-1, 1] -> scipy.signal.spectrogram(nperseg=512, noverlap=353) ->
log(S + 1e-7) / 12. The official code assumes 16 kHz; other rates are resampled to 16 kHz first
so that the crop and the frequency axis mean what the model was trained on.
"""
from __future__ import annotations

import os
import warnings
from math import gcd

import numpy as np
import soundfile as sf
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


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float64: the formats libsndfile reads (wav, flac, ogg, mp3) with
    soundfile, every other container FFmpeg reads (mp4/m4a/aac, webm/opus, mkv, mov, video files'
    audio) through PyAV (sslrt.preprocess.media), scaled as soundfile scales the same PCM data.

    Returns (samples, sample_rate); samples is 1-D (channel 0 of a multi-channel file, as the
    official code keeps).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SslrtError(f"audio not found: {path}")
    if os.path.getsize(path) == 0:
        raise SslrtError(f"audio is empty: {path}")
    try:
        sf.info(path)
    except Exception:  # not a format libsndfile knows: FFmpeg's turn
        from sslrt.preprocess.media import decode_audio

        return decode_audio(path, what="audio")
    try:
        samples, sr = sf.read(path, dtype="float64", always_2d=True)
    except Exception as exc:  # libsndfile's errors are plain RuntimeErrors/LibsndfileErrors
        raise SslrtError(f"audio is corrupt or in an unsupported format: {path} ({_first_line(exc)})") from None
    if samples.shape[0] == 0:
        raise SslrtError(f"audio has no samples: {path}")
    return samples[:, 0], int(sr)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def resample_to_16k(samples: np.ndarray, sr: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (identity at 16 kHz)."""
    if sr == SAMPLE_RATE:
        return samples
    if sr <= 0:
        raise SslrtError(f"invalid sample rate {sr}")
    g = gcd(SAMPLE_RATE, sr)
    return signal.resample_poly(samples, SAMPLE_RATE // g, sr // g)


def spectrogram_from_waveform(samples: np.ndarray, sr: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """1-D waveform at any rate -> (1, 257, 299) float32, the model's audio input."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim == 2:
        samples = samples[:, 0]
    if samples.ndim != 1 or samples.size == 0:
        raise SslrtError(f"{name}: expected a non-empty 1-D waveform, got shape {samples.shape}")
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
