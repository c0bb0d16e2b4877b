"""ssltie: "Exploiting Transformation Invariance and Equivariance for Self-supervised Sound
Localisation" (SSL-TIE, Liu et al., ACM MM 2022), as SSLalignment's test.py runs it
(PEER_FACTS.md §9): ours' network, a torchaudio mel-dB front end, cv2 upsampling everywhere."""
from sslrt.spec.base import LVS_UNUSED_STEMS, NUMPY_SCALARS, AudioSpec, CheckpointSpec, ImageSpec, ModelSpec

SPEC = ModelSpec(
    name="ssltie",
    title="Liu et al., Exploiting Transformation Invariance and Equivariance for Self-supervised Sound Localisation (SSL-TIE, ACM MM 2022)",
    architecture="lvs_resnet18",
    image=ImageSpec(),
    # SA:datasets_ssltie.py:423-453: torchaudio.load (float32, PCM_16 / 32768), the first 10 s
    # (tiled), MelSpectrogram(n_fft 512, hop 239, n_mels 257, normalized) -> AmplitudeToDB
    # (10 log10(max(x, 1e-10))); no clip, no / 12. -> (1, 257, 670) float32.
    # Channels: the official code has no channel choice and crashes on stereo (a 2-channel
    # spectrogram meets a 1-channel conv1_a); sslrt averages the channels, which keeps a source
    # heard on either side and is what the other readers without a channel rule (FFmpeg's mono
    # downmix of the PyAV families) do.
    audio=AudioSpec(reader="torchaudio", channels="mean", clip_seconds=10.0, segment="head", crop=None,
                    segment_seconds=10.0, clip_samples=False, spectrogram="mel", n_fft=512, hop=239, n_mels=257,
                    log="db", log_eps=1e-10, log_scale=1.0, frames=None, shape=(1, 257, 670)),
    checkpoint=CheckpointSpec(
        # {'epoch', 'state_dict', 'best_miou', 'optimizer', 'iteration'}, no 'module.'
        # (TIE:main.py:566-575). vision_fc1 / conv3 / norm3 are training-only here.
        entries=("state_dict",), default_prefix="",
        required=("imgnet.conv1.", "audnet.conv1_a.", "vision_fc1.", "conv3.", "norm3."),
        forbidden=("img_proj.", "aud_proj."),
        ignored=("vision_fc1.", "conv3.", "norm3.", *LVS_UNUSED_STEMS),
        allowed_globals=NUMPY_SCALARS,
        strict=True,
    ),
    map_size=14,
    heatmap_scale=1.0,
    eval_upsample={"vggss": "cv2_linear", "flickr": "cv2_linear", "is3": "cv2_linear"},
    run_upsample="cv2_linear",
    sounding_threshold=0.3338,
    sounding_units="cosine",
    sounding_upsample="cv2_linear",  # infer_ssltie upsamples with cv2.resize INTER_LINEAR
    sounding_source="Juanola et al., ICASSP 2025 (vssl_eval scripts/infer_models.sh)",
)
