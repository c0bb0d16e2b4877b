"""The PyTorch reference networks: two ResNet-18 towers and a cosine map between them.

Written from PAPER_FACTS.md / PEER_FACTS.md (no torchvision). Two graphs cover the six families:

- `SoundLocalizer` ("lvs_resnet18": ours, lvs, ssltie): BasicBlock [2, 2, 2, 2], layer4 with
  stride 1 (14x14 map), the vision tower on `conv1` (3 -> w), the audio tower on `conv1_a`
  (1 -> w); heatmap = cosine of the L2-normalised maps.
- `ProjectedLocalizer` ("torchvision_resnet18_proj": ezvsl, fnac with 1 head, slavc with 2):
  torchvision's resnet18 layout (layer4 stride 2, 7x7 map; the audio tower's `conv1` takes 1
  channel and ends in a global max-pool), a 1x1-conv image projection and a linear audio
  projection per head (with bias); heatmap = the heads' mean cosine / tau.

Parameter names match the released checkpoints so their state dicts load without renaming.
Every network has the same interface: `encode_image` -> (B, C, h, w) unit vectors over C,
`encode_audio` -> (B, C) unit vectors, `forward` = cosine_map(encode_image, encode_audio) *
heatmap_scale, and `head` / `image_head` / `audio_head` (tower outputs -> heatmap / embeddings,
the part reduced-precision engines keep in fp32).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sslrt.config import ModelConfig
from sslrt.errors import SslrtError


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
    """ResNet-18 trunk without pooling/fc. `in_channels` picks the lvs-style stem: 3 -> `conv1`,
    1 -> `conv1_a`; `stem` names it explicitly (torchvision's audio tower: 1 channel on `conv1`)."""

    def __init__(self, cfg: ModelConfig, in_channels: int, stem: str | None = None):
        super().__init__()
        w = cfg.width
        self.stem_name = stem or ("conv1" if in_channels == 3 else "conv1_a")
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

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.image_features(image))

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.audio_head(self.audio_features(audio))

    @staticmethod
    def cosine_map(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """A[b,0,h,w] = sum_c v[b,c,h,w] * a[b,c]; a batched MatMul, which every backend fuses well."""
        b, c, h, w = v.shape
        return torch.bmm(a.unsqueeze(1), v.reshape(b, c, h * w)).reshape(b, 1, h, w)

    heatmap_scale = 1.0  # the heatmap is the cosine itself

    def image_head(self, image_features: torch.Tensor) -> torch.Tensor:
        """Vision tower output -> image embedding."""
        return F.normalize(image_features, dim=1)

    def audio_head(self, audio_features: torch.Tensor) -> torch.Tensor:
        """Audio tower output -> audio embedding."""
        return F.normalize(F.adaptive_max_pool2d(audio_features, 1).flatten(1), dim=1)

    def head(self, image_features: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        """Tower outputs -> heatmap: the L2 norms and the cosine map (what reduced-precision
        engines keep in fp32; see sslrt/export/onnx.py FP16_TOWERS)."""
        return self.cosine_map(self.image_head(image_features), self.audio_head(audio_features))

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        # The same computation as head(imgnet(image), audnet(audio)), traced in this order so the
        # exported graph stays the one whose parity with the paper's code was established.
        return self.cosine_map(self.encode_image(image), self.encode_audio(audio))


TORCHVISION_STRIDES = (1, 2, 2, 2)  # torchvision resnet18: layer4 stride 2, 224 -> 7x7


class ProjectedLocalizer(nn.Module):
    """EZ-VSL / FNAC (heads=1) and SLAVC (heads=2) at inference (PEER_FACTS §6-8, SA:model.py).

    image (B,3,224,224), spectrogram (B,1,257,200) -> heatmap (B,1,7,7) = mean over heads k of
    cos(img_proj_k(imgnet(image)), aud_proj_k(maxpool(audnet(spec)))) / tau, tau = 0.03: EZ-VSL's
    and FNAC's `Savl`, SLAVC's `(Savl1 + Savl2) / 2`. Dropouts (p=0 at test) and SLAVC's momentum
    encoders (training-only) are not part of it.

    The embeddings, for the split (encoder-graph) path: each head's unit vectors, concatenated over
    the channels and scaled by 1/sqrt(heads). They stay unit vectors, and their dot product is
    sum_k (v_k . a_k) / heads, the heads' mean cosine, so cosine_map(encode_image, encode_audio) *
    heatmap_scale is the fused heatmap (for one head, exactly EZ-VSL's v.a / tau).
    """

    def __init__(self, cfg: ModelConfig = ModelConfig(strides=TORCHVISION_STRIDES), heads: int = 1,
                 heatmap_scale: float = 1.0 / 0.03):
        super().__init__()
        if heads < 1:
            raise SslrtError(f"a projected localizer needs at least one head, got {heads}")
        self.cfg = cfg
        self.heads = heads
        self.heatmap_scale = heatmap_scale
        self.tau = 1.0 / heatmap_scale  # the official code divides by tau (SA:model.py:55)
        self.imgnet = ResNetTower(cfg, 3, stem="conv1")
        self.audnet = ResNetTower(cfg, 1, stem="conv1")
        dim = cfg.embed_dim
        # Released names: img_proj / aud_proj for one head, img_proj1, img_proj2, ... for several.
        self.head_names = [""] if heads == 1 else [str(k) for k in range(1, heads + 1)]
        for k in self.head_names:
            setattr(self, f"img_proj{k}", nn.Conv2d(dim, dim, kernel_size=1))
            setattr(self, f"aud_proj{k}", nn.Linear(dim, dim))

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        if self.heads == 1:
            return parts[0]
        return torch.cat(parts, dim=1) * (1.0 / math.sqrt(self.heads))

    def image_head(self, image_features: torch.Tensor) -> torch.Tensor:
        return self._join([F.normalize(getattr(self, f"img_proj{k}")(image_features), dim=1) for k in self.head_names])

    def audio_head(self, audio_features: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_max_pool2d(audio_features, 1).flatten(1)  # torchvision audnet's avgpool = AdaptiveMaxPool2d
        return self._join([F.normalize(getattr(self, f"aud_proj{k}")(pooled), dim=1) for k in self.head_names])

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.imgnet(image))

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        return self.audio_head(self.audnet(audio))

    cosine_map = staticmethod(SoundLocalizer.cosine_map)

    def head(self, image_features: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        return self.cosine_map(self.image_head(image_features), self.audio_head(audio_features)) / self.tau

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.cosine_map(self.encode_image(image), self.encode_audio(audio)) / self.tau


class VisionEncoder(nn.Module):
    """image -> image_embedding: the vision half of a network, as its own exportable graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class AudioEncoder(nn.Module):
    """audio -> audio_embedding: the audio half of a network."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model.encode_audio(audio)


def graph_module(model: nn.Module, graph: str) -> nn.Module:
    """The module computing one of sslrt.graphs.GRAPHS, in eval mode, for any family's network: the
    fused heatmap equals cosine_map(vision output, audio output) * model.heatmap_scale
    (sslrt.graphs.cosine_map).

    A wrapper must be in eval mode itself: torch.onnx.export restores the wrapper's training flag
    after exporting, recursively, which would switch the shared model to batch statistics.
    """
    return {"fused": model, "vision": VisionEncoder(model), "audio": AudioEncoder(model)}[graph].eval()


ARCHITECTURES = ("lvs_resnet18", "torchvision_resnet18_proj")


def config_for(spec, width: int = 64) -> ModelConfig:
    """The ModelConfig of a family's network at `width` (64 = the released models)."""
    if spec.architecture == "torchvision_resnet18_proj":
        return ModelConfig(width=width, strides=TORCHVISION_STRIDES)
    if spec.architecture == "lvs_resnet18":
        return ModelConfig(width=width)
    raise SslrtError(f"model family {spec.name!r} needs network {spec.architecture!r}, which sslrt does not have "
                     f"(known: {', '.join(ARCHITECTURES)})")


def build_network(spec, cfg: ModelConfig | None = None) -> nn.Module:
    """The untrained reference network of a family (`spec.architecture`), in eval mode; `cfg`
    None = full width. Its heatmap is in the family's units (cosine * spec.heatmap_scale)."""
    cfg = config_for(spec) if cfg is None else cfg
    config_for(spec)  # refuses an unknown architecture
    if spec.architecture == "lvs_resnet18":
        if spec.heatmap_scale != 1.0:
            raise SslrtError(f"{spec.name}: the lvs-style network has no temperature (heatmap_scale must be 1)")
        return SoundLocalizer(cfg).eval()
    return ProjectedLocalizer(cfg, heads=spec.heads, heatmap_scale=spec.heatmap_scale).eval()


def create_model(cfg: ModelConfig = ModelConfig(), state_dict: dict | None = None, spec=None) -> nn.Module:
    """Build the network in eval mode (`spec` None: the paper's); load `state_dict` (already
    normalised by checkpoint.py)."""
    model = SoundLocalizer(cfg) if spec is None else build_network(spec, cfg)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()
