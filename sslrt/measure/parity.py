"""Compare engines output for output (cf. Polygraphy's Comparator): the numbers behind every
parity claim in a manifest, a test or a report.

One comparator: `heatmap_agreement(reference, candidate)` gives the error statistics of two heatmap
batches, both as numbers (max/mean abs error, cosine) and as what a user sees (argmax cell,
localization). `compare_engines` runs two engines on the same inputs and calls it.
"""
from __future__ import annotations

import numpy as np

from sslrt.graphs import INPUT_AUDIO, INPUT_IMAGE, OUTPUT_HEATMAP
from sslrt.measure.metrics import ciou_at_thresholds
from sslrt.runtime.localization import BILINEAR_ALIGN_CORNERS, fixed_thresholds, heatmaps_to_predictions

# What a reduced-precision engine must meet against the PyTorch fp32 reference.
FP16_BUDGET = {"max_abs": 1e-2, "argmax_agreement": 0.99, "localization_agreement": 0.99}
# A sample's localizations agree when the cIoU of the candidate's mask against the reference's is >= this.
CIOU_THRESHOLD = 0.5


def localization_ciou(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-sample cIoU of the candidate's localization, with the reference's own localization as
    ground truth: both heatmaps go 14 -> 224 (bilinear, align_corners=True), min-max, and the
    official median threshold; ciou = sum(infer*gt) / (sum(gt) + sum(infer*(gt==0)))."""
    def predictions(h):
        h = np.asarray(h, dtype=np.float32)
        return heatmaps_to_predictions(h.reshape(len(h), h.shape[-2], h.shape[-1]), BILINEAR_ALIGN_CORNERS)

    ref, cand = predictions(reference), predictions(candidate)
    gt = ref > fixed_thresholds(ref)[:, None, None]
    ciou = ciou_at_thresholds(cand, gt, fixed_thresholds(cand))
    # A constant reference map gives an empty mask (0/0 = nan); two empty masks agree.
    return np.where(np.isnan(ciou), 1.0, ciou)


def heatmap_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Error statistics of two heatmap batches (N,1,h,w) or (N,h,w)."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    diff = np.abs(ref - cand)
    misses = ref.argmax(1) != cand.argmax(1)
    gaps = ref.max(1) - ref[np.arange(len(ref)), cand.argmax(1)]  # >= 0; 0 where the argmax agrees
    cos = (ref * cand).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1), 1e-12)
    side = np.asarray(reference).shape[-1]
    ciou = localization_ciou(np.asarray(reference).reshape(len(ref), -1, side), np.asarray(candidate).reshape(len(cand), -1, side))
    return {
        "samples": int(len(ref)),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
        "argmax_agreement": float(1 - misses.mean()),
        # disagreements where the candidate's peak cell is, in the reference, within twice the
        # sample's mean abs error of the reference's peak: near-ties that no reduced precision can
        # be expected to break alike. (Not the max abs error: every disagreement is within twice
        # that, |ref_i - ref_j| <= |ref_i - cand_i| + |cand_j - ref_j|, so it would excuse all.)
        "argmax_near_ties": int((misses & (gaps <= 2 * diff.mean(1))).sum()),
        # the disagreements themselves: sample index and the reference's gap between the two cells
        "argmax_misses": [{"sample": int(i), "reference_gap": float(gaps[i])} for i in np.flatnonzero(misses)[:32]],
        "min_ciou": float(ciou.min()),
        "mean_ciou": float(ciou.mean()),
        "localization_agreement": float((ciou >= CIOU_THRESHOLD).mean()),
    }


def within_budget(stats: dict, budget: dict = FP16_BUDGET) -> tuple[bool, list[str]]:
    """(ok, what failed) of comparator statistics against a budget (max_abs is an upper bound,
    the agreements are lower bounds)."""
    failed = []
    for key, bound in budget.items():
        value = stats[key]
        bad = value > bound if key in ("max_abs", "mean_abs") else value < bound
        if bad:
            failed.append(f"{key} {value:.4g} {'>' if key in ('max_abs', 'mean_abs') else '<'} {bound:g}")
    return not failed, failed


def compare_engines(reference, candidate, image: np.ndarray, audio: np.ndarray, batch_size: int = 4) -> dict:
    """Run both engines on the same (N,3,224,224) images and (N,1,257,299) spectrograms."""
    ref_out, cand_out = [], []
    for i in range(0, len(image), batch_size):
        feeds = {INPUT_IMAGE: image[i:i + batch_size], INPUT_AUDIO: audio[i:i + batch_size]}
        ref_out.append(reference.run(feeds)[OUTPUT_HEATMAP])
        cand_out.append(candidate.run(feeds)[OUTPUT_HEATMAP])
    return heatmap_agreement(np.concatenate(ref_out), np.concatenate(cand_out))
