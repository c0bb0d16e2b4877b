"""VGG-SS (Chen et al. 2021) test set: 5158 annotated VGGSound clips.

Annotations: vggss.json, a list of {file, class, bbox: [[x0, y0, x1, y1], ...]} with boxes in
fractions of the frame. Media: the frame <clip>/image_050.jpg and the sound <clip>.wav. The
official code names clip folders 'zpWuikVorYg_32000_42000' while vggss.json says
'zpWuikVorYg_000032' (start second, zero-padded); both spellings are accepted, and a flat
<clip>.jpg frame too.
"""
from __future__ import annotations

import math
import os

from sslrt.datasets.common import DatasetReading, FileIndex, Sample, find_annotation, load_json
from sslrt.errors import SslrtError

ANNOTATION_NAMES = ("vggss.json",)
FRAME_NAME = "image_050.jpg"


def vggsound_clip_folder(file: str) -> str | None:
    """'zpWuikVorYg_000032' -> 'zpWuikVorYg_32000_42000' (start and end in ms), the official
    code's folder name; None when the name is not '<11-char id>_<seconds>'."""
    if len(file) < 13 or file[11] != "_" or not file[12:].isdigit():
        return None
    start = int(file[12:])
    return f"{file[:11]}_{start * 1000}_{(start + 10) * 1000}"


def _parse_entries(path, entries) -> list[tuple[str, tuple]]:
    if not isinstance(entries, list):
        raise SslrtError(f"{path}: expected a JSON list of {{file, class, bbox}} entries")
    parsed = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "bbox" not in entry:
            raise SslrtError(f"{path}: entry {i} lacks a 'file' name or a 'bbox' list")
        boxes = entry["bbox"]
        if not isinstance(boxes, list) or not all(
            isinstance(b, list) and len(b) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b)
            for b in boxes
        ):
            raise SslrtError(f"{path}: entry {i} ({entry['file']}): 'bbox' must be a list of [x0, y0, x1, y1] numbers")
        parsed.append((entry["file"], tuple(tuple(float(v) for v in b) for b in boxes)))
    return parsed


def read_vggss(root: str | os.PathLike, annotation_file: str | os.PathLike | None = None) -> DatasetReading:
    """Read a VGG-SS copy under root; annotation_file defaults to a vggss.json found under root."""
    index = FileIndex(root)
    path = find_annotation(index, annotation_file, ANNOTATION_NAMES, "VGG-SS")
    entries = _parse_entries(path, load_json(path))

    frames: dict[str, object] = {}
    for frame in index.files(FRAME_NAME):  # shallowest first, so setdefault keeps the best
        frames.setdefault(frame.parent.name, frame)

    reading = DatasetReading("vggss", [])
    for file, boxes in entries:
        names = [file] + [n for n in [vggsound_clip_folder(file)] if n]
        image = next((frames[n] for n in names if n in frames), None)
        if image is None:
            image = index.first_file([n + ext for n in names for ext in (".jpg", ".jpeg", ".png")])
        audio = index.first_file([n + ".wav" for n in names])
        absent = [what for what, p in (("image", image), ("audio", audio)) if p is None]
        if absent:
            reading.note_missing(file, absent)
            continue
        reading.samples.append(Sample(file, image, audio, "vggss", boxes, file))
    return reading
