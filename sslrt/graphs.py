"""The graphs of an export and their tensors: the contract between the exporter, every engine
and the runtime. Torch-free.

Every family exports the same three graphs, so a runtime can reuse an image's or a sound's
embedding whatever the model: `fused` (image, audio -> heatmap), `vision` (image -> image
embedding, (B, C, h, w) L2-normalised over C) and `audio` (audio -> audio embedding, (B, C)). The
fused heatmap equals `cosine_map(vision, audio) * spec.heatmap_scale`.
"""
from __future__ import annotations

import numpy as np

INPUT_IMAGE = "image"
INPUT_AUDIO = "audio"
OUTPUT_HEATMAP = "heatmap"
OUTPUT_IMAGE_EMBEDDING = "image_embedding"
OUTPUT_AUDIO_EMBEDDING = "audio_embedding"
GRAPHS = ("fused", "vision", "audio")

# graph -> (input names, output names)
GRAPH_IO = {
    "fused": ((INPUT_IMAGE, INPUT_AUDIO), (OUTPUT_HEATMAP,)),
    "vision": ((INPUT_IMAGE,), (OUTPUT_IMAGE_EMBEDDING,)),
    "audio": ((INPUT_AUDIO,), (OUTPUT_AUDIO_EMBEDDING,)),
}


def input_shapes(spec) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of each model input of a family (sslrt.spec.ModelSpec)."""
    return {INPUT_IMAGE: (3, spec.image.size, spec.image.size), INPUT_AUDIO: tuple(spec.audio.shape)}


def artifact_key(fmt: str, precision: str, graph: str = "fused") -> str:
    """Manifest key of one exported file: onnx_fp32, onnx_int8_audio, tensorrt_fp16_vision, ..."""
    return f"{fmt}_{precision}" if graph == "fused" else f"{fmt}_{precision}_{graph}"


def cosine_map(image_embedding: np.ndarray, audio_embedding: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(B,C,h,w) x (B,C) -> (B,1,h,w) * scale: the fused graph's last step, for the split path."""
    v = np.asarray(image_embedding, dtype=np.float32)
    a = np.asarray(audio_embedding, dtype=np.float32)
    b, c, h, w = v.shape
    out = np.matmul(a[:, None, :], v.reshape(b, c, h * w)).reshape(b, 1, h, w)
    return out if scale == 1.0 else out * np.float32(scale)
