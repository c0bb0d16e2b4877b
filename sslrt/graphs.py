"""The three graphs of an export and their tensors, shared by the exporter, every engine and the runtime."""
from __future__ import annotations

import numpy as np

from sslrt.config import (
    IMAGE_SIZE, INPUT_AUDIO, INPUT_IMAGE, OUTPUT_AUDIO_EMBEDDING, OUTPUT_HEATMAP, OUTPUT_IMAGE_EMBEDDING, SPEC_SHAPE,
)

# graph -> (input names, output names)
GRAPH_IO = {
    "fused": ((INPUT_IMAGE, INPUT_AUDIO), (OUTPUT_HEATMAP,)),
    "vision": ((INPUT_IMAGE,), (OUTPUT_IMAGE_EMBEDDING,)),
    "audio": ((INPUT_AUDIO,), (OUTPUT_AUDIO_EMBEDDING,)),
}

INPUT_SHAPES = {INPUT_IMAGE: (3, IMAGE_SIZE, IMAGE_SIZE), INPUT_AUDIO: (1, *SPEC_SHAPE)}


def artifact_key(fmt: str, precision: str, graph: str = "fused") -> str:
    """Manifest key of one exported file: onnx_fp32, onnx_int8_audio, ..."""
    return f"{fmt}_{precision}" if graph == "fused" else f"{fmt}_{precision}_{graph}"


def cosine_map(image_embedding: np.ndarray, audio_embedding: np.ndarray) -> np.ndarray:
    """(B,C,h,w) x (B,C) -> (B,1,h,w): the fused graph's last step, for the split path."""
    v = np.asarray(image_embedding, dtype=np.float32)
    a = np.asarray(audio_embedding, dtype=np.float32)
    b, c, h, w = v.shape
    return np.matmul(a[:, None, :], v.reshape(b, c, h * w)).reshape(b, 1, h, w)
