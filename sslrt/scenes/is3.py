"""Write generated samples in the IS3 layout, and read an IS3-layout annotation back.

Layout (as the official IS3 release): one JPEG and one wav per sample, named after the sample
(`<cls1>_<cls2>_<id>_<soundingcls>`; the two samples of one picture share its pixels), and a JSON
list of `{"image", "audio", "gt_box"}` with gt_box [x0, y0, x1, y1] in 224 px of the resized
image. Paths in the JSON are relative to the JSON's folder.
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import soundfile as sf

from sslrt.scenes.generator import SceneSample

IMAGE_DIR = "images"
AUDIO_DIR = "audio_wav"
DEFAULT_JSON = "scenes_bbox.json"


def write_is3(samples: list[SceneSample], out_dir: str | os.PathLike, json_name: str = DEFAULT_JSON,
              jpeg_quality: int = 95) -> str:
    """Write images/<name>.jpg, audio_wav/<name>.wav (16 kHz PCM_16) and the JSON list; return the JSON path."""
    out_dir = os.fspath(out_dir)
    os.makedirs(os.path.join(out_dir, IMAGE_DIR), exist_ok=True)
    os.makedirs(os.path.join(out_dir, AUDIO_DIR), exist_ok=True)
    entries = []
    encoded: dict[int, bytes] = {}  # one encode per picture; its samples get identical files
    for s in samples:
        key = id(s.image)
        if key not in encoded:
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(s.image[:, :, ::-1]),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {s.name}")
            encoded[key] = buf.tobytes()
        image_rel = f"{IMAGE_DIR}/{s.name}.jpg"
        audio_rel = f"{AUDIO_DIR}/{s.name}.wav"
        with open(os.path.join(out_dir, image_rel), "wb") as f:
            f.write(encoded[key])
        sf.write(os.path.join(out_dir, audio_rel), s.waveform, s.sample_rate, subtype="PCM_16")
        entries.append({"image": image_rel, "audio": audio_rel, "gt_box": [float(v) for v in s.box]})
    json_path = os.path.join(out_dir, json_name)
    with open(json_path, "w") as f:
        json.dump(entries, f, indent=1)
    return json_path


def read_is3(json_path: str | os.PathLike) -> list[dict]:
    """Entries of an IS3-layout JSON with `image`/`audio` resolved against the JSON's folder
    (absolute paths, as in the official file, fall back to `<folder>/{images,audio_wav}/<basename>`)."""
    json_path = os.fspath(json_path)
    root = os.path.dirname(os.path.abspath(json_path))
    with open(json_path) as f:
        entries = json.load(f)
    out = []
    for e in entries:
        image = _resolve(root, e["image"], IMAGE_DIR)
        audio = _resolve(root, e["audio"], AUDIO_DIR)
        out.append({"image": image, "audio": audio, "gt_box": [int(v) for v in e["gt_box"]],
                    "name": os.path.splitext(os.path.basename(audio))[0]})
    return out


def _resolve(root: str, path: str, subdir: str) -> str:
    candidate = path if os.path.isabs(path) else os.path.join(root, path)
    if os.path.exists(candidate):
        return candidate
    return os.path.join(root, subdir, os.path.basename(path))
