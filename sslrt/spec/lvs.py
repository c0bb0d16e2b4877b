"""lvs: "Localizing Visual Sounds the Hard Way" (Chen et al., CVPR 2021), as SSLalignment's test.py
runs it (PEER_FACTS.md §5): the same class, image, audio and evaluation as ours; only the
checkpoint differs. (LVS's own repo uses other transforms, §5 "Differences"; sslrt follows the
evaluator the paper compares with.)"""
from sslrt.spec.base import CheckpointSpec, ModelSpec
from sslrt.spec.ours import SPEC as OURS

SPEC = ModelSpec(
    name="lvs",
    title="Chen et al., Localizing Visual Sounds the Hard Way (CVPR 2021)",
    architecture="lvs_resnet18",
    image=OURS.image,
    audio=OURS.audio,
    checkpoint=CheckpointSpec(
        # {'model_state_dict': DataParallel(AVENet).state_dict()}: 'module.' keys, all three stems and
        # fc in both towers, no training heads (peer_keys_lvs.json; SA:test.py:135-146).
        entries=("model_state_dict",), default_prefix="module.",
        required=("imgnet.conv1.", "audnet.conv1_a.", "imgnet.conv1_flow.", "audnet.conv1_flow."),
        forbidden=("img_proj.", "aud_proj.", "vision_fc1.", "conv3.", "norm3."),
        ignored=("imgnet.conv1_a.", "imgnet.conv1_flow.", "imgnet.fc.",
                 "audnet.conv1.", "audnet.conv1_flow.", "audnet.fc."),
        strict=True,
    ),
    map_size=14,
    heatmap_scale=1.0,
    eval_upsample={"vggss": "cv2_linear", "flickr": "bilinear_align_corners", "is3": "bilinear_align_corners"},
    run_upsample="bilinear_align_corners",
    sounding_threshold=0.6077,
    sounding_units="cosine",
    sounding_source="Juanola et al., ICASSP 2025 (vssl_eval scripts/infer_models.sh)",
)
