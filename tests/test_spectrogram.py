"""The numpy spectrograms against the libraries they replace: scipy.signal.spectrogram (bit for
bit) and torchaudio's MelSpectrogram + AmplitudeToDB (transcribed with torch, which the tests have)."""
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, SAMPLES, needs_shared
from sslrt.preprocess.spectrogram import htk_mel_filterbank, linear_spectrogram, mel_spectrogram_db, tukey_window


@pytest.mark.parametrize("n,noverlap", [(48000, 353), (160000, 274), (48000, 274), (12345, 100), (4097, 0)])
def test_linear_spectrogram_equals_scipy_bit_for_bit(n, noverlap):
    from scipy import signal

    x = np.random.default_rng(n).standard_normal(n) * 0.3
    ours = linear_spectrogram(x, 16000, nperseg=512, noverlap=noverlap)
    _, _, expected = signal.spectrogram(x, 16000, nperseg=512, noverlap=noverlap)
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert np.array_equal(ours, expected)


def test_odd_segment_and_window_equal_scipy():
    from scipy import signal

    assert np.array_equal(tukey_window(512), signal.get_window(("tukey", 0.25), 512))
    x = np.random.default_rng(3).uniform(-1, 1, 5000)
    assert np.array_equal(linear_spectrogram(x, 8000, nperseg=255, noverlap=100),
                          signal.spectrogram(x, 8000, nperseg=255, noverlap=100)[2])


@needs_shared
@pytest.mark.parametrize("name", ["accordion_baby_10467_accordion.wav", "accordion_baby_10467_baby.wav", "car.wav"])
def test_linear_spectrogram_on_the_samples_equals_scipy(name):
    from scipy import signal

    x, sr = sf.read(SAMPLES / name)
    for noverlap in (353, 274):
        assert np.array_equal(linear_spectrogram(x, sr, 512, noverlap), signal.spectrogram(x, sr, nperseg=512, noverlap=noverlap)[2])


def _torchaudio_mel_db(x: np.ndarray, sr: int) -> np.ndarray:
    """MelSpectrogram(sr, n_fft=512, hop_length=239, n_mels=257, normalized=True) + AmplitudeToDB(),
    transcribed from torchaudio's source with torch (torchaudio is not installed)."""
    import torch

    def hz_to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    all_freqs = torch.linspace(0, sr // 2, 257)
    m_pts = torch.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), 257 + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down, up))
    window = torch.hann_window(512)
    spec = torch.stft(torch.from_numpy(x.astype(np.float32)), 512, 239, 512, window, center=True, pad_mode="reflect",
                      normalized=False, onesided=True, return_complex=True)
    spec = (spec / window.pow(2.0).sum().sqrt()).abs().pow(2.0)
    mel = torch.matmul(spec.transpose(-1, -2), fb).transpose(-1, -2)
    return (10.0 * torch.log10(torch.clamp(mel, min=1e-10))).numpy(), fb.numpy()


def test_mel_filterbank_equals_torchaudio():
    _, fb = _torchaudio_mel_db(np.zeros(1024, dtype=np.float32), 16000)
    ours = htk_mel_filterbank(257, 16000, 257)
    assert ours.dtype == np.float32
    # equal but for torch's vectorised powf, 1 ulp off on a few mel points, which a narrow
    # filter's 1 / (f[k+1] - f[k]) amplifies: 18 weights differ, by <= 1.1e-5
    assert np.abs(ours - fb).max() <= 2e-5
    assert int((fb.sum(0) == 0).sum()) == int((ours.sum(0) == 0).sum()) == 28  # PEER_FACTS §9: 28 empty filters


def test_mel_db_matches_torchaudio():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(160000) * 0.1).astype(np.float32)
    expected, _ = _torchaudio_mel_db(x, 16000)
    ours = mel_spectrogram_db(x, 16000)
    assert ours.shape == expected.shape == (257, 670)
    live = expected > -90  # away from the float32 noise floor of torch's STFT
    assert np.abs(ours - expected)[live].max() <= 1e-3
    assert np.abs(ours - expected).max() <= 0.1


def test_no_scipy_or_torch_at_16k(tmp_path):
    """Preprocessing a 16 kHz file for any family imports neither scipy (~1 s) nor torch."""
    wav = tmp_path / "tone.wav"
    sf.write(wav, 0.3 * np.sin(np.arange(16000 * 2) / 5.0), 16000, subtype="PCM_16")
    code = ("import sys, warnings\n"
            "from sslrt.preprocess import audio_to_spectrogram\n"
            "from sslrt.spec import families, get_spec\n"
            f"for f in families(): audio_to_spectrogram({str(wav)!r}, get_spec(f))\n"
            "assert 'scipy' not in sys.modules and 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith(('scipy', 'torch')))[:3]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
