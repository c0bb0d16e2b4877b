"""fnac: "Learning Audio-Visual Source Localization via False Negative Aware Contrastive
Learning" (FNAC, Sun et al., CVPR 2023), as SSLalignment's test.py runs it (PEER_FACTS.md §8):
EZ-VSL's inference graph, its own audio front end (3 s around the file's centre)."""
from sslrt.spec._torchvision import BILINEAR_EVERYWHERE, NUMPY_SCALARS, TAU
from sslrt.spec.base import AudioSpec, CheckpointSpec, ImageSpec, ModelSpec

SPEC = ModelSpec(
    name="fnac",
    title="Sun et al., Learning Audio-Visual Source Localization via False Negative Aware Contrastive Learning (FNAC, CVPR 2023)",
    architecture="torchvision_resnet18_proj",
    image=ImageSpec(),
    # SA:datasets.py:17-35: PyAV s16 mono / 32767, 3 s read from max(duration/2 - 1.5, 0), clip,
    # tiled to 3 s, scipy spectrogram noverlap 274 -> (257, 200), log(S + 1e-7) / 12, no crop.
    audio=AudioSpec(reader="pyav", channels="mean", clip_seconds=3.0, segment="centre_window", crop=None,
                    segment_seconds=3.0, clip_samples=True, spectrogram="linear", n_fft=512, hop=512 - 274,
                    log="log", log_eps=1e-7, log_scale=12.0, frames=None, shape=(1, 257, 200)),
    checkpoint=CheckpointSpec(
        # {'model', 'optimizer', 'epoch', 'best_cIoU', 'best_Auc'} (FN:train.py:202-206); single-GPU
        # training, so no 'module.' (unconfirmed). The same tensors as ezvsl (model/checkpoint.py).
        entries=("model",), default_prefix="",
        required=("imgnet.conv1.", "audnet.conv1.", "img_proj.", "aud_proj."),
        forbidden=("audnet.conv1_a.", "img_proj1.", "aud_proj1.", "momentum_"),
        ignored=(),
        allowed_globals=NUMPY_SCALARS,
        strict=True,
    ),
    map_size=7,
    heads=1,
    heatmap_scale=1.0 / TAU,
    eval_upsample=dict(BILINEAR_EVERYWHERE),
    run_upsample="bilinear_align_corners",
    eval_normalize="minmax",  # SA:test.py validate: pred = utils.normalize_img(h)
    sounding_threshold=0.5538,
    sounding_units="half_cosine",
    sounding_source="Juanola et al., ICASSP 2025 (vssl_eval scripts/infer_models.sh)",
)
