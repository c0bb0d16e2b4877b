"""lvs: "Localizing Visual Sounds the Hard Way" (Chen et al., CVPR 2021), as SSLalignment's test.py
runs it (PEER_FACTS.md §5): the same class, image, audio and evaluation as ours; only the
checkpoint differs. (LVS's own repo uses other transforms, §5 "Differences"; sslrt follows the
evaluator the paper compares with.)"""
from dataclasses import replace

from sslrt.spec.base import LVS_UNUSED_STEMS, CheckpointSpec
from sslrt.spec.ours import SPEC as OURS

SPEC = replace(
    OURS,
    name="lvs",
    title="Chen et al., Localizing Visual Sounds the Hard Way (CVPR 2021)",
    checkpoint=CheckpointSpec(
        # {'model_state_dict': DataParallel(AVENet).state_dict()}: 'module.' keys, all three stems and
        # fc in both towers, no training heads (peer_keys_lvs.json; SA:test.py:135-146).
        entries=("model_state_dict",), default_prefix="module.",
        required=("imgnet.conv1.", "audnet.conv1_a.", "imgnet.conv1_flow.", "audnet.conv1_flow."),
        forbidden=("img_proj.", "aud_proj.", "vision_fc1.", "conv3.", "norm3."),
        ignored=LVS_UNUSED_STEMS,
        strict=True,
    ),
    sounding_threshold=0.6077,  # Juanola et al., ICASSP 2025, in the same units as ours
)
