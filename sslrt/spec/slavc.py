"""slavc: "A Closer Look at Weakly-Supervised Audio-Visual Source Localization" (SLAVC, Mo &
Morgado, NeurIPS 2022), as SSLalignment's test.py runs it (PEER_FACTS.md §7): EZ-VSL's towers, two
projection heads whose /tau maps are averaged, EZ-VSL's audio front end (bit-identical tensor)."""
from dataclasses import replace

from sslrt.spec._torchvision import NUMPY_SCALARS
from sslrt.spec.base import CheckpointSpec
from sslrt.spec.ezvsl import SPEC as EZVSL

SPEC = replace(
    EZVSL,
    name="slavc",
    title="Mo and Morgado, A Closer Look at Weakly-Supervised Audio-Visual Source Localization (SLAVC, NeurIPS 2022)",
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
    heads=2,
    sounding_threshold=0.5450,  # Juanola et al., ICASSP 2025, (cos + 1) / 2 units as ezvsl
)
