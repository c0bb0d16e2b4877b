"""fnac: "Learning Audio-Visual Source Localization via False Negative Aware Contrastive
Learning" (FNAC, Sun et al., CVPR 2023), as SSLalignment's test.py runs it (PEER_FACTS.md §8):
EZ-VSL's inference graph, its own audio front end (3 s around the file's centre)."""
from dataclasses import replace

from sslrt.spec.base import AudioSpec
from sslrt.spec.ezvsl import SPEC as EZVSL

SPEC = replace(
    EZVSL,
    name="fnac",
    title="Sun et al., Learning Audio-Visual Source Localization via False Negative Aware Contrastive Learning (FNAC, CVPR 2023)",
    # SA:datasets.py:17-35: PyAV s16 mono / 32767, 3 s read from max(duration/2 - 1.5, 0), clip,
    # tiled to 3 s, scipy spectrogram noverlap 274 -> (257, 200), log(S + 1e-7) / 12, no crop.
    audio=AudioSpec(reader="pyav", channels="mean", clip_seconds=3.0, segment="centre_window", crop=None,
                    segment_seconds=3.0, clip_samples=True, spectrogram="linear", n_fft=512, hop=512 - 274,
                    log="log", log_eps=1e-7, log_scale=12.0, frames=None, shape=(1, 257, 200)),
    # {'model', 'optimizer', 'epoch', 'best_cIoU', 'best_Auc'} (FN:train.py:202-206), the same
    # tensors as ezvsl (model/checkpoint.py); single-GPU training, so no 'module.' (unconfirmed).
    checkpoint=replace(EZVSL.checkpoint, default_prefix=""),
    sounding_threshold=0.5538,  # Juanola et al., ICASSP 2025, (cos + 1) / 2 units as ezvsl
)
