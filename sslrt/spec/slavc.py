"""slavc: "A Closer Look at Weakly-Supervised Audio-Visual Source Localization" (SLAVC, Mo &
Morgado, NeurIPS 2022), as SSLalignment's test.py runs it (PEER_FACTS.md §7): EZ-VSL's towers, two
projection heads whose /tau maps are averaged, EZ-VSL's audio front end (bit-identical tensor)."""
from sslrt.spec._torchvision import BILINEAR_EVERYWHERE, NUMPY_SCALARS, ROLLED_10S, TAU
from sslrt.spec.base import CheckpointSpec, ImageSpec, ModelSpec

SPEC = ModelSpec(
    name="slavc",
    title="Mo and Morgado, A Closer Look at Weakly-Supervised Audio-Visual Source Localization (SLAVC, NeurIPS 2022)",
    architecture="torchvision_resnet18_proj",
    image=ImageSpec(),
    audio=ROLLED_10S,
    checkpoint=CheckpointSpec(
        # {'model', 'optimizer', 'epoch', 'best_Precision', 'best_AP', 'best_F1'}; DDP 'module.' keys
        # (SL:train.py:226-231). The momentum encoders are training-only (use_mom_eval=False).
        entries=("model",), default_prefix="module.",
        required=("imgnet.conv1.", "audnet.conv1.", "img_proj1.", "img_proj2.", "aud_proj1.", "aud_proj2."),
        forbidden=("audnet.conv1_a.", "img_proj.", "aud_proj."),
        ignored=("momentum_imgnet.", "momentum_audnet.", "momentum_img_proj1.", "momentum_img_proj2.",
                 "momentum_aud_proj1.", "momentum_aud_proj2."),
        allowed_globals=NUMPY_SCALARS,
        strict=True,
    ),
    map_size=7,
    heads=2,
    heatmap_scale=1.0 / TAU,
    eval_upsample=dict(BILINEAR_EVERYWHERE),
    run_upsample="bilinear_align_corners",
    eval_normalize="minmax",  # SA:test.py validate: pred = utils.normalize_img(h)
    sounding_threshold=0.5450,
    sounding_units="half_cosine",
    sounding_source="Juanola et al., ICASSP 2025 (vssl_eval scripts/infer_models.sh)",
)
