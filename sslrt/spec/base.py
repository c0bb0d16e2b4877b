"""The fields of a model family's spec. Pure data: no torch, no I/O; every value is JSON-able
(`to_dict` / `from_dict` round-trip exactly, which is how an export carries its spec)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sslrt.errors import SslrtError

# The non-tensor objects the peers' released files pickle: numpy.float64 metric scalars
# (np.mean / sklearn auc results), which unpickle through numpy's scalar constructor and a dtype
# (an instance of numpy.dtypes.Float64DType under numpy >= 1.25). numpy 1.x files name the
# constructor numpy.core.*, numpy 2.x files numpy._core.*.
NUMPY_SCALARS = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
                 "numpy.dtypes.Float64DType")

# The lvs-style ResNet-18 towers (SA:models_lvs/base_models.py, SA:networks/base_models.py) build
# three stems and an fc per tower; inference uses the vision stem conv1 and the audio stem conv1_a
# only, so a checkpoint's other stems and fc are ignored (ours, lvs, ssltie; PEER_FACTS §3.2 A).
LVS_UNUSED_STEMS = ("imgnet.conv1_a.", "imgnet.conv1_flow.", "imgnet.fc.",
                    "audnet.conv1.", "audnet.conv1_flow.", "audnet.fc.")


@dataclass(frozen=True)
class ImageSpec:
    """Test-time image transform: RGB -> ToTensor -> Resize((size, size), `resize`) on the float
    tensor -> Normalize(mean, std)."""

    size: int = 224
    resize: str = "bicubic"  # torch interpolate(bicubic, align_corners=False), no antialias, no clamp
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AudioSpec:
    """Test-time audio transform: waveform -> segment -> spectrogram -> log -> scale.

    Every family hears `sample_rate` audio: other rates are resampled first (the official code
    assumes 16 kHz and silently changes its window otherwise).
    """

    sample_rate: int = 16000
    # How samples become floats: "soundfile" = libsndfile float (PCM_16 / 32768); "pyav" = PyAV
    # decode resampled by FFmpeg to s16 mono at the file's rate, / 32767 (EZ-VSL/SLAVC/FNAC);
    # "torchaudio" = float32 (PCM_16 / 32768), as torchaudio.load gives it (SSL-TIE).
    reader: str = "soundfile"
    # How channels become one: "first" (channel 0), "mean" (average of the channels; for "pyav"
    # files FFmpeg's own mono downmix, of which the mean is the float-array equivalent).
    channels: str = "first"
    clip_seconds: float = 10.0  # short clips are tiled to this length, longer ones cut to it
    # Which part of the clip the model hears:
    #   "crop":          samples [crop[0], crop[1]) of the tiled clip_seconds (ours, lvs)
    #   "centre_roll":   clip_seconds tiled, rolled so the file's centre sits at the clip's centre,
    #                    spectrogram, then `frames` centre frames (ezvsl, slavc)
    #   "centre_window": segment_seconds read from max(duration/2 - segment_seconds/2, 0), tiled (fnac)
    #   "head":          the first clip_seconds, tiled (ssltie)
    segment: str = "crop"
    crop: tuple[int, int] | None = (56000, 104000)
    segment_seconds: float = 3.0  # the length of audio the model hears (used by video windows)
    clip_samples: bool = True  # clip the waveform to [-1, 1] (every official reader but SSL-TIE's)
    # "linear": scipy.signal.spectrogram (Tukey 0.25, detrend, density), see preprocess/spectrogram.py;
    # "mel": torchaudio MelSpectrogram (periodic Hann, centred reflect pad, power 2, HTK mel, no norm,
    # normalized=True) -- sslrt computes both in numpy.
    spectrogram: str = "linear"
    n_fft: int = 512
    hop: int = 159  # nperseg - noverlap
    n_mels: int | None = None
    # "log": log(S + log_eps) / log_scale; "db": 10 * log10(max(S, log_eps)) / log_scale.
    log: str = "log"
    log_eps: float = 1e-7
    log_scale: float = 12.0
    frames: int | None = None  # centre-crop the time axis to this many frames
    shape: tuple[int, int, int] = (1, 257, 299)  # (channels, frequency bins, frames) the network takes

    @property
    def noverlap(self) -> int:
        return self.n_fft - self.hop


@dataclass(frozen=True)
class CheckpointSpec:
    """How a released checkpoint of the family is laid out, and so how to recognise and read it."""

    entries: tuple[str, ...] = ("model_state_dict",)  # where the state dict sits in the file (or a bare dict)
    default_prefix: str = ""  # what the released files carry ("module." for DataParallel/DDP)
    # Key groups (prefixes after stripping "module.") whose presence identifies the family ...
    required: tuple[str, ...] = ()
    # ... and groups whose presence rules it out. When several families fit a file, the one whose
    # `required` strictly contains the others' wins (lvs and ssltie files also fit ours' looser
    # rule); families with the same `required` (ezvsl, fnac) stay ambiguous: see model/checkpoint.py.
    forbidden: tuple[str, ...] = ()
    # Tensors present in released files that inference never reads (training-only heads, unused
    # stems, momentum encoders): accepted, ignored, listed in the manifest.
    ignored: tuple[str, ...] = ()
    # Non-tensor types the released files pickle (numpy metric scalars), allowed by name in
    # torch.load(weights_only=True); nothing else is unpickled.
    allowed_globals: tuple[str, ...] = ()
    # Whether the official loader is strict: a tensor that is neither used nor `ignored` is then
    # refused (strict) or ignored and listed (not strict: ours' strict=False load).
    strict: bool = True


@dataclass(frozen=True)
class ModelSpec:
    """Everything sslrt knows of one model family."""

    name: str
    title: str  # the paper, as a person would cite it
    architecture: str  # which reference network sslrt.model builds ("lvs_resnet18", ...)
    image: ImageSpec = field(default_factory=ImageSpec)
    audio: AudioSpec = field(default_factory=AudioSpec)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    map_size: int = 14  # the heatmap's native side
    heads: int = 1  # projection heads averaged (SLAVC: 2)
    # The heatmap's units: cosine * heatmap_scale (1 for the cosine families, 1/tau for the others).
    heatmap_scale: float = 1.0
    # Global audio-visual similarity (the pair's score): sum(P*A)/sum(P), P = sigmoid((A-eps)/tau),
    # on the cosine map A.
    score_epsilon: float = 0.65
    score_tau: float = 0.03
    # How each test set's official evaluation upsamples the map to 224x224 (sslrt.runtime.localization rules).
    eval_upsample: dict = field(default_factory=lambda: {"vggss": "cv2_linear", "flickr": "bilinear_align_corners",
                                                         "is3": "bilinear_align_corners"})
    # How the family's official evaluation loop normalises the upsampled map (runtime.localization
    # NORMALIZE_RULES): "one_minus_negated" (validate_lvs, validate_ssltie) or "minmax" (validate).
    eval_normalize: str = "one_minus_negated"
    # The rule sslrt run uses for its box (the evaluation's rule for a test set without one).
    run_upsample: str = "bilinear_align_corners"
    # "No sound source": sounding = max(map in `sounding_units`) > sounding_threshold.
    # Units: "cosine" (the raw cosine map) or "half_cosine" ((cos + 1) / 2).
    sounding_threshold: float | None = None
    sounding_units: str = "cosine"
    sounding_upsample: str = "bilinear_align_corners"  # how the benchmark brings the map to 224x224
    sounding_source: str = ""
    reported: dict = field(default_factory=dict)  # published numbers, {test set: {metric: value}}

    # -- units ---------------------------------------------------------------------------------
    @property
    def heatmap_units(self) -> str:
        return "cosine" if self.heatmap_scale == 1.0 else f"cosine / {1 / self.heatmap_scale:g}"

    def to_cosine(self, heatmap):
        """The native heatmap in cosine units (numpy arrays or floats)."""
        return heatmap if self.heatmap_scale == 1.0 else heatmap / self.heatmap_scale

    def sounding_value(self, native_max: float) -> float:
        """The maximum of the (upsampled) native map in the negative-audio benchmark's units."""
        cos_max = float(self.to_cosine(native_max))
        return (cos_max + 1.0) / 2.0 if self.sounding_units == "half_cosine" else cos_max

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        """Rebuild a spec from its `to_dict` (as an export manifest records it); one line on any
        field that is missing, unknown or of the wrong type."""
        try:
            return _build(cls, data, "spec")
        except SslrtError:
            raise
        except (TypeError, ValueError) as exc:
            raise SslrtError(f"manifest 'spec' is malformed ({exc}): re-export") from None


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


_NESTED = {"image": ImageSpec, "audio": AudioSpec, "checkpoint": CheckpointSpec}


def _build(kind, data, where: str):
    if not isinstance(data, dict):
        raise SslrtError(f"manifest '{where}' is not an object: re-export")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(data) - set(fields)
    if unknown:
        raise SslrtError(f"manifest '{where}' has unknown fields {sorted(unknown)}: re-export with this sslrt")
    values = {}
    for name, f in fields.items():
        if name not in data:
            continue  # the dataclass default
        v = data[name]
        if name in _NESTED and kind is ModelSpec:
            v = _build(_NESTED[name], v, f"{where}.{name}")
        elif isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        values[name] = _check_type(v, f, f"{where}.{name}")
    return kind(**values)


def _check_type(value, f, where: str):
    """The JSON value against the field's annotation (int, float, str, tuples, optional)."""
    ann = str(f.type)
    if value is None:
        if "None" not in ann:
            raise SslrtError(f"manifest '{where}' is null: re-export")
        return value
    if ann.startswith(("int", "float", "str", "bool")):
        base = ann.split(" ")[0].split("|")[0]
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "str": isinstance(value, str), "bool": isinstance(value, bool)}[base]
        if not ok:
            raise SslrtError(f"manifest '{where}' should be {base}, got {value!r}: re-export")
        return float(value) if base == "float" else value
    if ann.startswith("tuple") and not isinstance(value, tuple):
        raise SslrtError(f"manifest '{where}' should be a list, got {value!r}: re-export")
    if ann.startswith("dict") and not isinstance(value, dict):
        raise SslrtError(f"manifest '{where}' should be an object, got {value!r}: re-export")
    return value
