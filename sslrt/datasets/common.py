"""What every test-set reader returns, and the one-walk file index they look files up in."""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sslrt.measure import metrics
from sslrt.errors import SslrtError
from sslrt.errors import first_line as error_line  # noqa: F401  (used by the readers)

# Only these file kinds are indexed: a VGG-SS frame folder can hold ~100 frames per clip.
_INDEXED_SUFFIXES = {".jpg", ".jpeg", ".png", ".wav", ".flac", ".xml", ".json", ".csv", ".txt"}


@dataclass(frozen=True)
class Sample:
    """One annotated image-sound pair of a test set.

    boxes are the annotation's own numbers (VGG-SS: fractions; Flickr: one box per annotator in
    256-pixel units; IS3: one box in 224 pixels); `gt` paints them with the dataset's official
    rule on demand, so that a list of thousands of samples does not hold thousands of maps.
    group names the image a sample belongs to (IS3: two sounding objects share an image; the
    other sets: the sample's own key).
    """

    key: str
    image_path: Path
    audio_path: Path
    dataset: str
    boxes: tuple
    group: str

    @property
    def gt(self) -> np.ndarray:
        """(224, 224) ground truth: uint8 {0, 1} for VGG-SS and IS3, float32 {0, .5, 1} for Flickr."""
        if self.dataset == "vggss":
            return metrics.gt_map_vggss(self.boxes)
        if self.dataset == "flickr":
            return metrics.gt_map_flickr(self.boxes)
        if self.dataset == "is3":
            return metrics.gt_map_is3(self.boxes[0])
        raise SslrtError(f"unknown dataset {self.dataset!r} for sample {self.key}")


@dataclass
class DatasetReading:
    """The samples of a test set that were found, and the keys whose files were not.

    missing_files tells, for each missing key, which of its files were absent.
    """

    dataset: str
    samples: list[Sample]
    missing: list[str] = field(default_factory=list)
    missing_files: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def upsample_rule(self) -> str:
        """How the paper's official evaluation upsampled heatmaps on this test set (each family's
        own rule is in its spec: `spec.eval_upsample[dataset]`)."""
        from sslrt.spec import DEFAULT_FAMILY, get_spec

        return get_spec(DEFAULT_FAMILY).eval_upsample[self.dataset]

    def note_missing(self, key: str, what: list[str]) -> None:
        self.missing.append(key)
        self.missing_files[key] = tuple(what)


def ground_truth_batch(samples: list[Sample]) -> np.ndarray:
    """(N, 224, 224) ground truth of a batch of samples (float32 if any map is fractional)."""
    maps = [s.gt for s in samples]
    dtype = np.float32 if any(m.dtype != np.uint8 for m in maps) else np.uint8
    return np.stack(maps).astype(dtype, copy=False)


class FileIndex:
    """Every media and annotation file under a root, by base name, from a single os.walk.

    Readers look each sample's files up here instead of searching the tree per sample.
    When one name exists in several places the shallowest, then alphabetically first, path wins.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SslrtError(f"dataset folder not found: {self.root}")
        by_name: dict[str, list[str]] = defaultdict(list)
        dirs: dict[str, list[str]] = defaultdict(list)
        seen_links: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            # Linked folders are followed (datasets are often assembled from links), but a link
            # back to a folder above it, or a second link to the same folder, is not.
            keep = []
            for d in sorted(dirnames):
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    target = os.path.realpath(full)
                    here = os.path.realpath(dirpath)
                    if target in seen_links or here == target or here.startswith(target + os.sep):
                        continue
                    seen_links.add(target)
                keep.append(d)
            dirnames[:] = keep
            for d in dirnames:
                dirs[d].append(os.path.join(dirpath, d))
            for name in filenames:
                if os.path.splitext(name)[1].lower() in _INDEXED_SUFFIXES:
                    by_name[name].append(os.path.join(dirpath, name))
        self._files = {k: sorted(v, key=_path_order) for k, v in by_name.items()}
        self._dirs = {k: sorted(v, key=_path_order) for k, v in dirs.items()}

    def file(self, name: str) -> Path | None:
        paths = self._files.get(name)
        return Path(paths[0]) if paths else None

    def files(self, name: str) -> list[Path]:
        return [Path(p) for p in self._files.get(name, [])]

    def dir(self, name: str) -> Path | None:
        paths = self._dirs.get(name)
        return Path(paths[0]) if paths else None

    def first_file(self, names: list[str]) -> Path | None:
        for name in names:
            found = self.file(name)
            if found is not None:
                return found
        return None


def _path_order(path: str) -> tuple[int, str]:
    return path.count(os.sep), path


def base_name(path: str) -> str:
    """Last component of a path written on any system ('/mnt/a/b.jpg' or 'C:\\a\\b.jpg')."""
    return re.split(r"[\\/]", str(path))[-1]


def find_annotation(index: FileIndex, given: str | os.PathLike | None, names: tuple[str, ...], what: str) -> Path:
    """The annotation file: the one given, else the first of `names` found under the root."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise SslrtError(f"{what} annotation file not found: {path}")
        return path
    found = index.first_file(list(names))
    if found is None:
        raise SslrtError(f"{what} annotation file not found: no {' or '.join(names)} under {index.root}; pass its path")
    return found


def load_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SslrtError(f"{path}: not a readable JSON annotation file ({error_line(exc)})") from None


