"""ours: the paper's model ("Sound Source Localization is All About Cross-Modal Alignment",
Senocak et al., ICCV 2023 / TPAMI 2025). Contract: ../shared/PAPER_FACTS.md, PEER_FACTS.md §4."""
from sslrt.spec.base import LVS_UNUSED_STEMS, AudioSpec, CheckpointSpec, ImageSpec, ModelSpec

SPEC = ModelSpec(
    name="ours",
    title="Senocak et al., Sound Source Localization is All About Cross-Modal Alignment (ICCV 2023)",
    architecture="lvs_resnet18",
    image=ImageSpec(),
    # soundfile (float / 32768, channel 0) -> first 10 s, tiled -> samples [56000, 104000) ->
    # clip to [-1, 1] -> scipy spectrogram (nperseg 512, noverlap 353) -> log(S + 1e-7) / 12.
    audio=AudioSpec(reader="soundfile", channels="first", clip_seconds=10.0, segment="crop", crop=(56000, 104000),
                    segment_seconds=3.0, spectrogram="linear", n_fft=512, hop=512 - 353, log="log", log_eps=1e-7,
                    log_scale=12.0, shape=(1, 257, 299)),
    checkpoint=CheckpointSpec(
        entries=("model_state_dict",), default_prefix="",
        # The lvs-style towers (vision stem conv1, audio stem conv1_a). Released files also carry the
        # training-only heads below; sslrt's own compact files (towers only) are ours as well.
        required=("imgnet.conv1.", "audnet.conv1_a."),
        ignored=("img_proj.", "aud_proj.", "vision_fc1.", "conv3.", "norm3.", *LVS_UNUSED_STEMS),
        # SA:test.py:154-159 loads with strict=False: anything else is ignored too (and listed).
        strict=False,
    ),
    map_size=14,
    heatmap_scale=1.0,
    eval_upsample={"vggss": "cv2_linear", "flickr": "bilinear_align_corners", "is3": "bilinear_align_corners"},
    run_upsample="bilinear_align_corners",
    sounding_threshold=0.3175,
    sounding_units="cosine",
    sounding_source="Juanola et al., ICASSP 2025 (vssl_eval scripts/infer_models.sh)",
)
