"""Readers of the official test-set layouts (VGG-SS, Flickr-SoundNet, IS3). Writers of small
datasets in the same layouts live in sslrt.synthetic.datasets."""
from __future__ import annotations

import os

from sslrt.datasets.common import DatasetReading, FileIndex, Sample, ground_truth_batch
from sslrt.datasets.flickr import parse_flickr_boxes, read_flickr
from sslrt.datasets.is3 import read_is3
from sslrt.datasets.vggss import read_vggss, vggsound_clip_folder
from sslrt.errors import SslrtError

DATASETS = ("vggss", "flickr", "is3")


def read_dataset(name: str, root: str | os.PathLike, annotation: str | os.PathLike | None = None) -> DatasetReading:
    """Read test set `name` under root; annotation is its annotation file (VGG-SS vggss.json,
    Flickr flickr_test.csv, IS3 is3_synthetic3240_bbox.json), found under root when None."""
    if name == "vggss":
        return read_vggss(root, annotation)
    if name == "flickr":
        return read_flickr(root, annotation)
    if name == "is3":
        return read_is3(root, annotation)
    raise SslrtError(f"unknown test set {name!r}; expected one of {', '.join(DATASETS)}")


__all__ = [
    "DATASETS", "DatasetReading", "FileIndex", "Sample", "ground_truth_batch",
    "read_dataset", "read_vggss", "read_flickr", "read_is3", "parse_flickr_boxes", "vggsound_clip_folder",
]
