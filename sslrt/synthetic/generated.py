"""Deterministic generated inputs, for parity checks and the demo when the user gives no files."""
from __future__ import annotations

import cv2
import numpy as np

from sslrt.spec import DEFAULT_FAMILY, get_spec

# Generated audio is written at the rate every family hears.
SAMPLE_RATE = get_spec(DEFAULT_FAMILY).audio.sample_rate


def generated_image(seed: int, size: tuple[int, int] = (256, 320)) -> np.ndarray:
    """A smooth colour field with a few shapes: natural-image-like statistics, RGB uint8."""
    rng = np.random.default_rng(seed)
    h, w = size
    low = rng.uniform(0, 255, (4, 5, 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(3):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, centre, int(rng.integers(10, min(h, w) // 3)), rng.uniform(0, 255, 3).tolist(), -1)
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def generated_waveform(seed: int, seconds: float = 10.0) -> np.ndarray:
    """A chirp plus harmonics plus noise at 16 kHz, float64 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    f0 = rng.uniform(150, 900)
    x = sum(np.sin(2 * np.pi * f0 * k * t * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * t))) / k for k in (1, 2, 3))
    x = 0.3 * x / 1.8 + 0.05 * rng.standard_normal(t.shape)
    return np.clip(x, -1, 1)
