"""The paper's training objective: contrastive alignment of the global audio-visual similarity.

For every image/audio pair of the batch the cosine map A (14x14) is pooled over its positive
region, P = sigmoid((A - epsilon) / tau): sim = sum(P*A) / sum(P). As the official code
(LVS-style trimap), each image's own audio also gives a hard negative: its similarity over the
region outside the looser threshold epsilon2, N = 1 - sigmoid((A - epsilon2) / tau), i.e. the
picture's background must not match its sound. Logits are sim / 0.07; cross-entropy runs both
ways (image -> audios, audio -> images). With several augmented views per sample, every view of
the same sample is a positive (multi-positive cross-entropy: -log sum_pos softmax).
"""
from __future__ import annotations

import torch

from sslrt.spec import get_spec

_OURS = get_spec("ours")
EPSILON, TAU = _OURS.score_epsilon, _OURS.score_tau  # the positive-region weighting, as the score uses it
EPSILON2 = 0.4  # background hard negatives: a training-only parameter of the paper's objective

LOGIT_SCALE = 1 / 0.07


def pooled_similarity(maps: torch.Tensor, epsilon: float = EPSILON, tau: float = TAU) -> torch.Tensor:
    """(..., h, w) cosine maps -> (...) similarity over the soft positive region."""
    pos = torch.sigmoid((maps - epsilon) / tau)
    return (pos * maps).flatten(-2).sum(-1) / pos.flatten(-2).sum(-1).clamp_min(1e-12)


def background_similarity(maps: torch.Tensor, epsilon2: float = EPSILON2, tau: float = TAU) -> torch.Tensor:
    """(..., h, w) -> (...) similarity over the soft negative region (below epsilon2)."""
    neg = 1 - torch.sigmoid((maps - epsilon2) / tau)
    return (neg * maps).flatten(-2).sum(-1) / neg.flatten(-2).sum(-1).clamp_min(1e-12)


def alignment_loss(image_feats: torch.Tensor, audio_feats: torch.Tensor, identity: torch.Tensor,
                   hard_negatives: bool = True) -> tuple[torch.Tensor, dict]:
    """image_feats (N, C, h, w) and audio_feats (N, C), both L2-normalised over C; identity (N,)
    names the sample each view comes from (views of one sample are positives of each other).

    Returns the loss and diagnostics (mean positive / negative / background similarity).
    """
    maps = torch.einsum("nchw,mc->nmhw", image_feats, audio_feats)  # A[i, j]: image i with audio j
    sim = pooled_similarity(maps)  # (N, N)
    positive = identity[:, None] == identity[None, :]
    logits = sim * LOGIT_SCALE
    if hard_negatives:
        own = torch.arange(maps.shape[0])
        background = background_similarity(maps[own, own]) * LOGIT_SCALE  # (N,) image i, its own audio
        rows = torch.cat([logits, background[:, None]], 1)  # image -> audios, + its background
        cols = torch.cat([logits.T, background[:, None]], 1)  # audio -> images, + its image's background
        pos_mask = torch.cat([positive, torch.zeros_like(positive[:, :1])], 1)
    else:
        rows, cols, pos_mask = logits, logits.T, positive
    loss = 0.5 * (_multi_positive_ce(rows, pos_mask) + _multi_positive_ce(cols, pos_mask))
    with torch.no_grad():
        stats = {
            "pos": float(sim[positive].mean()),
            "neg": float(sim[~positive].mean()) if (~positive).any() else float("nan"),
            "bg": float(background.mean() / LOGIT_SCALE) if hard_negatives else float("nan"),
        }
    return loss, stats


def _multi_positive_ce(logits: torch.Tensor, pos_mask: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log(sum over positives of softmax(row))."""
    all_lse = torch.logsumexp(logits, 1)
    pos_lse = torch.logsumexp(logits.masked_fill(~pos_mask, float("-inf")), 1)
    return (all_lse - pos_lse).mean()
