"""Compare engines output for output (cf. Polygraphy's Comparator): the numbers behind every
parity claim in a manifest, a test or a report."""
from __future__ import annotations

import numpy as np

from sslrt.config import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_HEATMAP


def heatmap_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Error statistics of two heatmap batches (N,1,h,w) or (N,h,w)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    diff = np.abs(ref - cand)
    cos = (ref * cand).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-12)
    return {
        "samples": int(len(ref)),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "min_cosine": float(cos.min()),
        "argmax_agreement": float((ref.argmax(1) == cand.argmax(1)).mean()),
    }


def compare_engines(reference, candidate, image: np.ndarray, audio: np.ndarray, batch_size: int = 4) -> dict:
    """Run both engines on the same (N,3,224,224) images and (N,1,257,299) spectrograms."""
    ref_out, cand_out = [], []
    for i in range(0, len(image), batch_size):
        feeds = {INPUT_IMAGE: image[i:i + batch_size], INPUT_AUDIO: audio[i:i + batch_size]}
        ref_out.append(reference.run(feeds)[OUTPUT_HEATMAP])
        cand_out.append(candidate.run(feeds)[OUTPUT_HEATMAP])
    return heatmap_agreement(np.concatenate(ref_out), np.concatenate(cand_out))
