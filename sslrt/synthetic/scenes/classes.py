"""The object classes of the generated scenes: how each one looks and how it sounds.

Every class differs from the others in colour *and* shape (some also in texture), and its sound
differs in spectral signature (pitch, band, rhythm, sweep), so a small network can learn the
correspondence from a few thousand scenes. Names contain no underscore: IS3 file names are
`<cls1>_<cls2>_<id>_<soundingcls>` and are split on it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SAMPLE_RATE = 16000


# ---------------------------------------------------------------------------------------------
# Shapes: a boolean mask of the object inside its own box (h, w). Shapes fill their box so the
# tight box of the mask is the box itself (up to rasterisation).


def _polygon_mask(h: int, w: int, points_unit: np.ndarray) -> np.ndarray:
    """Fill a polygon given in unit coordinates ([0,1]^2 of the box) into an (h, w) mask."""
    mask = np.zeros((h, w), np.uint8)
    pts = np.round(points_unit * np.array([w - 1, h - 1])).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1)
    return mask.astype(bool)


def _unit_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres of an (h, w) box in [-1, 1] (x to the right, y down)."""
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    return np.meshgrid(x, y)


def _ellipse(h, w):
    x, y = _unit_grid(h, w)
    return x * x + y * y <= 1.0


def _ring(h, w):
    x, y = _unit_grid(h, w)
    r2 = x * x + y * y
    return (r2 <= 1.0) & (r2 >= 0.45**2)


def _moon(h, w):
    x, y = _unit_grid(h, w)
    return (x * x + y * y <= 1.0) & ((x - 0.55) ** 2 + (y + 0.1) ** 2 >= 0.75**2)


def _rect(h, w):
    return np.ones((h, w), bool)


def _triangle(h, w):
    return _polygon_mask(h, w, np.array([[0.5, 0.0], [1.0, 1.0], [0.0, 1.0]]))


def _diamond(h, w):
    return _polygon_mask(h, w, np.array([[0.5, 0.0], [1.0, 0.5], [0.5, 1.0], [0.0, 0.5]]))


def _hexagon(h, w):
    return _polygon_mask(h, w, np.array([[0.25, 0.0], [0.75, 0.0], [1.0, 0.5], [0.75, 1.0], [0.25, 1.0], [0.0, 0.5]]))


def _cross(h, w):
    a, b = 0.32, 0.68
    pts = [[a, 0], [b, 0], [b, a], [1, a], [1, b], [b, b], [b, 1], [a, 1], [a, b], [0, b], [0, a], [a, a]]
    return _polygon_mask(h, w, np.array(pts, float))


def _star(h, w):
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    pts = np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
    pts = (pts - pts.min(0)) / (pts.max(0) - pts.min(0))  # stretch the star to fill its box
    return _polygon_mask(h, w, pts)


# ---------------------------------------------------------------------------------------------
# Textures: the object's RGB (h, w, 3) float in 0..255 from its base colour.


def _flat(h, w, colour, rng):
    return np.broadcast_to(np.asarray(colour, np.float32), (h, w, 3)).copy()


def _stripes(h, w, colour, rng):
    period = max(6, int(min(h, w) / 5))
    band = (np.arange(h)[:, None] // (period // 2)) % 2 == 0
    out = np.where(band[..., None], np.asarray(colour, np.float32), np.float32(245.0))
    return np.broadcast_to(out, (h, w, 3)).copy()


def _checker(h, w, colour, rng):
    cell = max(6, int(min(h, w) / 5))
    board = ((np.arange(h)[:, None] // cell) + (np.arange(w)[None, :] // cell)) % 2 == 0
    return np.where(board[..., None], np.float32(20.0), np.asarray(colour, np.float32)).astype(np.float32)


def _dots(h, w, colour, rng):
    cell = max(8, int(min(h, w) / 4))
    yy, xx = np.mgrid[0:h, 0:w]
    dy = (yy % cell) - cell / 2
    dx = (xx % cell) - cell / 2
    dot = dx * dx + dy * dy <= (cell * 0.3) ** 2
    return np.where(dot[..., None], np.float32(25.0), np.asarray(colour, np.float32)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Sounds: a mono float64 waveform of n samples at 16 kHz, peak around 1, from a class-specific
# generator. `rng` draws per-instance variation (pitch jitter, phase) so instances differ.


def _t(n):
    # float32: 10 s of phase at a few kHz stays within ~0.01 rad, and float32 sin is several times faster
    return np.arange(n, dtype=np.float32) / np.float32(SAMPLE_RATE)


def _harmonic(f0, n_harm, rng, n, decay=0.7):
    f0 = f0 * rng.uniform(0.96, 1.04)
    t = _t(n)
    out = np.zeros(n, np.float32)
    for k in range(1, n_harm + 1):
        out += np.float32(decay ** (k - 1)) * np.sin(np.float32(2 * np.pi * k * f0) * t + np.float32(rng.uniform(0, 2 * np.pi)))
    return out


def _band_noise(lo, hi, rng, n):
    spec = np.fft.rfft(rng.standard_normal(n, dtype=np.float32))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    jitter = rng.uniform(0.95, 1.05)
    spec[(freqs < lo * jitter) | (freqs > hi * jitter)] = 0
    return np.fft.irfft(spec, n).astype(np.float32)


def _clicks(rate, rng, n):
    rate = rate * rng.uniform(0.93, 1.07)
    out = np.zeros(n)
    period = int(SAMPLE_RATE / rate)
    click_len = 160  # 10 ms decaying noise burst: broadband
    click = rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / 30)
    for start in range(int(rng.integers(0, period)), n - click_len, period):
        out[start:start + click_len] += click
    return out


def _chirp(f_start, f_end, period_s, rng, n):
    period_s = period_s * rng.uniform(0.93, 1.07)
    t = _t(n)
    phase_t = np.mod(t + rng.uniform(0, period_s), period_s)
    # exponential sweep inside each period; the phase is the integral of the frequency
    k = np.log(f_end / f_start) / period_s
    phase = 2 * np.pi * f_start * (np.exp(k * phase_t) - 1) / k
    return np.sin(phase)


def _tremolo(f0, rate, rng, n):
    t = _t(n)
    env = 0.5 * (1 + np.sin(2 * np.pi * rate * rng.uniform(0.93, 1.07) * t))
    return env * np.sin(2 * np.pi * f0 * rng.uniform(0.97, 1.03) * t)


def _pulsed_noise(lo, hi, rate, rng, n):
    t = _t(n)
    gate = (np.mod(t * rate * rng.uniform(0.93, 1.07) + rng.uniform(), 1.0) < 0.4).astype(float)
    return gate * _band_noise(lo, hi, rng, n)


def _vibrato(f0, depth, rate, rng, n):
    t = _t(n)
    f0 = f0 * rng.uniform(0.97, 1.03)
    phase = 2 * np.pi * f0 * t + depth / rate * np.sin(2 * np.pi * rate * t)
    return np.sin(phase)


@dataclass(frozen=True)
class ObjectClass:
    name: str
    colour: tuple[int, int, int]
    shape: object  # (h, w) -> bool mask
    texture: object  # (h, w, colour, rng) -> float RGB
    sound: object  # (rng, n) -> waveform
    description: str


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("circle", (220, 40, 40), _ellipse, _flat, lambda r, n: _harmonic(200, 6, r, n),
                "red disc; harmonic tone at 200 Hz"),
    ObjectClass("square", (40, 80, 230), _rect, _flat, lambda r, n: _harmonic(520, 4, r, n),
                "blue rectangle; harmonic tone at 520 Hz"),
    ObjectClass("triangle", (40, 190, 60), _triangle, _flat, lambda r, n: _harmonic(1300, 3, r, n, 0.5),
                "green triangle; harmonic tone at 1.3 kHz"),
    ObjectClass("star", (245, 215, 30), _star, _flat, lambda r, n: _vibrato(3000, 300, 5, r, n),
                "yellow star; 3 kHz whistle with vibrato"),
    ObjectClass("stripes", (200, 40, 200), _rect, _stripes, lambda r, n: _band_noise(300, 700, r, n),
                "magenta/white striped rectangle; noise band 300-700 Hz"),
    ObjectClass("ring", (30, 200, 220), _ring, _flat, lambda r, n: _band_noise(2000, 3500, r, n),
                "cyan ring; noise band 2-3.5 kHz"),
    ObjectClass("cross", (250, 130, 20), _cross, _flat, lambda r, n: _clicks(3, r, n),
                "orange cross; clicks at 3 per second"),
    ObjectClass("checker", (235, 235, 235), _rect, _checker, lambda r, n: _clicks(14, r, n),
                "black/white checkerboard; clicks at 14 per second"),
    ObjectClass("diamond", (130, 50, 210), _diamond, _flat, lambda r, n: _chirp(400, 2400, 0.5, r, n),
                "purple diamond; rising chirp 0.4-2.4 kHz every 0.5 s"),
    ObjectClass("hexagon", (140, 85, 35), _hexagon, _flat, lambda r, n: _chirp(4000, 1000, 0.3, r, n),
                "brown hexagon; falling chirp 4-1 kHz every 0.3 s"),
    ObjectClass("dots", (250, 160, 200), _ellipse, _dots, lambda r, n: _tremolo(800, 8, r, n),
                "pink disc with black dots; 800 Hz tone with 8 Hz tremolo"),
    ObjectClass("moon", (175, 245, 110), _moon, _flat, lambda r, n: _pulsed_noise(5000, 7000, 2, r, n),
                "lime crescent; 5-7 kHz noise pulsed twice a second"),
)

CLASS_BY_NAME = {c.name: c for c in CLASSES}
CLASS_NAMES = tuple(c.name for c in CLASSES)
