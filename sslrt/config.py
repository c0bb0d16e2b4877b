"""The contract of the paper's model (../shared/PAPER_FACTS.md), as constants and one config object.

Every number that the official code hard-codes lives here, once.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# Image transform of the released evaluation: ToTensor -> Resize((224,224), bicubic, no antialias)
# -> Normalize.
IMAGE_SIZE = 224
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# Audio transform: 10 s clip, keep [3.5 s, 6.5 s) at 16 kHz, scipy spectrogram, log, / 12.
SAMPLE_RATE = 16000
CLIP_SECONDS = 10
CROP_START = int(16000 * 3.5)
CROP_STOP = int(16000 * 6.5)
NPERSEG = 512
NOVERLAP = 353
LOG_EPS = 1e-7
LOG_SCALE = 12.0
SPEC_SHAPE = (257, 299)

# Global audio-visual similarity of the training objective: sim = sum(P*A)/sum(P),
# P = sigmoid((A - EPSILON) / TAU). sslrt reports it as the pair's score.
TAU = 0.03
EPSILON = 0.65
EPSILON2 = 0.4

# Names of the engine's tensors, shared by the exporter, every engine and the runtime.
INPUT_IMAGE = "image"
INPUT_AUDIO = "audio"
OUTPUT_HEATMAP = "heatmap"
# The encoder graphs, exported beside the fused one so a workload that repeats an image (several
# sounds on one picture) or a sound runs each encoder once per distinct input.
OUTPUT_IMAGE_EMBEDDING = "image_embedding"  # (B, C, 14, 14), L2-normalised over C
OUTPUT_AUDIO_EMBEDDING = "audio_embedding"  # (B, C), L2-normalised
GRAPHS = ("fused", "vision", "audio")


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of one checkpoint: two ResNet-18 towers of a given base width.

    width 64 is the released model (512-d embeddings); smaller widths are the same network
    narrowed, used for tests and the shipped demo.
    """

    width: int = 64
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    # layer4 keeps stride 1 so a 224x224 image gives a 14x14 map.
    strides: tuple[int, int, int, int] = (1, 2, 2, 1)

    @property
    def embed_dim(self) -> int:
        return self.width * 8

    @property
    def heatmap_size(self) -> int:
        # stem 2 x maxpool 2 x the layers' strides: 16 for (1, 2, 2, 1) -> 14, 32 for the
        # torchvision towers' (1, 2, 2, 2) -> 7
        stride = 4
        for s in self.strides:
            stride *= s
        return IMAGE_SIZE // stride

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        d["strides"] = list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(width=int(d["width"]), blocks=tuple(d["blocks"]), strides=tuple(d["strides"]))
