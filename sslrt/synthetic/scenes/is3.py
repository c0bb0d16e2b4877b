"""Generated scenes as an IS3-layout set, through sslrt.synthetic.datasets' writer and
sslrt.datasets' reader (the same files `sslrt eval --dataset is3` reads)."""
from __future__ import annotations

import os

from sslrt.datasets import read_is3
from sslrt.synthetic.datasets import IS3Sample, write_is3
from sslrt.synthetic.scenes.generator import SceneSample


def write_scene_set(samples: list[SceneSample], out_dir: str | os.PathLike) -> str:
    """Write the samples' images, 16 kHz wavs and annotation JSON; return the JSON path."""
    return str(write_is3(out_dir, [IS3Sample(s.name, s.image, s.waveform, s.box) for s in samples]))


def read_scene_set(json_path: str | os.PathLike) -> list[dict]:
    """Entries of an IS3-layout JSON with absolute `image`/`audio` paths, `gt_box` and `name`."""
    reading = read_is3(os.path.dirname(os.path.abspath(json_path)), json_path)
    return [{"image": str(s.image_path), "audio": str(s.audio_path), "gt_box": [int(v) for v in s.boxes[0]], "name": s.key}
            for s in reading.samples]
