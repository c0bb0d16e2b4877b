"""The architecture parameters of one checkpoint (its width, blocks and strides), as the network
and the manifest record them. Everything else the engine knows of a model family is its spec
(sslrt/spec); the tensor names of the graphs are in sslrt/graphs.py."""
from __future__ import annotations

from dataclasses import asdict, dataclass

# The side of the model's square input; the map side is this over the towers' total stride.
_INPUT_SIZE = 224


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
        return _INPUT_SIZE // stride

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        d["strides"] = list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(width=int(d["width"]), blocks=tuple(d["blocks"]), strides=tuple(d["strides"]))
