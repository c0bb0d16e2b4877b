"""Parts shared by the three families on torchvision ResNet-18 towers with projection heads
(EZ-VSL, SLAVC, FNAC; PEER_FACTS.md §3.2 B, §6-8)."""
from sslrt.spec.base import NUMPY_SCALARS, AudioSpec  # noqa: F401  (NUMPY_SCALARS: re-exported)

# EZ-VSL / SLAVC through SA's get_test_dataset (SA:datasets.py:37-61, :321-330): PyAV s16 mono
# / 32767, the first 10 s (tiled), rolled so the file's centre is the clip's centre, scipy
# spectrogram with noverlap 274 (hop 238) -> (257, 671), log(S + 1e-7), centre 200 frames
# [236:436], / 12.
ROLLED_10S = AudioSpec(reader="pyav", channels="mean", clip_seconds=10.0, segment="centre_roll", crop=None,
                       segment_seconds=3.0, clip_samples=True, spectrogram="linear", n_fft=512, hop=512 - 274,
                       log="log", log_eps=1e-7, log_scale=12.0, frames=200, shape=(1, 257, 200))

# SA evaluates all three with `validate`: bilinear align_corners=True on every test set (SA:test.py:688-693).
BILINEAR_EVERYWHERE = {"vggss": "bilinear_align_corners", "flickr": "bilinear_align_corners",
                       "is3": "bilinear_align_corners"}
TAU = 0.03  # SA:test.py:97-101
