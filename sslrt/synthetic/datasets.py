"""Writers of small datasets in the three official layouts, and deterministic synthetic content.

The write_* functions lay given samples out exactly as the readers expect the official copies
(images via cv2.imwrite, 16 kHz PCM_16 wavs via soundfile, the annotation file); anything that
makes images and sounds (these synthetic_* helpers, a procedural scene generator) can use them.
Nothing here reads outside the given root.
"""
from __future__ import annotations

import csv
import json
import os
import string
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import soundfile as sf

from sslrt.synthetic.generated import SAMPLE_RATE
from sslrt.errors import SslrtError


class ClipSample(NamedTuple):
    """One VGG-SS or Flickr-SoundNet clip to write.

    boxes: VGG-SS, [x0, y0, x1, y1] fractions of the frame; Flickr, one [xmin, ymin, xmax, ymax]
    per annotator in 256-pixel units.
    """

    name: str
    rgb: np.ndarray  # (H, W, 3) uint8, RGB
    waveform: np.ndarray  # mono float in [-1, 1] at 16 kHz
    boxes: Sequence[Sequence[float]]
    label: str = "synthetic"


class IS3Sample(NamedTuple):
    """One IS3 sample: an image with one sounding object, its sound and its box in 224 pixels.
    name is '<image>_<category>', e.g. 'accordion_baby_10467_accordion'."""

    name: str
    rgb: np.ndarray
    waveform: np.ndarray
    box: Sequence[float]


def _as_sample(item, kind: type) -> tuple:
    """A kind (ClipSample or IS3Sample) from an instance, a plain tuple, or any object with the
    same attribute names (e.g. a scene generator's own record)."""
    if isinstance(item, kind):
        return item
    if all(hasattr(item, f) for f in kind._fields if f not in kind._field_defaults):
        return kind(**{f: getattr(item, f) for f in kind._fields if hasattr(item, f)})
    try:
        return kind(*item)
    except TypeError:
        raise SslrtError(f"expected {kind.__name__}({', '.join(kind._fields)}), got {type(item).__name__}") from None


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def write_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SslrtError(f"{path}: image must be an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise SslrtError(f"{path}: could not write the image")
    return path


def write_wav(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    wave = np.asarray(waveform, dtype=np.float64)
    if wave.ndim != 1 or wave.size == 0 or not np.isfinite(wave).all():
        raise SslrtError(f"{path}: waveform must be a non-empty finite 1-D array")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(wave, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return path


def write_vggss(root: str | os.PathLike, samples: Iterable[ClipSample]) -> Path:
    """<root>/<name>/image_050.jpg, <root>/<name>.wav, <root>/metadata/vggss.json; returns the
    annotation file."""
    root = Path(root)
    entries = []
    for s in map(lambda item: _as_sample(item, ClipSample), samples):
        write_image(root / s.name / "image_050.jpg", s.rgb)
        write_wav(root / f"{s.name}.wav", s.waveform)
        entries.append({"file": s.name, "class": s.label, "bbox": [[float(v) for v in b] for b in s.boxes]})
    annotation = root / "metadata" / "vggss.json"
    annotation.parent.mkdir(parents=True, exist_ok=True)
    annotation.write_text(json.dumps(entries))
    return annotation


def flickr_xml(name: str, boxes: Sequence[Sequence[int]]) -> ET.ElementTree:
    """One annotator's box per <bbox>, inside <object>. The first child of <bbox> names the
    annotator: the official reader skips a first child, so it reads these files the same way."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    obj = ET.SubElement(root, "object")
    for annotator, box in enumerate(boxes, start=1):
        bbox = ET.SubElement(obj, "bbox")
        ET.SubElement(bbox, "annotator").text = str(annotator)
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bbox, tag).text = str(int(value))
    return ET.ElementTree(root)


def write_flickr(root: str | os.PathLike, samples: Iterable[ClipSample]) -> Path:
    """<root>/frames/<id>.jpg, <root>/audio/<id>.wav, <root>/Annotations/<id>.xml and
    <root>/flickr_test.csv (id, class); returns the test list."""
    root = Path(root)
    rows = []
    for s in map(lambda item: _as_sample(item, ClipSample), samples):
        write_image(root / "frames" / f"{s.name}.jpg", s.rgb)
        write_wav(root / "audio" / f"{s.name}.wav", s.waveform)
        xml_path = root / "Annotations" / f"{s.name}.xml"
        xml_path.parent.mkdir(parents=True, exist_ok=True)
        flickr_xml(s.name, s.boxes).write(xml_path, encoding="utf-8", xml_declaration=True)
        rows.append((s.name, s.label))
    test_list = root / "flickr_test.csv"
    with open(test_list, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return test_list


# The JSON of the official set holds absolute paths from the authors' machine; so do ours, so
# that readers are exercised on finding files by base name.
_IS3_FOREIGN_ROOT = "/mnt/authors_machine/synthetic3241"


IS3_ANNOTATION = "is3_synthetic3240_bbox.json"  # the official file's name, so readers find it by default


def write_is3(root: str | os.PathLike, samples: Iterable[IS3Sample]) -> Path:
    """<root>/visual_frames/<name>.jpg, <root>/audio_wav/<name>.wav and
    <root>/is3_synthetic3240_bbox.json; returns the annotation file."""
    root = Path(root)
    entries = []
    for s in map(lambda item: _as_sample(item, IS3Sample), samples):
        if len(s.box) != 4:
            raise SslrtError(f"IS3 sample {s.name}: box must be [x0, y0, x1, y1] in 224 pixels")
        write_image(root / "visual_frames" / f"{s.name}.jpg", s.rgb)
        write_wav(root / "audio_wav" / f"{s.name}.wav", s.waveform)
        entries.append({
            "image": f"{_IS3_FOREIGN_ROOT}/visual_frames/{s.name}.jpg",
            "audio": f"{_IS3_FOREIGN_ROOT}/audio_wav/{s.name}.wav",
            "gt_box": [float(v) for v in s.box],
        })
    annotation = root / IS3_ANNOTATION
    root.mkdir(parents=True, exist_ok=True)
    annotation.write_text(json.dumps(entries))
    return annotation


# ----------------------------------------------------------------------------------------------
# Deterministic synthetic content
# ----------------------------------------------------------------------------------------------
def _tone(rng: np.random.Generator, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    wave = 0.4 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.05 * rng.standard_normal(t.size)
    return np.clip(wave, -1.0, 1.0)


def _canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)


def _paint(rgb: np.ndarray, rng: np.random.Generator, x0: int, y0: int, x1: int, y1: int) -> None:
    rgb[y0:y1, x0:x1] = rng.integers(150, 256, size=3, dtype=np.uint8)


def _random_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    return x0, y0, int(rng.integers(x0 + 4, width + 1)), int(rng.integers(y0 + 4, height + 1))


def synthetic_vggss_samples(n: int, seed: int = 0) -> list[ClipSample]:
    """n VGG-SS-style clips named '<11-char id>_<6-digit second>', one or two boxes each."""
    rng = np.random.default_rng(seed)
    alphabet = np.array(list(string.ascii_letters + string.digits + "-_"))
    samples = []
    for i in range(n):
        name = "".join(rng.choice(alphabet, 11)) + f"_{int(rng.integers(0, 600)):06d}"
        height, width = 120, 160
        rgb = _canvas(rng, height, width)
        boxes = []
        for _ in range(1 + i % 2):
            x0, y0, x1, y1 = _random_box(rng, width, height)
            _paint(rgb, rng, x0, y0, x1, y1)
            boxes.append([x0 / width, y0 / height, x1 / width, y1 / height])
        samples.append(ClipSample(name, rgb, _tone(rng), boxes, label="synthetic tone"))
    return samples


def synthetic_flickr_samples(n: int, seed: int = 0, annotators: int = 3) -> list[ClipSample]:
    """n Flickr-style clips with 11-digit ids; each annotator marks the object with some jitter."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        name = str(int(rng.integers(10**10, 10**11)))
        rgb = _canvas(rng, 128, 128)
        x0, y0, x1, y1 = _random_box(rng, 128, 128)
        _paint(rgb, rng, x0, y0, x1, y1)
        boxes = []
        for _ in range(annotators):  # the 128-pixel frame is annotated in 256-pixel units
            jitter = rng.integers(-6, 7, size=4)
            box = np.clip(np.array([x0, y0, x1, y1]) * 2 + jitter, 0, 256)
            boxes.append([int(v) for v in box])
        samples.append(ClipSample(name, rgb, _tone(rng), boxes, label=str(int(rng.integers(0, 400)))))
    return samples


_IS3_CATEGORIES = ("accordion", "baby", "cat", "dog", "guitar", "piano", "violin", "drum")


def synthetic_is3_samples(n_images: int, seed: int = 0) -> list[IS3Sample]:
    """n_images 224x224 images with two objects each -> 2 * n_images samples
    '<catA>_<catB>_<id>_<cat>', both of an image sharing its pixels."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_images):
        cat_a, cat_b = rng.choice(len(_IS3_CATEGORIES), 2, replace=False)
        cats = (_IS3_CATEGORIES[cat_a], _IS3_CATEGORIES[cat_b])
        image = f"{cats[0]}_{cats[1]}_{int(rng.integers(1000, 20000))}"
        rgb = _canvas(rng, 224, 224)
        boxes = [_random_box(rng, 224, 224) for _ in cats]
        for box in boxes:
            _paint(rgb, rng, *box)
        for cat, box in zip(cats, boxes):
            samples.append(IS3Sample(f"{image}_{cat}", rgb, _tone(rng), [float(v) for v in box]))
    return samples
