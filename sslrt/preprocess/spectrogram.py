"""The two spectrograms the families' front ends use, in numpy only (no scipy, no torch).

`linear_spectrogram` is `scipy.signal.spectrogram(x, fs, nperseg=n, noverlap=m)` with scipy's
defaults (periodic Tukey(0.25) window, detrend 'constant', one-sided, 'density' scaling, nfft =
nperseg, mode 'psd'), step for step as scipy's `_spectral_helper` computes it: measured
bit-identical (max relative difference 0.0) to scipy 1.17.1 with numpy 2.4 on random float64
input and on every sample of ../shared/samples, for noverlap 353 and 274
(tests/test_spectrogram.py). The FFT is numpy's, which is the same pocketfft as scipy.fft; the power
is `(conj(X) * X).real` rather than `re**2 + im**2` because numpy's complex product rounds
differently (1 ulp in ~15% of the bins). Importing scipy.signal costs ~1 s at start-up; this
module costs nothing, and scipy is needed only to resample (`resample_poly`, imported lazily).

`mel_spectrogram_db` is torchaudio's `MelSpectrogram(sample_rate, n_fft, hop_length, n_mels,
normalized=True)` + `AmplitudeToDB()` with their defaults (periodic Hann window, win_length =
n_fft, centre reflect padding, power 2, f_min 0, f_max sr/2, HTK mel scale, no filter norm,
10 log10(max(x, 1e-10))), SSL-TIE's front end. The filter bank is built in float32 as torchaudio
builds it (to ~1e-5: torch's vectorised powf); the STFT runs in float64, where torchaudio's runs in
float32 on MKL's FFT, whose rounding noise no numpy code reproduces. Measured on the three
samples: median |diff| 2e-6 dB, max 0.056 dB (in low-power bins, where float32 noise dominates;
0.015 dB above -90 dB); the SSL-TIE heatmap moves by <= 1.3e-6 (cosine).

`mel_spectrogram_db_exact` is the same transform in torch's own float32 kernels (MKL's FFT and
sgemm, its vectorised powf and complex abs, run through torch's operators in torchaudio's order),
for the bit-for-bit tensor the official code computes (golden sha256 on the three samples). It
needs torch (lazily imported; the default path stays torch-free).
"""
from __future__ import annotations

import math
from functools import lru_cache
from math import gcd

import numpy as np

from sslrt.errors import SslrtError


@lru_cache(maxsize=8)
def tukey_window(n: int, alpha: float = 0.25) -> np.ndarray:
    """scipy.signal.windows.tukey(n, alpha, sym=False), scipy's formula evaluated the same way."""
    m = n + 1  # periodic: the symmetric window of n + 1 points without its last
    k = np.arange(0, m, dtype=np.float64)
    width = int(math.floor(alpha * (m - 1) / 2.0))
    n1, n2, n3 = k[0:width + 1], k[width + 1:m - width - 1], k[m - width - 1:]
    w1 = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * n1 / alpha / (m - 1))))
    w3 = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * n3 / alpha / (m - 1))))
    window = np.concatenate((w1, np.ones(n2.shape), w3))[:n]
    window.setflags(write=False)
    return window


def _frames(x: np.ndarray, length: int, step: int) -> np.ndarray:
    if x.shape[-1] < length:
        raise SslrtError(f"audio segment of {x.shape[-1]} samples is shorter than one {length}-sample window")
    return np.lib.stride_tricks.sliding_window_view(x, length, axis=-1)[..., ::step, :]


def linear_spectrogram(x: np.ndarray, fs: float, nperseg: int = 512, noverlap: int = 353) -> np.ndarray:
    """scipy.signal.spectrogram(x, fs, nperseg=nperseg, noverlap=noverlap)[2] for 1-D float64 x:
    (nperseg // 2 + 1, frames) float64 power spectral density."""
    x = np.asarray(x, dtype=np.float64)
    window = tukey_window(nperseg)
    segments = _frames(x, nperseg, nperseg - noverlap)
    segments = segments - np.mean(segments, axis=-1, keepdims=True)  # detrend='constant'
    spectrum = np.fft.rfft(window * segments, n=nperseg)
    power = np.conjugate(spectrum) * spectrum
    power *= 1.0 / (fs * (window * window).sum())  # scaling='density'
    if nperseg % 2:
        power[..., 1:] *= 2  # one-sided: every bin but DC (and Nyquist) holds both halves
    else:
        power[..., 1:-1] *= 2
    return np.ascontiguousarray(power.real.T)


@lru_cache(maxsize=8)
def hann_window(n: int) -> np.ndarray:
    """torch.hann_window(n) (periodic), in float64."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n, dtype=np.float64) / n)
    window.setflags(write=False)
    return window


def _linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(start, end, steps) in float32, bit for bit as torch's CPU kernel computes it:
    float32 step, start + step * i for the first half and end - step * (steps - 1 - i) for the
    second, each a fused multiply-add (one rounding; here exact in float64, then rounded)."""
    f = np.float32
    start32, end32 = f(start), f(end)
    step = np.float64((end32 - start32) / f(steps - 1))
    index = np.arange(steps)
    half = steps // 2
    out = np.empty(steps, dtype=f)
    out[:half] = (np.float64(start32) + step * index[:half]).astype(f)
    out[half:] = (np.float64(end32) - step * (steps - index[half:] - 1)).astype(f)
    return out


def _hz_to_mel(freq: float) -> float:
    """HTK mel of a frequency, in python floats as torchaudio computes the bank's two ends."""
    return 2595.0 * math.log10(1.0 + (freq / 700.0))


def _check_centred_stft(n_samples: int, n_fft: int) -> None:
    """A centred STFT reflect-pads n_fft // 2 samples on each side, which needs more samples than that."""
    if n_samples <= n_fft // 2:
        raise SslrtError(f"audio of {n_samples} samples is too short for a centred {n_fft}-point STFT")


@lru_cache(maxsize=8)
def htk_mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int, f_min: float = 0.0,
                       f_max: float | None = None) -> np.ndarray:
    """torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate, norm=None,
    mel_scale='htk'): (n_freqs, n_mels) float32 triangular filters. With more filters than useful
    bins (SSL-TIE: 257 on 257 bins) some filters are empty: their rows come out at the dB floor."""
    f32 = np.float32
    f_max = float(sample_rate // 2) if f_max is None else f_max
    all_freqs = _linspace_f32(0, sample_rate // 2, n_freqs)
    m_pts = _linspace_f32(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    # 10 ** x correctly rounded to float32 (torch's vectorised powf differs in the last bit for
    # ~1% of the points)
    f_pts = (f32(700.0) * (np.power(10.0, (m_pts / f32(2595.0)).astype(np.float64)).astype(f32) - f32(1.0))).astype(f32)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = (f32(-1.0) * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    bank = np.maximum(f32(0.0), np.minimum(down, up)).astype(f32)
    bank.setflags(write=False)
    return bank


def mel_spectrogram_db(x: np.ndarray, sample_rate: int, n_fft: int = 512, hop: int = 239, n_mels: int = 257,
                       amin: float = 1e-10) -> np.ndarray:
    """torchaudio MelSpectrogram(normalized=True) + AmplitudeToDB() of 1-D x: (n_mels, frames)
    float64, frames = 1 + len(x) // hop."""
    x = np.asarray(x, dtype=np.float64)
    _check_centred_stft(x.shape[-1], n_fft)
    pad = n_fft // 2
    padded = np.pad(x, (pad, pad), mode="reflect")  # center=True, pad_mode='reflect'
    window = hann_window(n_fft)
    spectrum = np.fft.rfft(window * _frames(padded, n_fft, hop), n=n_fft)
    spectrum /= np.sqrt((window * window).sum())  # normalized=True: divide by the window's L2 norm
    power = spectrum.real ** 2 + spectrum.imag ** 2  # |X| ** 2
    mel = power @ htk_mel_filterbank(n_fft // 2 + 1, sample_rate, n_mels).astype(np.float64)
    return (10.0 * np.log10(np.maximum(mel, amin))).T


def resample(samples: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) along the first axis; identity at the
    target rate, where scipy is not even imported."""
    if sr == target:
        return samples
    if sr <= 0:
        raise SslrtError(f"invalid sample rate {sr}")
    from scipy.signal import resample_poly  # ~1 s to import: only when a file needs it

    g = gcd(target, sr)
    return resample_poly(samples, target // g, sr // g, axis=0)


def mel_spectrogram_db_exact(x: np.ndarray, sample_rate: int, n_fft: int = 512, hop: int = 239, n_mels: int = 257,
                             amin: float = 1e-10) -> np.ndarray:
    """`mel_spectrogram_db` computed as the official code computes it, op for op in float32 on torch's
    CPU kernels (torchaudio's MelSpectrogram(normalized=True) + AmplitudeToDB() on a (1, N) float32
    waveform): (n_mels, frames) float32. Requires torch."""
    try:
        import torch
    except ImportError:
        raise SslrtError("exact inputs of a mel front end need torch's kernels: pip install torch") from None
    wave = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]  # torchaudio.load's (channels, N)
    _check_centred_stft(wave.shape[-1], n_fft)
    with torch.no_grad():
        window = torch.hann_window(n_fft)  # periodic
        spectrum = torch.stft(wave, n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                              pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        spectrum /= window.pow(2.0).sum().sqrt()  # normalized=True: the window's L2 norm
        power = spectrum.abs().pow(2.0)
        mel = torch.matmul(power.transpose(-1, -2), _mel_filterbank_torch(n_fft // 2 + 1, sample_rate, n_mels)).transpose(-1, -2)
        db = 10.0 * torch.log10(torch.clamp(mel, min=amin))  # reference power 1: nothing subtracted
    return db[0].numpy()


def _mel_filterbank_torch(n_freqs: int, sample_rate: int, n_mels: int):
    """The HTK triangular filter bank (f_min 0, f_max sr/2, no norm) in torch float32 ops, in the
    order torchaudio builds it: `htk_mel_filterbank` with torch's own powf."""
    import torch

    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(float(sample_rate // 2)), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down, up))
