"""Flickr-SoundNet test set (Senocak et al. 2018): 250 clips, boxes from several annotators.

Test list: flickr_test.csv (id, class). Per clip: the frame <id>.jpg (or, as in the official
code's copy, the first .jpg inside a folder <id>.mp4), the sound <id>.wav and an XML file
<id>.xml whose <bbox> elements hold one annotator's box each, in 256-pixel units.
"""
from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from sslrt.datasets.common import DatasetReading, FileIndex, Sample, error_line, find_annotation
from sslrt.errors import SslrtError

ANNOTATION_NAMES = ("flickr_test.csv",)
_COORDS = ("xmin", "ymin", "xmax", "ymax")


def read_flickr_test_list(path: Path) -> list[str]:
    """Clip ids: the first column of flickr_test.csv."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SslrtError(f"{path}: not a readable test list ({error_line(exc)})") from None
    ids = [row[0].strip() for row in rows if row and row[0].strip()]
    if not ids:
        raise SslrtError(f"{path}: the test list names no clips")
    return ids


def parse_flickr_boxes(path: str | os.PathLike) -> list[tuple[int, int, int, int]]:
    """Every <bbox> of a Flickr-SoundNet XML file as (xmin, ymin, xmax, ymax) in 256-pixel units.

    The official reader skips the first child of <bbox> and takes the next four in order as
    xmin, ymin, xmax, ymax; here children named xmin/ymin/xmax/ymax are read by name, and a
    <bbox> without those names is read by that official position rule.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise SslrtError(f"{path}: not a readable XML annotation ({error_line(exc)})") from None
    boxes = []
    for bbox in root.iter("bbox"):
        children = list(bbox)
        named = {c.tag.lower(): c.text for c in children}
        if all(k in named for k in _COORDS):
            texts = [named[k] for k in _COORDS]
        elif len(children) == 5:
            texts = [c.text for c in children[1:]]
        else:
            raise SslrtError(f"{path}: a <bbox> needs xmin, ymin, xmax, ymax children")
        try:
            boxes.append(tuple(int(float((t or "").strip())) for t in texts))
        except ValueError:
            raise SslrtError(f"{path}: a <bbox> coordinate is not a number: {texts}") from None
    return boxes


def _frame_in_folder(index: FileIndex, clip: str) -> Path | None:
    """The official copy keeps each frame in a folder '<id>.mp4'; take its first .jpg by name."""
    for folder_name in (clip + ".mp4", clip):
        folder = index.dir(folder_name)
        if folder is not None:
            jpgs = sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg"))
            if jpgs:
                return folder / jpgs[0]
    return None


def read_flickr(root: str | os.PathLike, test_list: str | os.PathLike | None = None,
                annotation_dir: str | os.PathLike | None = None) -> DatasetReading:
    """Read a Flickr-SoundNet copy under root; the test list defaults to a flickr_test.csv found
    under root, the XML files to <id>.xml anywhere under root (or in annotation_dir)."""
    index = FileIndex(root)
    path = find_annotation(index, test_list, ANNOTATION_NAMES, "Flickr-SoundNet")
    ids = read_flickr_test_list(path)
    if annotation_dir is not None and not Path(annotation_dir).is_dir():
        raise SslrtError(f"Flickr-SoundNet annotation folder not found: {annotation_dir}")

    reading = DatasetReading("flickr", [])
    for clip in ids:
        if annotation_dir is not None:
            xml = Path(annotation_dir) / f"{clip}.xml"
            xml = xml if xml.is_file() else None
        else:
            xml = index.file(f"{clip}.xml")
        image = index.first_file([clip + ext for ext in (".jpg", ".jpeg", ".png")]) or _frame_in_folder(index, clip)
        audio = index.file(clip + ".wav")
        absent = [what for what, p in (("image", image), ("audio", audio), ("annotation", xml)) if p is None]
        if absent:
            reading.note_missing(clip, absent)
            continue
        boxes = tuple(parse_flickr_boxes(xml))
        reading.samples.append(Sample(clip, image, audio, "flickr", boxes, clip))
    return reading
