"""A literal transcription of the official evaluation transforms (PAPER_FACTS.md), with PIL and
torch as the paper's code uses them: the yardstick for sslrt's numpy preprocessing."""
from __future__ import annotations

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import signal


def official_image_tensor(path_or_rgb) -> np.ndarray:
    if isinstance(path_or_rgb, np.ndarray):
        img = Image.fromarray(path_or_rgb)
    else:
        img = Image.open(path_or_rgb).convert("RGB")
    t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)  # ToTensor
    t = F.interpolate(t[None], size=(224, 224), mode="bicubic", align_corners=False)[0]  # Resize, torchvision 0.13
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return ((t - mean) / std).numpy()


def official_spectrogram(samples: np.ndarray, sr: int) -> np.ndarray:
    if samples.ndim == 2:
        samples = samples[:, 0]
    if samples.shape[0] < sr * 10:
        samples = np.tile(samples, int(sr * 10 / samples.shape[0]) + 1)
    samples = samples[: int(sr * 10)]
    samples = samples[int(16000 * 3.5): int(16000 * 6.5)]
    samples[samples > 1.0] = 1.0
    samples[samples < -1.0] = -1.0
    _, _, spec = signal.spectrogram(samples, sr, nperseg=512, noverlap=353)
    return (np.log(spec + 1e-7) / 12.0)[None].astype(np.float32)


def official_spectrogram_file(path) -> np.ndarray:
    samples, sr = sf.read(path)
    if sr != 16000:  # the faithful choice for other rates (PAPER_FACTS): resample to 16 kHz first
        from math import gcd

        g = gcd(16000, sr)
        samples = signal.resample_poly(samples[:, 0] if samples.ndim == 2 else samples, 16000 // g, sr // g)
        sr = 16000
    return official_spectrogram(samples, sr)
