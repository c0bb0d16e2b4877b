"""Image -> (3, 224, 224) float32, as the paper's evaluation transform computes it.

Official: PIL RGB -> ToTensor() -> Resize((224, 224), BICUBIC) on the float tensor, which in
torchvision 0.13 is interpolate(mode='bicubic', align_corners=False) with no antialias and no
clamping -> Normalize. Here the bicubic is a 4-tap gather per axis with torch's exact source
coordinates, cubic kernel (A = -0.75) and border clamping, so no torch is needed.

Decoding is PIL's `Image.open(path).convert('RGB')`, pixel for pixel, for every format PIL reads
(16-bit PNG/TIFF are clipped to 255 as PIL clips them, CMYK is converted with PIL's formula,
palette, grey+alpha, TGA, ...). Faster decoders take the kinds where they were measured
bit-identical to PIL (`_Header.fast`): 8-bit Huffman JPEGs (baseline or progressive, YCbCr, RGB or
grey, 4:4:4 / 4:2:2 / 4:2:0 / 4:1:1 / 4:4:0) and non-interlaced PNGs of depth <= 8. A JPEG goes to
simplejpeg (libjpeg-turbo's TurboJPEG API, where installed: the `cpu` and GPU extras bring it),
then to OpenCV; a PNG to OpenCV. simplejpeg decodes a 1024x1024 JPEG in 3.6 ms of CPU, OpenCV in
4.0 ms (7-8 ms in a process whose malloc returns freed memory to the kernel: every call's buffers
page-faulted in anew), PIL in ~11 ms with its conversion to an array. simplejpeg runs strict: a
file libjpeg warns about (truncated, corrupt entropy data) goes on to OpenCV, which decodes it as
before. Pillow is imported only for the other kinds, or when OpenCV refuses a file (PIL then
decides: it accepts some files that libpng rejects, e.g. a bad CRC in an ancillary chunk).

Size: an image over `max_image_pixels()` (50 megapixels unless SSLRT_MAX_IMAGE_PIXELS says
otherwise) is refused from its header, before any pixel is decoded or the file is read whole, so
decoding memory is bounded by the limit, not by the file. Decoding at a reduced size is not
offered: JPEG's DCT-domain downscaling averages 2x2..8x8 blocks, while the model's input is a
4-tap bicubic gather of full-resolution pixels (no antialias), so a reduced decode changes the
tensor (measured on a 2880x2160 photo: by up to 0.39, 1.9 and 2.6 at 1/2, 1/4 and 1/8, against the
1e-4 parity bound).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from sslrt.spec.base import ImageSpec
from sslrt.errors import SslrtError

_CUBIC_A = -0.75  # torch's bicubic coefficient

# Images over this many pixels are refused from their header (SSLRT_MAX_IMAGE_PIXELS overrides it).
# 50 MP holds every camera and dataset image we know of; decoding one costs ~150 MB of RGB.
MAX_IMAGE_PIXELS = 50_000_000
# A file larger than 8 bytes per allowed pixel (uncompressed 16-bit RGBA) plus room for metadata
# is no image we would decode; refusing it before reading keeps memory bounded by the limit.
_MAX_BYTES_PER_PIXEL = 8
_METADATA_BYTES = 16 << 20
# Bytes read before the header check in read_image_bytes: JPEG/PNG headers fit unless a file
# carries huge APP segments, which are then read whole (still under the file-size bound).
_HEADER_PREFIX = 1 << 18
# Junk between JPEG markers that we skip (libjpeg skips it too, with a warning); more is a broken
# or hostile file, and PIL's marker scan walks junk one byte at a time in Python.
_MAX_JPEG_JUNK = 1 << 16


def max_image_pixels() -> int:
    """The pixel limit: SSLRT_MAX_IMAGE_PIXELS if set, else MAX_IMAGE_PIXELS (read at each call)."""
    env = os.environ.get("SSLRT_MAX_IMAGE_PIXELS", "").strip()
    if not env:
        return MAX_IMAGE_PIXELS
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value <= 0:
        raise SslrtError(f"SSLRT_MAX_IMAGE_PIXELS must be a positive integer, got {env!r}")
    return value


def _check_pixels(width: int, height: int, path: str) -> None:
    if width <= 0 or height <= 0:
        raise SslrtError(f"image is corrupt: {path} (header says {width}x{height} pixels)")
    limit = max_image_pixels()
    if width * height > limit:
        raise SslrtError(f"image is too large: {path} is {width}x{height} ({width * height / 1e6:.1f} megapixels), "
                         f"over the limit of {limit / 1e6:g} megapixels (set SSLRT_MAX_IMAGE_PIXELS to raise it)")


class _Header(NamedTuple):
    format: str  # "JPEG" or "PNG"
    width: int | None  # None: the header is not in the bytes given (or is broken)
    height: int | None
    fast: bool  # simplejpeg/OpenCV decode this kind bit-identically to PIL (measured, see _jpeg_header/_png_header)
    problem: str | None = None  # why the header is unusable, for the error message


def _be16(b, i: int) -> int:
    return b[i] << 8 | b[i + 1]


def _be32(b, i: int) -> int:
    return b[i] << 24 | b[i + 1] << 16 | b[i + 2] << 8 | b[i + 3]


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Huffman baseline, extended and progressive frames: the kinds compared bit for bit with PIL.
_JPEG_FAST_SOF = {0xC0, 0xC1, 0xC2}
# Luma sampling factors compared bit for bit (4:4:4, 4:2:2, 4:2:0, 4:1:1, 4:4:0), chroma 1x1.
_JPEG_FAST_LUMA = {(1, 1), (2, 1), (2, 2), (4, 1), (1, 2)}


def _jpeg_header(buf) -> _Header:
    """Walk the marker segments up to the first scan: frame size, and whether the fast decoders may
    decode it.

    Measured bit-identical to PIL with the libjpeg-turbo builds here (3.1.2 in OpenCV 5.0 and in
    simplejpeg 1.9, 3.2.0 in Pillow 13; tests/test_hostile_input.py compares each decoder):
    8-bit Huffman baseline/extended/progressive JPEGs with one component (grey) or three (YCbCr
    with or without an Adobe marker, or RGB) at the sampling factors above, restart markers and
    optimised tables included. CMYK/YCCK (PIL converts with its own formula), 12-bit, arithmetic
    and lossless frames, and other samplings go to PIL.
    """
    n, pos, junk, sof, adobe = len(buf), 2, 0, None, None
    while pos + 4 <= n:
        if buf[pos] != 0xFF:  # junk where a marker is due: skip to the next 0xFF, as libjpeg does
            window = bytes(buf[pos:pos + _MAX_JPEG_JUNK - junk + 1])
            nxt = window.find(b"\xff")
            if nxt < 0:
                if pos + len(window) >= n:
                    break  # the bytes end inside the junk
                return _Header("JPEG", None, None, False, "junk between JPEG markers")
            junk += nxt
            pos += nxt
            continue
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            junk += 1
            if junk > _MAX_JPEG_JUNK:
                return _Header("JPEG", None, None, False, "junk between JPEG markers")
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # first scan (or the end): the header is complete
            break
        length = _be16(buf, pos + 2)
        if length < 2:
            return _Header("JPEG", None, None, False, "bad JPEG segment length")
        if pos + 2 + length > n:
            break
        seg = buf[pos + 4:pos + 2 + length]
        if marker in _JPEG_SOF and sof is None:
            if len(seg) < 6:
                return _Header("JPEG", None, None, False, "short JPEG frame header")
            ncomp = seg[5]
            comps = [(seg[7 + 3 * i] >> 4, seg[7 + 3 * i] & 15, seg[6 + 3 * i]) for i in range(ncomp) if 8 + 3 * i <= len(seg)]
            sof = (marker, seg[0], _be16(seg, 3), _be16(seg, 1), ncomp, comps)
        elif marker == 0xEE and len(seg) >= 12 and bytes(seg[:5]) == b"Adobe":
            adobe = seg[11]
        pos += 2 + length
    if sof is None:
        return _Header("JPEG", None, None, False, None)
    marker, precision, width, height, ncomp, comps = sof
    fast = marker in _JPEG_FAST_SOF and precision == 8 and len(comps) == ncomp
    if fast and ncomp == 1:
        fast = comps[0][:2] == (1, 1)
    elif fast and ncomp == 3:
        rgb = adobe == 0 or (adobe is None and [c[2] for c in comps] == [82, 71, 66])
        chroma_1x1 = all(c[:2] == (1, 1) for c in comps[1:])
        fast = chroma_1x1 and (comps[0][:2] == (1, 1) if rgb else comps[0][:2] in _JPEG_FAST_LUMA)
    else:
        fast = False
    return _Header("JPEG", width, height, fast)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header(buf) -> _Header:
    """IHDR, and the chunks up to the first IDAT (an animation control chunk sends it to PIL).

    Measured bit-identical to PIL: non-interlaced PNGs of bit depth <= 8 (grey 1/2/4/8-bit, RGB,
    RGBA, grey+alpha, palette 2/4/8-bit, with or without tRNS; alpha is dropped by both, not
    composited). 16-bit PNGs differ (PIL clips 16-bit grey to 255, OpenCV shifts it by 8 bits)
    and go to PIL, as do interlaced and animated ones (not measured).
    """
    if len(buf) < 33 or bytes(buf[12:16]) != b"IHDR":
        return _Header("PNG", None, None, False, None)  # PIL decides (and reports) what this is
    width, height, depth, interlace = _be32(buf, 16), _be32(buf, 20), buf[24], buf[28]
    pos, animated, complete = 8, False, False
    for _ in range(4096):  # chunks before the image data: a handful in real files
        if pos + 8 > len(buf):
            break
        kind = bytes(buf[pos + 4:pos + 8])
        if kind == b"IDAT":
            complete = True
            break
        animated |= kind == b"acTL"
        pos += 12 + _be32(buf, pos)
    return _Header("PNG", width, height, complete and depth <= 8 and interlace == 0 and not animated)


def _sniff(buf) -> _Header | None:
    """The JPEG or PNG header in `buf`; None for other formats (PIL reads their headers)."""
    buf = memoryview(np.ascontiguousarray(buf, dtype=np.uint8) if isinstance(buf, np.ndarray) else buf).cast("B")
    if bytes(buf[:3]) == b"\xff\xd8\xff":
        return _jpeg_header(buf)
    if bytes(buf[:8]) == _PNG_SIGNATURE:
        return _png_header(buf)
    return None


@dataclass(frozen=True)
class ImageBytes:
    """An encoded image file held in memory (an upload): the name that messages and results give
    it, and its bytes. Decoded exactly as the same file on disk would be, under the same limits.
    (Not a tuple: a tuple is a (waveform, rate) where audio goes.)"""

    name: str
    data: bytes

    def encoded(self) -> np.ndarray:
        """The bytes as `read_image_bytes` gives a file's (a uint8 view), or the same refusal."""
        if not self.data:
            raise SslrtError(f"image is empty: {self.name}")
        max_bytes = _max_file_bytes()
        if len(self.data) > max_bytes:
            raise SslrtError(_too_large(self.name, max_bytes))
        return np.frombuffer(self.data, dtype=np.uint8)


def _max_file_bytes() -> int:
    return _MAX_BYTES_PER_PIXEL * max_image_pixels() + _METADATA_BYTES


def _too_large(name: str, max_bytes: int) -> str:
    return (f"image file is too large: {name} is over {max_bytes >> 20} MiB, more than an image of "
            f"{max_image_pixels() / 1e6:g} megapixels takes (set SSLRT_MAX_IMAGE_PIXELS to raise it)")


def read_image_bytes(path: str | os.PathLike) -> np.ndarray:
    """The encoded file (uint8 array): read once, hashed by the runtime's cache, then decoded.

    Refuses, before reading the file whole, a file too large for the pixel limit and a JPEG or PNG
    whose header says it is over the limit.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SslrtError(f"image not found: {path}")
    max_bytes = _max_file_bytes()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise SslrtError(_too_large(path, max_bytes))
            prefix = f.read(_HEADER_PREFIX)
            if not prefix:
                raise SslrtError(f"image is empty: {path}")
            head = _sniff(prefix)
            if head is not None and head.width is not None:
                _check_pixels(head.width, head.height, path)
            # Sized by the file, not by the limit: np.fromfile(count=limit) reserved the whole
            # limit (416 MB by default) per read, which strict overcommit or `ulimit -v` refuses.
            data = np.empty(max(size, len(prefix)), dtype=np.uint8)
            got = len(prefix)
            data[:got] = np.frombuffer(prefix, dtype=np.uint8)
            if size > got:
                got += f.readinto(memoryview(data)[got:]) or 0
            data = data[:got]
            more = []  # a file that grew since it was measured: read on, in chunks, bounded still
            while got <= max_bytes and (chunk := f.read(min(1 << 20, max_bytes + 1 - got))):
                more.append(np.frombuffer(chunk, dtype=np.uint8))
                got += len(chunk)
            if more:
                data = np.concatenate([data, *more])
    except OSError as exc:
        raise SslrtError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if data.size > max_bytes:
        raise SslrtError(_too_large(path, max_bytes))
    return data


def load_image(path: str | os.PathLike, data: np.ndarray | None = None) -> np.ndarray:
    """Decode an image file (or its bytes, already read) to an RGB uint8 array (H, W, 3).

    The result equals PIL's `np.asarray(Image.open(path).convert('RGB'))` (see the module's
    docstring). EXIF orientation is ignored on purpose: PIL's convert does not apply it, and the
    heatmap must match the paper's.
    """
    path = os.fspath(path)
    if data is None:
        data = read_image_bytes(path)
    elif not isinstance(data, np.ndarray):
        data = np.frombuffer(data, dtype=np.uint8)  # bytes, bytearray, memoryview
    if data.size == 0:
        raise SslrtError(f"image is empty: {path}")
    head = _sniff(data)
    if head is not None:
        if head.width is None and head.format == "JPEG":
            # Without a frame header neither library decodes it; PIL would scan junk bytewise first.
            raise SslrtError(f"image is corrupt: {path} ({head.problem or 'no JPEG frame header'})")
        if head.width is not None:
            _check_pixels(head.width, head.height, path)
        if head.fast:
            rgb = _turbojpeg_decode(data) if head.format == "JPEG" else None
            if rgb is None:
                rgb = _opencv_decode(data)
            if rgb is not None:
                return rgb
            # OpenCV refused it: PIL, the reference, decides (it accepts some files libpng rejects).
    return _pil_decode(data, path)


@lru_cache(maxsize=1)
def _simplejpeg():
    try:
        import simplejpeg
    except Exception:  # absent (an install without the extras) or broken: OpenCV decodes the same pixels
        return None
    return simplejpeg


def _turbojpeg_decode(data: np.ndarray) -> np.ndarray | None:
    """A JPEG through simplejpeg (accurate integer IDCT and fancy upsampling, libjpeg's defaults,
    as PIL and OpenCV decode); None where simplejpeg is absent or libjpeg errs or warns."""
    simplejpeg = _simplejpeg()
    if simplejpeg is None:
        return None
    # contiguous bytes: simplejpeg reads the buffer's memory from its first element on
    data = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    try:
        rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)
    except Exception:  # ValueError with libjpeg's message: OpenCV, then PIL, decide what the file is
        return None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        return None
    return rgb


def _opencv_decode(data: np.ndarray) -> np.ndarray | None:
    try:
        if _IMREAD_RGB is not None:  # OpenCV >= 4.10 decodes to RGB directly
            rgb = cv2.imdecode(data, _IMREAD_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
        else:
            rgb = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if rgb is not None and rgb.ndim == 3 and rgb.shape[2] == 3:
                rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB, dst=rgb)
    except cv2.error:
        return None
    if rgb is None or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        return None
    return rgb


_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


@lru_cache(maxsize=1)
def _pil_formats() -> tuple[str, ...]:
    """Every format PIL opens, except EPS: PIL hands EPS files to Ghostscript, a PostScript
    interpreter, which is no place for untrusted input."""
    from PIL import Image

    Image.init()
    return tuple(f for f in Image.ID if f in Image.OPEN and f != "EPS")


def _pil_decode(data: np.ndarray, path: str) -> np.ndarray:
    from PIL import Image  # only for the kinds OpenCV does not decode like PIL

    try:
        with Image.open(io.BytesIO(data), formats=_pil_formats()) as im:
            _check_pixels(im.width, im.height, path)  # from the header, before decoding
            rgb = im.convert("RGB")
        view = np.asarray(rgb)  # a read-only view of PIL's bytes
        del rgb
        out = view.copy()
    except SslrtError:
        raise
    except Image.DecompressionBombError:
        raise SslrtError(f"image is too large: {path} is over PIL's own limit of {2 * Image.MAX_IMAGE_PIXELS / 1e6:g} "
                         "megapixels (PIL.Image.MAX_IMAGE_PIXELS)") from None
    except Exception as exc:  # PIL's plugins raise OSError, SyntaxError, ValueError, struct.error, ...
        raise SslrtError(f"image is corrupt or not an image: {path} ({_first_line(exc)})") from None
    if out.ndim != 3 or out.shape[2] != 3 or out.size == 0:
        raise SslrtError(f"image is corrupt or not an image: {path} (decoded to shape {out.shape})")
    # Containers (ICO, ICNS) may decode an embedded image larger than their header said; PIL's own
    # limit bounded that decode, this keeps the result within ours.
    _check_pixels(out.shape[1], out.shape[0], path)
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


_INT_KINDS = "iu"


def _as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An array given to the Python API -> RGB uint8 (H, W, 3). Nothing is reinterpreted silently:

    layout: (H, W) grey, (H, W, 1) grey, (H, W, 3) RGB, (H, W, 4) RGBA (alpha dropped, as PIL's
        convert('RGB') drops it); anything else, channels-first (3, H, W) included, is refused.
    uint8: as is.  bool: False/True -> 0/255 (PIL's mode '1').
    float: values must be in [0, 1]; quantized to 8 bits (round(x * 255)), since the paper's
        ToTensor sees 8-bit pixels. Values outside [0, 1] (a 0..255 float image) are refused.
    other integers (uint16, int32, int64, ...): accepted only when every value is in [0, 255],
        taken as 8-bit values (PIL's convert of 16-bit grey clips to 255; we refuse rather than
        clip). A 16-bit image must be scaled by the caller, e.g. (x >> 8).astype(np.uint8).
    """
    if not isinstance(image, np.ndarray):
        raise SslrtError(f"{name}: expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] == 0 or image.shape[1] == 0:
        hint = " (channels first? pass (H, W, 3))" if image.ndim == 3 and image.shape[0] in (1, 3, 4) else ""
        raise SslrtError(f"{name}: expected an RGB array (H, W, 3), got shape {image.shape}{hint}")
    image = image[:, :, :3]
    kind = image.dtype.kind
    if kind == "u" and image.dtype.itemsize == 1:
        return image
    if kind == "b":
        return image.astype(np.uint8) * np.uint8(255)
    if kind == "f":
        if not np.isfinite(image).all():
            raise SslrtError(f"{name}: array contains NaN or infinite values")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            raise SslrtError(f"{name}: float image values must be in [0, 1]; got min {lo:g}, max {hi:g} — "
                             "pass uint8 or divide by 255")
        return np.rint(image.astype(np.float64) * 255.0).astype(np.uint8)  # as PIL quantizes
    if kind in _INT_KINDS:
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi > 255:
            raise SslrtError(f"{name}: {image.dtype} image values must be 8-bit (0..255); got min {lo}, max {hi} — "
                             "pass uint8 (for 16-bit data, e.g. (x >> 8).astype(np.uint8)) or float in [0, 1]")
        return image.astype(np.uint8)
    raise SslrtError(f"{name}: unsupported image dtype {image.dtype}; pass uint8 RGB (or float in [0, 1])")


@lru_cache(maxsize=32)
def _bicubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (4, out) and float32 weights (4, out) of torch's bicubic resize along one axis,
    bit for bit as torch's x86 CPU kernel computes them (AVX2/AVX-512 builds, whose compiler fuses
    some multiply-adds; measured against torch 2.13 with impulse inputs on a dozen sizes):

        source coordinate   fma(in/out, i + 0.5, -0.5)            (float32, not clamped)
        |x| <= 1            fma(A + 2, x, -(A + 3)) x x + 1
        1 < |x| < 2         fma(fma(A, x, -5A), x, 8A) x - 4A

    At source coordinates near 1000, float32 rounding moves the weights by ~1e-4, which is visible
    at the 1e-4 parity bound; the fused steps move some of them by an ulp.
    """
    f = np.float32
    scale = f(in_size) / f(out_size)
    src = _fma_f32(np.full(out_size, scale, np.float64), np.arange(out_size, dtype=f).astype(np.float64) + 0.5, -0.5)
    base = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    t = np.clip(src - base.astype(f), f(0), f(1)).astype(f)
    a = f(_CUBIC_A)

    def near(x):  # |x| <= 1
        inner = _fma_f32(np.float64(a + f(2)), x.astype(np.float64), -float(a + f(3)))
        return inner * x * x + f(1)

    def far(x):  # 1 < |x| < 2
        x64 = x.astype(np.float64)
        inner = _fma_f32(_fma_f32(np.float64(a), x64, -float(f(5) * a)).astype(np.float64), x64, float(f(8) * a))
        return inner * x - f(4) * a

    one = f(1)
    mirror = (one - t).astype(f)
    weights = np.stack([far((t + one).astype(f)), near(t), near(mirror), far((mirror + one).astype(f))]).astype(f)
    index = base[None, :] + np.arange(-1, 3)[:, None]
    return np.clip(index, 0, in_size - 1), weights


# float64 bits below a float32's 24-bit mantissa: 29. A float64 whose low 29 bits are 1 followed
# by zeros sits exactly halfway between two float32.
_BELOW_F32 = np.uint64((1 << 29) - 1)
_HALFWAY_F32 = np.uint64(1 << 28)


def _fma_f32(a: np.ndarray, b, c) -> np.ndarray:
    """float32 fused multiply-add, a * b + c rounded once, for float32 values held as float64
    (`a` an array; `b`, `c` arrays or scalars that broadcast to it).

    a * b is exact in float64 (24 + 24 bits). Rounding a * b + c to float64 and then to float32
    differs from a single rounding only where the float64 sum lands exactly halfway between two
    float32 although the exact sum does not; those few elements are decided by the exact error of
    the float64 sum (two-sum).
    """
    # C order: the corrections below are written through a flat view of `out`
    s = np.multiply(a, b, dtype=np.float64, order="C")
    s += c
    out = s.astype(np.float32)
    low = s.view(np.uint64) & _BELOW_F32
    ties = np.flatnonzero(low == _HALFWAY_F32)
    if ties.size:
        # .flat indexes strided and broadcast views (in C order) without copying them
        p_t = np.broadcast_to(a, s.shape).flat[ties].astype(np.float64) * np.broadcast_to(b, s.shape).flat[ties].astype(np.float64)
        c_t = np.broadcast_to(c, s.shape).flat[ties].astype(np.float64)
        s_t = s.reshape(-1)[ties]
        back = s_t - p_t
        error = (p_t - (s_t - back)) + (c_t - back)
        inexact = error != 0
        if inexact.any():
            toward = np.where(error[inexact] > 0, np.inf, -np.inf)
            out.reshape(-1)[ties[inexact]] = np.nextafter(s_t[inexact], toward).astype(np.float32)
    return out


def _resize_bicubic(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bicubic resize of an (H, W, C) uint8 array to float32 (C, out_h, out_w) in 0..255 (a view).

    Separable, each pass a gather of whole input lines and one small matrix product per output
    line: the 4 input rows of each output row, then, on the transposed result, the 4 columns of
    each output column. Gathering whole rows is a few large copies where gathering columns of an
    (H, W, 3) array is one tiny copy per pixel, so the transpose between the passes pays for
    itself. The transpose is of the (out_h, W * C) plane, one float per element (0.12 ms for
    224 x 3072 where OpenCV's transpose of 12-byte RGB pixels took 0.4-0.7 ms); its lines are
    then (column, channel) pairs, and the second pass gathers the 4 columns of each output column
    channel by channel. 1024x1024 -> 224x224 with the normalisation: 1.4 ms on one core. Within
    ~3e-7 of torch's result per value of the model's input (float32 sums in another order).
    """
    h, w, c = x.shape
    rows = _bicubic_pass(x.reshape(h, w * c), *_bicubic_taps(h, out_h))  # (out_h, w * c)
    lines = cv2.transpose(rows)  # (w * c, out_h): line i * c + ch is column i of channel ch
    out = _bicubic_pass(lines, *_channel_bicubic_taps(w, out_w, c))  # (out_w * c, out_h)
    return out.reshape(out_w, c, out_h).transpose(1, 2, 0)


@lru_cache(maxsize=32)
def _channel_bicubic_taps(in_size: int, out_size: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """`_bicubic_taps` over (position, channel) lines: line p * c + ch for each channel."""
    index, weights = _bicubic_taps(in_size, out_size)
    return (index[:, :, None] * c + np.arange(c)).reshape(4, out_size * c), np.repeat(weights, c, axis=1)


def _bicubic_pass(lines: np.ndarray, index: np.ndarray, weights: np.ndarray, block: int = 16) -> np.ndarray:
    """out[i] = sum_k weights[k, i] * lines[index[k, i]] for 2-D `lines` (n, m) -> float32 (out, m).

    In blocks of output lines through one small float32 buffer: converting all the taps at once
    would allocate 4x the output (11 MB for a 1024-wide image), memory that a process with
    several decoding threads gets fresh from the kernel, page fault by page fault, on every call
    (measured in a Ray Serve replica: ~2000 faults and 5 ms of system time per request).
    """
    n_out, m = index.shape[1], lines.shape[1]
    out = np.empty((n_out, m), np.float32)
    taps = np.empty((min(block, n_out), 4, m), np.float32)
    # uint8 pixels: gathered into a small buffer of their own, then converted by assignment
    # (numpy's copyto from the gathered temporary was slower)
    gathered = None if lines.dtype == np.float32 else np.empty((min(block, n_out) * 4, m), lines.dtype)
    w = weights.T[:, None, :]
    for lo in range(0, n_out, block):
        hi = min(n_out, lo + block)
        picked = index[:, lo:hi].T.reshape(-1)  # in range already: `clip` lets take write into `out` unbuffered
        if gathered is None:  # float32 lines: gathered straight into the buffer
            np.take(lines, picked, axis=0, out=taps[:hi - lo].reshape(-1, m), mode="clip")
        else:
            np.take(lines, picked, axis=0, out=gathered[:picked.size], mode="clip")
            taps[:hi - lo] = gathered[:picked.size].reshape(hi - lo, 4, m)
        np.matmul(w[lo:hi], taps[:hi - lo], out=out[lo:hi, None, :])
    return out


def _resize_bicubic_exact(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bicubic resize of an (H, W, C) uint8 array to float32 (C, out_h, out_w) in 0..1, bit for
    bit as the official transform computes it (ToTensor, then torch's CPU bicubic on x86).

    torch's kernel evaluates each output value as four row sums of four taps along the width,
    combined along the height, each sum accumulated as fma(t0, w0, t1 * w1), then fma(t2, w2, .),
    fma(t3, w3, .) in float32 (the chain its compiler emits). Here: the width pass on the input
    rows that any output row uses (at most 4 per output row, so memory is bounded by the output,
    not the image), then the height pass, each fused step emulated exactly by `_fma_f32`; channels
    first, so that numpy's inner loops run along the output width.
    """
    iy, wy = _bicubic_taps(x.shape[0], out_h)
    ix, wx = _bicubic_taps(x.shape[1], out_w)
    rows, row_of = np.unique(iy, return_inverse=True)
    row_of = row_of.reshape(iy.shape)
    taps = np.take(x[rows], ix.reshape(-1), axis=1).transpose(2, 0, 1)  # (C, rows, 4 * out_w) uint8
    taps = taps.astype(np.float32, order="C")
    taps /= np.float32(255)  # ToTensor, rounded as torch rounds it
    taps = taps.reshape(taps.shape[0], len(rows), 4, out_w)
    w = wx.astype(np.float64)
    across = _fma_f32(taps[:, :, 0].astype(np.float64), w[0], taps[:, :, 1] * wx[1])
    across = _fma_f32(taps[:, :, 2], w[2], across)
    across = _fma_f32(taps[:, :, 3], w[3], across)
    w = wy.astype(np.float64)[:, :, None]
    out = _fma_f32(across[:, row_of[0]].astype(np.float64), w[0], across[:, row_of[1]] * wy[1][:, None])
    out = _fma_f32(across[:, row_of[2]], w[2], out)
    return _fma_f32(across[:, row_of[3]], w[3], out)


_OURS_IMAGE = ImageSpec()  # the dataclass defaults are the paper's transform (sslrt/spec/ours.py)


def image_to_tensor(image: np.ndarray, spec=None, exact: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> normalized float32 (3, size, size), the model's image input.

    `spec`: the family's ImageSpec (or its ModelSpec); None = ours'. Every family of sslrt.spec has
    the same image transform (PEER_FACTS §3.1), so the tensor is the same for all of them.
    `exact`: the tensor bit for bit as the official code computes it on an x86 CPU (its sha256
    equals the golden one); the default differs by <= ~2e-6 per value, which moves a heatmap by
    ~1e-7. The exact resize costs ~7x the default one (12 vs 1.7 ms for a 1024x1024 image on one
    core).
    """
    if spec is None:
        spec = _OURS_IMAGE
    elif not isinstance(spec, ImageSpec):
        spec = spec.image  # a ModelSpec
    if spec.resize != "bicubic":
        raise SslrtError(f"unsupported image resize {spec.resize!r} in the model spec")
    size = spec.size
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    rgb = _as_rgb_uint8(image)
    if exact:
        # torch's order: ToTensor's /255 before the resize, then Normalize's (x - mean) / std
        return np.ascontiguousarray((_resize_bicubic_exact(rgb, size, size) - mean) / std, dtype=np.float32)
    return _normalize(_resize_bicubic(rgb, size, size), mean, std)


def _normalize(resized: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x / 255 - mean) / std in float32, into one new C-ordered array (ToTensor, then Normalize)."""
    out = np.divide(resized, np.float32(255.0), out=np.empty(resized.shape, np.float32))
    out -= mean
    out /= std
    return out
