"""Image -> (3, 224, 224) float32, as the paper's evaluation transform computes it.

Official: PIL RGB -> ToTensor() -> Resize((224, 224), BICUBIC) on the float tensor, which in
torchvision 0.13 is interpolate(mode='bicubic', align_corners=False) with no antialias and no
clamping -> Normalize. Here the bicubic is a 4-tap gather per axis with torch's exact source
coordinates, cubic kernel (A = -0.75) and border clamping, so no torch is needed.
"""
from __future__ import annotations

import os
from functools import lru_cache

import cv2
import numpy as np

from sslrt.config import IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD
from sslrt.errors import SslrtError

_CUBIC_A = -0.75  # torch's bicubic coefficient


def read_image_bytes(path: str | os.PathLike) -> np.ndarray:
    """The encoded file (uint8 array): read once, hashed by the runtime's cache, then decoded."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SslrtError(f"image not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise SslrtError(f"image is empty: {path}")
    return data


def load_image(path: str | os.PathLike, data: np.ndarray | None = None) -> np.ndarray:
    """Decode an image file (or its bytes, already read) to an RGB uint8 array (H, W, 3).

    EXIF orientation is ignored on purpose: PIL, which the official code uses, does not apply it,
    and the heatmap must match the paper's.
    """
    path = os.fspath(path)
    data = read_image_bytes(path) if data is None else data
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None or bgr.size == 0:
        raise SslrtError(f"image is corrupt or not an image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # SIMD; a [:, :, ::-1] copy costs ~10 ms on 1024x1024


def _as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise SslrtError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] == 0 or image.shape[1] == 0:
        raise SslrtError(f"{name}: expected an RGB array (H, W, 3), got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        if not np.isfinite(image).all():
            raise SslrtError(f"{name}: array contains NaN or infinite values")
        # float arrays are taken as RGB in [0, 1]; ToTensor's input is 8-bit, so quantize as PIL would.
        if np.issubdtype(image.dtype, np.floating):
            image = np.clip(np.rint(image * 255.0), 0, 255)
        image = image.astype(np.uint8)
    return image


@lru_cache(maxsize=32)
def _bicubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (4, out) and float32 weights (4, out) of torch's bicubic resize along one axis.

    Computed in float32 as torch's CPU kernel does (scale = in/out, source coordinate
    (i + 0.5) * scale - 0.5, not clamped): at source coordinates near 1000 float32 rounding moves
    the taps' weights by ~1e-4, which is visible at the 1e-4 parity bound.
    """
    f = np.float32
    scale = f(in_size) / f(out_size)
    src = (np.arange(out_size, dtype=f) + f(0.5)) * scale - f(0.5)
    base = np.floor(src)
    t = src - base
    a = f(_CUBIC_A)

    def near(x):  # |x| <= 1
        return ((a + f(2)) * x - (a + f(3))) * x * x + f(1)

    def far(x):  # 1 < |x| < 2
        return ((a * x - f(5) * a) * x + f(8) * a) * x - f(4) * a

    one = f(1)
    weights = np.stack([far(t + one), near(t), near(one - t), far(f(2) - t)]).astype(f)
    index = base.astype(np.int64)[None, :] + np.arange(-1, 3)[:, None]
    return np.clip(index, 0, in_size - 1), weights


def _resize_bicubic(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bicubic resize of an (H, W, C) uint8 array to float32 (out_h, out_w, C) in 0..255.

    Separable: 4 gathered rows per output row, then 4 gathered columns per output column, so the
    cost scales with the output size times the input width, not with the input area.
    """
    iy, wy = _bicubic_taps(x.shape[0], out_h)
    ix, wx = _bicubic_taps(x.shape[1], out_w)
    rows = wy[0, :, None, None] * x[iy[0]]
    for k in range(1, 4):
        rows += wy[k, :, None, None] * x[iy[k]]
    out = wx[0, None, :, None] * rows[:, ix[0]]
    for k in range(1, 4):
        out += wx[k, None, :, None] * rows[:, ix[k]]
    return out


_MEAN = np.asarray(IMAGE_MEAN, dtype=np.float32)[:, None, None]
_STD = np.asarray(IMAGE_STD, dtype=np.float32)[:, None, None]


def image_to_tensor(image: np.ndarray, spec=None) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> normalized float32 (3, size, size), the model's image input.

    `spec`: the family's ImageSpec (or its ModelSpec); None = ours'. Every family of sslrt.spec has
    the same image transform (PEER_FACTS §3.1), so the tensor is the same for all of them.
    """
    if spec is not None and not hasattr(spec, "mean"):
        spec = spec.image  # a ModelSpec
    if spec is not None and spec.resize != "bicubic":
        raise SslrtError(f"unsupported image resize {spec.resize!r} in the model spec")
    size = IMAGE_SIZE if spec is None else spec.size
    mean = _MEAN if spec is None else np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = _STD if spec is None else np.asarray(spec.std, dtype=np.float32)[:, None, None]
    rgb = _as_rgb_uint8(image)
    resized = _resize_bicubic(rgb, size, size)
    normalized = (resized.transpose(2, 0, 1) / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(normalized, dtype=np.float32)
