"""The paper's inference network: two ResNet-18 towers and a cosine map between them.

Written from PAPER_FACTS.md (no torchvision): BasicBlock [2, 2, 2, 2], layer4 with stride 1, the
vision tower on `conv1` (3 -> w), the audio tower on `conv1_a` (1 -> w). Parameter names match the
released checkpoints so their state dicts load without renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslrt.config import ModelConfig


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetTower(nn.Module):
    """ResNet-18 trunk without pooling/fc. `in_channels` picks the stem: 3 -> `conv1`, 1 -> `conv1_a`."""

    def __init__(self, cfg: ModelConfig, in_channels: int):
        super().__init__()
        w = cfg.width
        self.stem_name = "conv1" if in_channels == 3 else "conv1_a"
        setattr(self, self.stem_name, nn.Conv2d(in_channels, w, 7, 2, 3, bias=False))
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [w, 2 * w, 4 * w, 8 * w]
        in_ch = w
        for i, (n, stride, out_ch) in enumerate(zip(cfg.blocks, cfg.strides, widths), start=1):
            blocks = [BasicBlock(in_ch, out_ch, stride)] + [BasicBlock(out_ch, out_ch, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            in_ch = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(getattr(self, self.stem_name)(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SoundLocalizer(nn.Module):
    """image (B,3,224,224), spectrogram (B,1,257,299) -> heatmap (B,1,14,14), cosine in [-1, 1]."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.imgnet = ResNetTower(cfg, 3)
        self.audnet = ResNetTower(cfg, 1)

    # The towers (what reduced-precision engines run in fp16) and the heads after them (kept fp32).
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.imgnet(image)

    def audio_features(self, audio: torch.Tensor) -> torch.Tensor:
        return self.audnet(audio)

    @staticmethod
    def image_head(features: torch.Tensor) -> torch.Tensor:
        return F.normalize(features, dim=1)

    @staticmethod
    def audio_head(features: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.adaptive_max_pool2d(features, 1).flatten(1), dim=1)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.image_features(image))

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.audio_head(self.audio_features(audio))

    @staticmethod
    def cosine_map(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """A[b,0,h,w] = sum_c v[b,c,h,w] * a[b,c]; a batched MatMul, which every backend fuses well."""
        b, c, h, w = v.shape
        return torch.bmm(a.unsqueeze(1), v.reshape(b, c, h * w)).reshape(b, 1, h, w)

    def head(self, image_features: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        """Tower outputs -> heatmap: the L2 norms and the cosine map (what reduced-precision
        engines keep in fp32; see sslrt/export/onnx.py FP16_TOWERS)."""
        return self.cosine_map(self.image_head(image_features), self.audio_head(audio_features))

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        # The same computation as head(imgnet(image), audnet(audio)), traced in this order so the
        # exported graph stays the one whose parity with the paper's code was established.
        return self.cosine_map(self.encode_image(image), self.encode_audio(audio))


class VisionEncoder(nn.Module):
    """image -> image_embedding: the vision half of a SoundLocalizer, as its own exportable graph."""

    def __init__(self, model: SoundLocalizer):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class AudioEncoder(nn.Module):
    """audio -> audio_embedding: the audio half of a SoundLocalizer."""

    def __init__(self, model: SoundLocalizer):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model.encode_audio(audio)


def graph_module(model: SoundLocalizer, graph: str) -> nn.Module:
    """The module computing one of config.GRAPHS, in eval mode.

    A wrapper must be in eval mode itself: torch.onnx.export restores the wrapper's training flag
    after exporting, recursively, which would switch the shared model to batch statistics.
    """
    return {"fused": model, "vision": VisionEncoder(model), "audio": AudioEncoder(model)}[graph].eval()


def create_model(cfg: ModelConfig = ModelConfig(), state_dict: dict | None = None) -> SoundLocalizer:
    """Build the network in eval mode; load `state_dict` (already normalised by checkpoint.py)."""
    model = SoundLocalizer(cfg)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()
