"""Training and held-out data: generated scenes turned into model inputs once, then augmented
per batch on tensors (so an epoch costs network time, not preprocessing time).

Inputs come from the official transforms (sslrt.preprocess): images through a JPEG round trip
(what an IS3-layout file holds) and `image_to_tensor`; audio through `spectrogram_from_waveform`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from sslrt.preprocess import audio_to_spectrogram, image_to_tensor, load_image, spectrogram_from_waveform
from sslrt.spec import get_spec

LOG_SCALE = get_spec("ours").audio.log_scale  # augmentations act on the log spectrogram's scale
from sslrt.synthetic.scenes import generate_samples, read_scene_set, write_scene_set


@dataclass
class TensorSet:
    images: torch.Tensor  # (N, 3, 224, 224) float16 (halves memory; batches are cast to float32)
    specs: torch.Tensor  # (N, 1, 257, 299) float16
    boxes: list  # per sample [x0, y0, x1, y1] in 224 px
    names: list  # IS3-style sample names

    def __len__(self) -> int:
        return self.images.shape[0]


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]


def build_training_set(n_images: int, seed: int, sizes=(224, 320), progress=None) -> TensorSet:
    """One sample per picture (no picture twice in a batch: its other object would be a false
    negative of the contrastive loss), layouts mixed, 6.5 s clips (the transform tiles them and
    reads [3.5 s, 6.5 s), the same samples a 10 s clip would give)."""
    images, specs, boxes, names = [], [], [], []
    chunk = 50
    for start in range(0, n_images, chunk):
        batch = generate_samples(min(chunk, n_images - start), seed, layout="mixed", sizes=sizes,
                                 all_sounding=False, seconds=6.5, start=start)
        for s in batch:
            quality = 75 + (s.scene_id * 7919) % 21  # 75..95, fixed per picture
            images.append(torch.from_numpy(image_to_tensor(jpeg_round_trip(s.image, quality))).half())
            specs.append(torch.from_numpy(spectrogram_from_waveform(s.waveform, s.sample_rate)).half())
            boxes.append(list(s.box))
            names.append(s.name)
        if progress is not None:
            progress(len(names))
    return TensorSet(torch.stack(images), torch.stack(specs), boxes, names)


def write_heldout_set(out_dir: str, n_images: int, seed: int, sizes=(224, 320, 448)) -> str:
    """The held-out IS3-layout set: two objects per picture, both sounding in turn."""
    samples = generate_samples(n_images, seed, layout="is3", sizes=sizes, all_sounding=True)
    return write_scene_set(samples, out_dir)


def load_is3_set(json_path: str) -> TensorSet:
    """Read an IS3-layout set from its files, through the official transforms."""
    entries = read_scene_set(json_path)
    images = [torch.from_numpy(image_to_tensor(load_image(e["image"]))).half() for e in entries]
    specs = [torch.from_numpy(audio_to_spectrogram(e["audio"])).half() for e in entries]
    return TensorSet(torch.stack(images), torch.stack(specs), [e["gt_box"] for e in entries],
                     [e["name"] for e in entries])


# ---------------------------------------------------------------------------------------------
# Augmented views (batched, torch): each view of a sample is another positive of the loss.


def augment_images(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, random crop (60-100% of the side, any position) resized back to
    224, and a mild brightness/contrast change (colour is the classes' main cue, hue is kept)."""
    b = images.shape[0]
    scale = 0.6 + 0.4 * torch.rand(b, generator=gen)
    cx = (1 - scale) * (2 * torch.rand(b, generator=gen) - 1)
    cy = (1 - scale) * (2 * torch.rand(b, generator=gen) - 1)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = scale
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    gain = 1 + 0.15 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    shift = 0.15 * (2 * torch.rand(b, 1, 1, 1, generator=gen) - 1)
    return out * gain + shift


def augment_specs(specs: torch.Tensor, gen: torch.Generator, frames: int | None = None) -> torch.Tensor:
    """Gain (+-10 dB, an offset of the log spectrogram), added white noise (in the power domain),
    and a random circular time crop of `frames` frames (all of them if None). The generated sounds
    are stationary or periodic and the audio tower max-pools over time, so a crop is another view
    of the same sound, at a fraction of the training cost."""
    b, _, _, t = specs.shape
    frames = t if frames is None else min(int(frames), t)
    shifts = torch.randint(0, t, (b,), generator=gen)
    idx = (torch.arange(frames)[None, :] + shifts[:, None]) % t
    out = torch.gather(specs, 3, idx[:, None, None, :].expand(b, 1, specs.shape[2], frames))
    gain_db = 20 * torch.rand(b, 1, 1, 1, generator=gen) - 10
    out = out + (gain_db / 10 * math.log(10)) / LOG_SCALE
    noise_level = torch.exp(torch.empty(b, 1, 1, 1).uniform_(math.log(1e-9), math.log(1e-5), generator=gen))
    power = torch.exp(out * LOG_SCALE) + noise_level * torch.rand(out.shape, generator=gen)
    return torch.log(power) / LOG_SCALE
