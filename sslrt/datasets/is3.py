"""IS3 (Interactive Synthetic Sound Source, the paper's own set): 3240 images x 2 sounding
objects = 6480 samples.

Annotations: is3_synthetic3240_bbox.json, a list of {image, audio, gt_box} where gt_box is
[x0, y0, x1, y1] in 224 pixels and image/audio are absolute paths on the authors' machine
(.../visual_frames/accordion_baby_10467_accordion.jpg, .../audio_wav/...wav). Files are found by
base name anywhere under the root; an image may also be stored once per pair, under the image
name without the category ('accordion_baby_10467.jpg').
"""
from __future__ import annotations

import math
import os

from sslrt.datasets.common import DatasetReading, FileIndex, Sample, base_name, find_annotation, load_json
from sslrt.errors import SslrtError
from sslrt.measure.metrics import is3_image_group

ANNOTATION_NAMES = ("is3_synthetic3240_bbox.json", "synthetic3240_bbox.json")


def _parse_entries(path, entries) -> list[tuple[str, str, tuple[float, ...]]]:
    if not isinstance(entries, list):
        raise SslrtError(f"{path}: expected a JSON list of {{image, audio, gt_box}} entries")
    parsed = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("image", "audio")):
            raise SslrtError(f"{path}: entry {i} lacks an 'image' or 'audio' path")
        box = entry.get("gt_box")
        if not isinstance(box, list) or len(box) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box
        ):
            raise SslrtError(f"{path}: entry {i} ({entry['image']}): 'gt_box' must be [x0, y0, x1, y1] numbers")
        parsed.append((entry["image"], entry["audio"], tuple(float(v) for v in box)))
    return parsed


def read_is3(root: str | os.PathLike, annotation_file: str | os.PathLike | None = None) -> DatasetReading:
    """Read an IS3 copy under root; annotation_file defaults to is3_synthetic3240_bbox.json (or the
    official repository's name, synthetic3240_bbox.json) found under root."""
    index = FileIndex(root)
    path = find_annotation(index, annotation_file, ANNOTATION_NAMES, "IS3")
    reading = DatasetReading("is3", [])
    for image_ref, audio_ref, box in _parse_entries(path, load_json(path)):
        image_name = base_name(image_ref)
        key, ext = os.path.splitext(image_name)
        group = is3_image_group(key)
        image = index.first_file([image_name, group + ext] + [group + e for e in (".jpg", ".png") if e != ext])
        audio = index.first_file([base_name(audio_ref), key + ".wav"])
        absent = [what for what, p in (("image", image), ("audio", audio)) if p is None]
        if absent:
            reading.note_missing(key, absent)
            continue
        reading.samples.append(Sample(key, image, audio, "is3", (box,), group))
    return reading
