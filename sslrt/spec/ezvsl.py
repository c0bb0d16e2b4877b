"""ezvsl: "Localizing Visual Sounds the Easy Way" (EZ-VSL, Mo & Morgado, ECCV 2022), as
SSLalignment's test.py runs it (PEER_FACTS.md §6)."""
from sslrt.spec._torchvision import BILINEAR_EVERYWHERE, NUMPY_SCALARS, ROLLED_10S, TAU
from sslrt.spec.base import CheckpointSpec, ImageSpec, ModelSpec

SPEC = ModelSpec(
    name="ezvsl",
    title="Mo and Morgado, Localizing Visual Sounds the Easy Way (EZ-VSL, ECCV 2022)",
    architecture="torchvision_resnet18_proj",
    image=ImageSpec(),
    audio=ROLLED_10S,
    checkpoint=CheckpointSpec(
        # {'model', 'optimizer', 'epoch', 'best_cIoU', 'best_Auc'}; DDP 'module.' keys (EZ:train.py:170-174).
        # The same tensors as fnac: a file alone does not tell the two apart (model/checkpoint.py).
        entries=("model",), default_prefix="module.",
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
    sounding_threshold=0.6382,
    sounding_units="half_cosine",
    sounding_source="Juanola et al., ICASSP 2025 (vssl_eval scripts/infer_models.sh)",
)
