"""Train the paper's network on generated scenes, with held-out IS3 evaluation and resumption.

`train(TrainConfig(...))` or `python -m sslrt.train --help`. The run folder holds the held-out
IS3-layout set (`heldout/`), `last.pth.tar` (written after every epoch: the released layout plus
an `sslrt_train` entry with the step, config and history, so a rerun resumes from it) and
`history.json`. `export` writes the final weights in the released layout, without optimizer
state, with the released training-only extras as untrained placeholders.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from sslrt.config import ModelConfig
from sslrt.errors import SslrtError
from sslrt.synthetic.datasets import IS3_ANNOTATION
from sslrt.model.checkpoint import save_checkpoint
from sslrt.model.network import SoundLocalizer
from sslrt.progress import progress_bar
from sslrt.train.data import (
    TensorSet,
    augment_images,
    augment_specs,
    build_training_set,
    load_is3_set,
    write_heldout_set,
)
from sslrt.train.loss import alignment_loss
from sslrt.train.metrics import ciou_is3, summarize

LAST = "last.pth.tar"


@dataclass
class TrainConfig:
    out_dir: str = "runs/demo"
    width: int = 8
    epochs: int = 7
    batch_size: int = 32
    views: int = 2  # augmented views per sample, positives of each other
    audio_frames: int = 128  # training crop of the 299 spectrogram frames (evaluation uses all)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    train_images: int = 2400
    heldout_images: int = 150  # two samples each
    seed: int = 0
    heldout_seed: int = 1_000_003  # a different run of the generator: no picture is shared
    threads: int = 2
    hard_negatives: bool = True
    export: str | None = None
    resume: bool = True
    progress: bool = True


    def check(self) -> "TrainConfig":
        """One-line errors for settings that cannot train (before any file is written)."""
        from sslrt.engines.base import max_threads

        def whole(name: str, low: int, high: int | None = None) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high is not None else f">= {low}"
                raise SslrtError(f"--{name.replace('_', '-')} must be {bound}, got {value!r}")

        whole("width", 1, 256)
        whole("epochs", 1)
        whole("batch_size", 1, 4096)
        whole("views", 1, 16)
        whole("audio_frames", 1, 299)
        whole("train_images", max(1, self.batch_size) if isinstance(self.batch_size, int) else 1)
        whole("heldout_images", 1)
        whole("seed", 0, 2**32 - 1)
        whole("heldout_seed", 0, 2**32 - 1)
        whole("threads", 1, max_threads())
        for name in ("lr", "weight_decay", "warmup_fraction"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
                    or (name == "lr" and value == 0) or (name == "warmup_fraction" and value > 1):
                raise SslrtError(f"--{name.replace('_', '-')} is out of range: {value!r}")
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise SslrtError(f"--out-dir must be a folder, and {self.out_dir} is a file")
        if self.export and os.path.isdir(self.export):
            raise SslrtError(f"--export must name a checkpoint file, and {self.export} is a folder")
        return self


def learning_rate(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero: a pure function of the step, so resuming needs no scheduler state."""
    warmup = max(1, int(total * cfg.warmup_fraction))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: SoundLocalizer, data: TensorSet, batch_size: int = 64) -> dict:
    """IS3 metrics of the model (eval mode) on a tensor set."""
    model.eval()
    heatmaps = []
    for i in range(0, len(data), batch_size):
        heatmaps.append(model(data.images[i:i + batch_size].float(), data.specs[i:i + batch_size].float()))
    heatmaps = torch.cat(heatmaps)[:, 0].numpy()
    cious = [ciou_is3(h, box) for h, box in zip(heatmaps, data.boxes)]
    return summarize(cious, data.names)


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training; returns {'history': [...], 'random': metrics, 'final': metrics}."""
    cfg.check()
    torch.set_num_threads(cfg.threads)
    os.makedirs(cfg.out_dir, exist_ok=True)
    t_start = time.time()
    log = print

    heldout_json = os.path.join(cfg.out_dir, "heldout", IS3_ANNOTATION)
    if not os.path.exists(heldout_json):
        write_heldout_set(os.path.dirname(heldout_json), cfg.heldout_images, cfg.heldout_seed)
    heldout = load_is3_set(heldout_json)

    with progress_bar(cfg.progress, fields=("info",), always=True) as bar:
        task = bar.add_task("scenes", total=cfg.train_images, info="")
        train_set = build_training_set(cfg.train_images, cfg.seed, progress=lambda n: bar.update(task, completed=n))
    log(f"data ready: {len(train_set)} training samples, {len(heldout)} held-out samples "
        f"({time.time() - t_start:.0f} s)")

    torch.manual_seed(cfg.seed)
    model = SoundLocalizer(ModelConfig(width=cfg.width))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_set) // cfg.batch_size
    total_steps = steps_per_epoch * cfg.epochs

    history, start_epoch, random_metrics = [], 0, None
    last_path = os.path.join(cfg.out_dir, LAST)
    if cfg.resume and os.path.exists(last_path):
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model_state_dict"])
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        start_epoch = int(ckpt["epoch"])
        history = list(ckpt["sslrt_train"]["history"])
        random_metrics = ckpt["sslrt_train"].get("random")
        log(f"resumed from {last_path} at epoch {start_epoch}")
    if random_metrics is None:
        random_metrics = evaluate(model, heldout)
        log(f"random weights (width {cfg.width}): " + _fmt(random_metrics))

    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(train_set), generator=gen)
        t_epoch, losses = time.time(), []
        with progress_bar(cfg.progress, fields=("info",), always=True) as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch, info="")
            for b in range(steps_per_epoch):
                step = epoch * steps_per_epoch + b
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total_steps, cfg)
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                images = train_set.images[idx].float()
                specs = train_set.specs[idx].float()
                image_views = torch.cat([augment_images(images, gen) for _ in range(cfg.views)])
                audio_views = torch.cat([augment_specs(specs, gen, cfg.audio_frames) for _ in range(cfg.views)])
                identity = torch.arange(len(idx)).repeat(cfg.views)
                loss, stats = alignment_loss(model.encode_image(image_views), model.encode_audio(audio_views),
                                             identity, hard_negatives=cfg.hard_negatives)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.update(task, advance=1, info=f"loss {np.mean(losses[-20:]):.3f} pos {stats['pos']:.2f} "
                                                 f"neg {stats['neg']:.2f} bg {stats['bg']:.2f}")
        metrics = evaluate(model, heldout)
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.time() - t_epoch, **metrics}
        history.append(record)
        log(f"epoch {epoch + 1}: loss {record['loss']:.3f}  held-out " + _fmt(metrics)
            + f"  ({record['seconds']:.0f} s)")
        save_checkpoint(last_path, model.state_dict(), epoch=epoch + 1, optimizer=optimizer.state_dict(),
                        sslrt_train={"config": asdict(cfg), "history": history, "random": random_metrics})
        with open(os.path.join(cfg.out_dir, "history.json"), "w") as f:
            json.dump({"random": random_metrics, "history": history}, f, indent=1)

    final = history[-1] if history else evaluate(model, heldout)
    if cfg.export:
        write_released_checkpoint(model, cfg.export, epoch=cfg.epochs)
        log(f"exported {cfg.export} ({os.path.getsize(cfg.export) / 1e6:.1f} MB)")
    log(f"total wall time {time.time() - t_start:.0f} s")
    return {"history": history, "random": random_metrics, "final": final}


def _fmt(m: dict) -> str:
    return f"cIoU@0.5 {m['cIoU']:.3f} AUC {m['AUC']:.3f} iIoU {m['iIoU']:.3f} iAUC {m['iAUC']:.3f}"


def released_extras(width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The released files' training-only tensors, scaled to `width`, as untrained placeholders
    (inference ignores them; they make the file's key set the released one)."""
    g = torch.Generator().manual_seed(seed)
    d = 8 * width

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.01

    extras = {}
    for tower in ("imgnet", "audnet"):
        unused_stem = "conv1_a" if tower == "imgnet" else "conv1"
        extras[f"{tower}.{unused_stem}.weight"] = rand(width, 1 if tower == "imgnet" else 3, 7, 7)
        extras[f"{tower}.conv1_flow.weight"] = rand(width, 6, 7, 7)
        extras[f"{tower}.fc.weight"] = rand(1000, d)
        extras[f"{tower}.fc.bias"] = torch.zeros(1000)
    extras.update({
        "img_proj.weight": rand(d, d), "img_proj.bias": torch.zeros(d),
        "aud_proj.weight": rand(d, d), "aud_proj.bias": torch.zeros(d),
        "vision_fc1.weight": rand(d, 2 * d, 1, 1), "vision_fc1.bias": torch.zeros(d),
        "conv3.weight": torch.ones(1, 1, 1, 1), "conv3.bias": torch.zeros(1),
        "norm3.weight": torch.ones(1), "norm3.bias": torch.zeros(1), "norm3.running_mean": torch.zeros(1),
        "norm3.running_var": torch.ones(1), "norm3.num_batches_tracked": torch.zeros((), dtype=torch.long),
    })
    return extras


def write_released_checkpoint(model: SoundLocalizer, path: str, epoch: int) -> None:
    """Released layout: {'epoch', 'model_state_dict' (towers + extras), 'optimizer_state_dict': {}}."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state.update(released_extras(model.cfg.width))
    save_checkpoint(path, state, epoch=epoch)
