"""`sslrt demo`: the whole pipeline on the shipped demo model and a generated input, offline.

The demo model lives in sslrt/assets/demo (see sslrt.resolve): a checkpoint in the released
format and its ONNX export, so the demo needs no torch. Rebuild the export after replacing the
checkpoint with `python -m sslrt.export.demo CHECKPOINT`.
"""
from __future__ import annotations

import json
import os
import time

from sslrt.errors import SslrtError
from sslrt.resolve import ASSETS, DEMO_EXPORT, demo_model_dir

MAX_SEED = 2**32 - 1  # numpy's seeds


def demo_model_info() -> dict:
    info = ASSETS / "model_info.json"
    return json.loads(info.read_text()) if info.is_file() else {"description": "sslrt demo model"}


DEMO_IMAGE_SIZE = 448


def demo_input(seed: int):
    """(rgb, waveform, true box in image pixels, description): a generated scene with two objects,
    one of which makes the sound."""
    from sslrt.synthetic.scenes import generate_samples

    samples = generate_samples(1, seed, sizes=(DEMO_IMAGE_SIZE,))
    sample = samples[seed % len(samples)]
    scale = DEMO_IMAGE_SIZE / 224  # scene boxes are in 224-pixel units of the resized image
    box = [int(round(v * scale)) for v in sample.box]
    others = [c for c in sample.classes if c != sample.sounding]
    description = (f"generated scene (seed {seed}): a {sample.sounding} that makes the sound"
                   + (f" and a silent {', '.join(others)}" if others else ""))
    return sample.image, sample.waveform, box, description


def run_demo(out: str | os.PathLike, seed: int = 7, backend: str = "onnxruntime") -> dict:
    from sslrt.runtime.overlay import check_picture_path, render_overlay, save_png
    from sslrt.runtime.pipeline import Localizer

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SslrtError(f"--seed must be between 0 and {MAX_SEED}, got {seed!r}")
    check_picture_path(out, "demo overlay (--out)")
    t0 = time.perf_counter()
    rgb, wave, true_box, description = demo_input(seed)
    localizer = Localizer.open(demo_model_dir(), backend=backend)
    result = localizer.localize(rgb, wave)
    picture = render_overlay(rgb, result.heatmap, result.bbox, result.peak, sounding=result.sounding)
    import cv2

    x0, y0, x1, y1 = (int(v) for v in true_box)
    cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), 2)
    save_png(out, picture)
    info = demo_model_info()
    x0, y0, x1, y1 = result.bbox
    lines = [
        f"model: {info['description']} ({DEMO_EXPORT})",
        f"input: {description}, image {rgb.shape[1]}x{rgb.shape[0]}",
        f"sound source: peak at ({result.peak[0]:.0f}, {result.peak[1]:.0f}) px, box [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}], "
        f"score {result.score:.3f}",
    ]
    lines.append(f"true box of the sounding object: {[int(v) for v in true_box]} (green in the overlay); "
                 f"peak inside it: {'yes' if _inside(result.peak, true_box) else 'no'}")
    t = result.timings_ms
    lines += [
        f"engine: {localizer.describe()}; preprocess {t['preprocess']:.1f} ms, inference {t['inference']:.1f} ms, "
        f"postprocess {t['postprocess']:.1f} ms; total {time.perf_counter() - t0:.2f} s with loading",
        f"overlay: {out}",
    ]
    return {"lines": lines, "model": info, "input": description, "true_box": true_box,
            "peak_in_true_box": _inside(result.peak, true_box),
            "overlay": str(out), "result": result.to_dict()}


def _inside(point, box) -> bool:
    return bool(box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3])


def run_video_demo(out: str | os.PathLike, seed: int = 7, backend: str = "onnxruntime", seconds: float = 4.0,
                   fps: float = 25, size: int = 320) -> dict:
    """A moving scene: a generated clip (the sounding object sweeps the picture, a silent one
    stays put), `sslrt video` on it with the demo model, the overlay video written to `out`."""
    import tempfile

    from sslrt.runtime.pipeline import Localizer
    from sslrt.synthetic.clips import moving_clip, write_moving_clip
    from sslrt.video import VideoOptions, localize_video

    t0 = time.perf_counter()
    clip = moving_clip(seed, seconds=seconds, fps=fps, size=(size, size))
    out = os.fspath(out)
    track = os.path.splitext(out)[0] + ".jsonl"
    with tempfile.TemporaryDirectory(prefix="sslrt_demo_") as tmp:
        source = os.path.join(tmp, "moving_scene.mp4")
        write_moving_clip(source, clip)
        localizer = Localizer.open(demo_model_dir(), backend=backend)
        result = localize_video(localizer, source, out, track, options=VideoOptions(fps=4))
    hits = total = 0
    with open(track) as f:
        for line in f:
            rec = json.loads(line)
            hits += _inside(rec["peak"], clip.box_at(rec["t"]))
            total += 1
    info = demo_model_info()
    lines = [
        f"model: {info['description']} ({DEMO_EXPORT})",
        f"input: generated clip (seed {seed}), {size}x{size}, {seconds:g} s at {fps:g} fps: a moving {clip.sounding} "
        f"that makes the sound and a silent {clip.silent}",
        f"tracking: the peak is inside the sounding object's true box at {hits} of {total} sampled times "
        f"({hits / max(total, 1):.0%})",
        f"engine: {localizer.describe()}; {result.frames} frames in {result.wall_seconds:.2f} s "
        f"(real-time factor {result.rtf:.2f}); total {time.perf_counter() - t0:.2f} s with generating and loading",
        f"overlay video: {out} ({result.codec}); track: {track}",
    ]
    return {"lines": lines, "model": info, "input": lines[1], "tracking": hits / max(total, 1), "samples": total,
            "overlay": out, "track": track, "video": result.to_dict()}
