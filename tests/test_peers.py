"""The five peer families (and ours) against golden_peers.json, the outputs of the OFFICIAL code
(SSLalignment's test.py with its model classes and datasets) on ../shared/samples, from
checkpoints rebuilt by ../shared/golden/peers/make_peer_checkpoint.py."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import GOLDEN, SAMPLES, SHARED
from sslrt.errors import SslrtError
from sslrt.preprocess import audio_to_spectrogram, image_to_tensor, load_image, spectrogram_from_waveform
from sslrt.spec import ModelSpec, families, get_spec

PEERS = GOLDEN / "peers"
needs_peers = pytest.mark.skipif(not (PEERS / "golden_peers.json").is_file(), reason=f"golden peers not found under {PEERS}")
pytestmark = needs_peers

from conftest import FAMILIES, OTHER_PREFIX  # noqa: E402,F401  (fixtures golden_peers, peer_maker, peer_checkpoint: conftest)


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.float32).tobytes()).hexdigest()


# -- specs ---------------------------------------------------------------------------------------

def test_every_family_is_registered_and_round_trips():
    assert set(FAMILIES) <= set(families())
    for name in FAMILIES:
        spec = get_spec(name)
        assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_specs_agree_with_the_golden_shapes(golden_peers):
    for name, entry in golden_peers["families"].items():
        spec = get_spec(name)
        assert [spec.map_size] * 2 == entry["native_map_shape"]
        assert list(spec.audio.shape) == entry["pairs"][0]["audio_tensor_shape"]
        assert [3, spec.image.size, spec.image.size] == entry["pairs"][0]["image_tensor_shape"]


def test_sounding_thresholds_are_the_published_ones():
    """PEER_FACTS §13 lists the negative-audio benchmark's threshold of every family."""
    text = (SHARED / "PEER_FACTS.md").read_text()
    section = text[text.index("## 13."):]
    published = {m.group(1): float(m.group(2)) for m in re.finditer(r"\b(ours|lvs|ezvsl|slavc|fnac|ssltie) (0\.\d{4})", section)}
    assert set(published) == set(FAMILIES)
    for name, threshold in published.items():
        spec = get_spec(name)
        assert spec.sounding_threshold == threshold
        assert spec.sounding_units == ("cosine" if spec.heatmap_scale == 1.0 else "half_cosine")


# -- input tensors (numpy, no torch) -------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_audio_tensor_matches_golden(family, golden_peers):
    """Bit for bit (sha256 of the float32 tensor) for the scipy front ends. SSL-TIE's torchaudio
    STFT runs in float32 with MKL's FFT: its noise floor cannot be matched bit for bit by numpy,
    so there the default (numpy) path's sum is checked (measured |diff| <= 0.63 on a sum of -6.2e6);
    exact_inputs gives its sha256 (test_exact_inputs_through_prepare_pair_for_every_family)."""
    spec = get_spec(family)
    for pair in golden_peers["families"][family]["pairs"]:
        audio = audio_to_spectrogram(SAMPLES / pair["audio"], spec)
        assert audio.dtype == np.float32 and list(audio.shape) == pair["audio_tensor_shape"]
        if spec.audio.spectrogram == "linear":
            assert _sha(audio) == pair["audio_tensor_sha256_f32"]
            assert audio.astype(np.float64).sum() == pair["audio_tensor_sum"]
        else:
            assert audio.astype(np.float64).sum() == pytest.approx(pair["audio_tensor_sum"], abs=2.0)


def test_image_tensor_is_one_for_all_families(golden_peers):
    """The image transform is the same for every family (one golden sha256 for all). With
    exact=True sslrt's numpy tensor is the official one bit for bit (golden sha256); the default
    resize sums in another order and stays within 2e-6 of it."""
    for index in range(len(golden_peers["pairs"])):
        shas = {entry["pairs"][index]["image_tensor_sha256_f32"] for entry in golden_peers["families"].values()}
        assert len(shas) == 1
    for pair in golden_peers["families"]["ours"]["pairs"]:
        rgb = load_image(SAMPLES / pair["image"])
        exact = image_to_tensor(rgb, exact=True)
        assert _sha(exact) == pair["image_tensor_sha256_f32"]
        assert exact.astype(np.float64).sum() == pair["image_tensor_sum"]
        tensors = [image_to_tensor(rgb, get_spec(f)) for f in FAMILIES] + [image_to_tensor(rgb), image_to_tensor(rgb, get_spec("fnac").image)]
        assert all(np.array_equal(t, tensors[0]) for t in tensors)
        assert list(tensors[0].shape) == pair["image_tensor_shape"]
        assert np.abs(tensors[0] - exact).max() <= 2e-6
        assert not np.array_equal(tensors[0], exact)  # the two kernels differ: the sha256 check above is not vacuous


def test_exact_inputs_through_prepare_pair_for_every_family(golden_peers):
    """`exact_inputs` reaches both tensors the engines get (sslrt run --exact-inputs, Localizer,
    Ray): image and audio sha256 equal the golden ones for every family and pair, SSL-TIE's mel
    spectrogram included (on torch's kernels)."""
    pytest.importorskip("torch", reason="SSL-TIE's exact mel spectrogram runs on torch's kernels")
    from sslrt.runtime.pipeline import prepare_pair

    for family in FAMILIES:
        for pair in golden_peers["families"][family]["pairs"]:
            prepared = prepare_pair(SAMPLES / pair["image"], SAMPLES / pair["audio"], spec=get_spec(family), exact_inputs=True)
            assert _sha(prepared.image_tensor) == pair["image_tensor_sha256_f32"], (family, pair["image"])
            assert _sha(prepared.spectrogram) == pair["audio_tensor_sha256_f32"], (family, pair["audio"])


def test_exact_resize_equals_torch_on_random_sizes():
    """The exact kernel against torch's own CPU bicubic (the official transform: ToTensor, then
    interpolate without antialias) on random sizes, down- and upscaling, odd widths included."""
    torch = pytest.importorskip("torch")
    from sslrt.preprocess.image import _resize_bicubic_exact

    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        pytest.skip(f"torch runs its {capability} kernels here; the golden tensors come from its AVX2/AVX-512 ones")
    rng = np.random.default_rng(11)
    for _ in range(12):
        h, w = (int(v) for v in rng.integers(2, 900, 2))
        oh, ow = (int(v) for v in rng.integers(1, 300, 2))
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None]
        expected = torch.nn.functional.interpolate(x, (oh, ow), mode="bicubic", align_corners=False)[0].numpy()
        assert np.array_equal(_resize_bicubic_exact(rgb, oh, ow), expected), (h, w, oh, ow)


def _write(path, samples, sr):
    sf.write(path, samples, sr, subtype="PCM_16")
    return path


@pytest.mark.parametrize("family", ["ezvsl", "fnac", "ssltie"])
def test_stereo_files_are_mixed_to_mono(family, tmp_path):
    """PyAV families hear FFmpeg's mono downmix ((L+R)/2 rounded to int16: within an LSB of the
    mean); SSL-TIE (whose official code fails on stereo) hears the channels' mean."""
    rng = np.random.default_rng(7)
    t = np.arange(16000 * 4) / 16000
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * rng.standard_normal(t.size)], axis=1)
    path = _write(tmp_path / "stereo.wav", stereo, 16000)
    spec = get_spec(family)
    got = audio_to_spectrogram(path, spec)
    pcm, _ = sf.read(path, dtype="int16")
    scale = 32767.0 if spec.audio.reader == "pyav" else 32768.0
    expected = spectrogram_from_waveform(pcm.astype(np.float64).mean(axis=1) / scale, 16000, spec)
    assert got.shape == expected.shape == tuple(spec.audio.shape)
    assert np.abs(got - expected).max() <= (0.02 if spec.audio.log == "log" else 0.5)


@pytest.mark.parametrize("family", FAMILIES)
def test_other_rates_short_and_silent_audio(family, tmp_path):
    spec = get_spec(family)
    t = np.arange(int(44100 * 2.5)) / 44100
    path44 = _write(tmp_path / "tone44k.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 44100)
    tone44 = audio_to_spectrogram(path44, spec)
    t16 = np.arange(16000 * 3) / 16000
    tone16 = spectrogram_from_waveform(0.3 * np.sin(2 * np.pi * 440 * t16), 16000, spec)
    assert tone44.shape == tone16.shape == tuple(spec.audio.shape) and np.isfinite(tone44).all()
    assert tone44[0].mean(1).argmax() == tone16[0].mean(1).argmax()  # resampled: the same bin
    short = spectrogram_from_waveform(np.random.default_rng(1).uniform(-0.5, 0.5, 3000), 16000, spec)
    assert short.shape == tuple(spec.audio.shape) and np.isfinite(short).all()
    from sslrt.preprocess.audio import SilentAudioWarning

    with pytest.warns(SilentAudioWarning):
        silent = spectrogram_from_waveform(np.zeros(16000), 16000, spec)
    assert np.isfinite(silent).all() and np.unique(silent).size == 1


# -- checkpoints ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("variant", ["default", "other"])
@pytest.mark.parametrize("family", FAMILIES)
def test_torch_heatmap_matches_golden(family, variant, peer_checkpoint, golden_peers):
    """The PyTorch reference on sslrt's own tensors, from the released layout and from the other
    'module.' variant: within 1e-5 in cosine units of the official heatmaps (PEER_FACTS §12)."""
    import torch

    from sslrt.model import load_family_checkpoint

    path = peer_checkpoint(family, variant)
    loaded = load_family_checkpoint(path, family=family if family in ("ezvsl", "fnac") else None)
    assert loaded.spec.name == family and loaded.info.detected == (family not in ("ezvsl", "fnac"))
    pairs = golden_peers["families"][family]["pairs"]
    images = np.stack([image_to_tensor(load_image(SAMPLES / p["image"]), loaded.spec) for p in pairs])
    audios = np.stack([audio_to_spectrogram(SAMPLES / p["audio"], loaded.spec) for p in pairs])
    with torch.no_grad():
        heatmaps = loaded.model(torch.from_numpy(images), torch.from_numpy(audios))[:, 0].numpy()
    expected = np.array([p["heatmap"] for p in pairs])
    assert heatmaps.shape == expected.shape
    assert np.abs(heatmaps - expected).max() <= 1e-5 * loaded.spec.heatmap_scale


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_found_from_the_tensors_not_the_name(family, peer_checkpoint, tmp_path):
    from sslrt.model import load_family_checkpoint

    misleading = {"ours": "lvs", "lvs": "ours", "ezvsl": "slavc", "slavc": "ezvsl", "fnac": "ssltie", "ssltie": "fnac"}
    path = shutil.copy(peer_checkpoint(family, "other"), tmp_path / f"{misleading[family]}_released.pth")
    if family in ("ezvsl", "fnac"):  # identical tensors and layout: the user must say which
        with pytest.raises(SslrtError, match=r"ezvsl and fnac .*pass --family ezvsl\|fnac") as err:
            load_family_checkpoint(path)
        assert "\n" not in str(err.value)
        loaded = load_family_checkpoint(path, family=family)
    else:
        loaded = load_family_checkpoint(path)
    assert loaded.info.family == loaded.spec.name == family
    released = get_spec(family).checkpoint
    assert loaded.info.entry in released.entries
    if released.ignored:  # training-only / unused tensors: present, listed, not loaded
        assert loaded.info.ignored and all(k.startswith(released.ignored) for k in loaded.info.ignored)
    else:
        assert not loaded.info.ignored
    assert not loaded.info.unexpected


@pytest.mark.slow
def test_training_only_tensors_are_listed(peer_checkpoint):
    from sslrt.model import load_family_checkpoint

    keys = json.loads((PEERS / "peer_keys_slavc.json").read_text())
    slavc = load_family_checkpoint(peer_checkpoint("slavc"))
    assert len(slavc.info.ignored) == sum(k.startswith("module.momentum_") for k in keys) == 248
    assert slavc.info.prefix == "module." and slavc.info.metadata["best_F1"] == 0.0
    ours = load_family_checkpoint(peer_checkpoint("ours"))
    assert {"img_proj.weight", "vision_fc1.weight", "norm3.running_var", "imgnet.fc.weight"} <= set(ours.info.ignored)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ezvsl", "slavc", "ssltie"])
def test_numpy_scalar_metadata_loads_weights_only(family, peer_checkpoint):
    """The peers' files pickle numpy.float64 metrics, which torch.load(weights_only=True) refuses
    by default; sslrt allows exactly those types, with and without them in the file."""
    import torch

    from sslrt.model import load_family_checkpoint

    path = peer_checkpoint(family)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    fam = family if family == "ezvsl" else None
    for p in (path, peer_checkpoint(family, safe=True)):
        loaded = load_family_checkpoint(p, family=fam)
        assert loaded.spec.name == family
        assert all(type(v) in (int, float, str, bool) for v in loaded.info.metadata.values())


def test_malicious_pickle_does_not_run(tmp_path):
    """Code in a checkpoint's metadata (where the peers keep numpy scalars) must never run."""
    import torch

    from sslrt.model import load_checkpoint, load_family_checkpoint
    from sslrt.synthetic.checkpoints import make_checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # would create the marker file when unpickled

    ckpt = make_checkpoint(tmp_path / "ok.pth", width=4)
    obj = torch.load(ckpt, weights_only=True)
    obj["best_cIoU"] = Payload()
    torch.save(obj, tmp_path / "evil.pth")
    for load in (load_checkpoint, load_family_checkpoint):
        with pytest.raises(SslrtError, match="does not unpickle") as err:
            load(tmp_path / "evil.pth")
        assert "\n" not in str(err.value)
    assert not marker.exists()


def test_unknown_layout_is_one_line_naming_the_families(tmp_path):
    import torch

    from sslrt.model import load_family_checkpoint

    path = tmp_path / "ezvsl_looks_like_it.pth"
    torch.save({"model": {"encoder.conv1.weight": torch.zeros(8, 3, 7, 7), "head.weight": torch.zeros(10, 8)}}, path)
    with pytest.raises(SslrtError) as err:
        load_family_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and "encoder" in message and all(f in message for f in FAMILIES)
    with pytest.raises(SslrtError, match="unknown model family 'nope'"):
        load_family_checkpoint(path, family="nope")


def test_a_strict_family_refuses_foreign_tensors(tmp_path):
    import torch

    from sslrt.model import build_network, config_for, load_family_checkpoint

    spec = get_spec("slavc")
    state = build_network(spec, config_for(spec, width=4)).state_dict()
    torch.save({"model": {**state, "extra_head.weight": torch.zeros(3)}}, tmp_path / "x.pth")
    with pytest.raises(SslrtError, match=r"'extra_head\.weight' is not part of a slavc model"):
        load_family_checkpoint(tmp_path / "x.pth")
    torch.save({"model": state}, tmp_path / "y.pth")
    assert load_family_checkpoint(tmp_path / "y.pth").cfg.width == 4


# -- networks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["ours", "ezvsl", "slavc"])
def test_encoder_graphs_reproduce_the_fused_heatmap(family):
    """cosine_map(vision graph, audio graph) * heatmap_scale == the fused graph: the split path of
    the runtime (sslrt.graphs.cosine_map) gives the family's heatmap, SLAVC's two heads included."""
    import torch

    from sslrt.graphs import cosine_map
    from sslrt.model import build_network, config_for
    from sslrt.model.network import graph_module

    spec = get_spec(family)
    torch.manual_seed(0)
    model = build_network(spec, config_for(spec, width=4))
    for p in model.parameters():  # non-trivial projections and BatchNorm
        p.data.normal_(0, 0.3)
    image = torch.randn(2, 3, 224, 224)
    audio = torch.randn(2, *spec.audio.shape)
    with torch.no_grad():
        fused = graph_module(model, "fused")(image, audio).numpy()
        v = graph_module(model, "vision")(image).numpy()
        a = graph_module(model, "audio")(audio).numpy()
        features = model.imgnet(image), model.audnet(audio)
        head = model.head(*features).numpy()
    assert fused.shape == (2, 1, spec.map_size, spec.map_size)
    assert v.shape[1] == a.shape[1] == 32 * spec.heads  # width * 8 per head
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(cosine_map(v, a) * spec.heatmap_scale, fused, atol=1e-5 * spec.heatmap_scale, rtol=0)
    np.testing.assert_allclose(head, fused, atol=1e-5 * spec.heatmap_scale, rtol=0)


def test_slavc_heatmap_is_the_mean_of_its_two_heads():
    import torch
    import torch.nn.functional as F

    from sslrt.model import build_network, config_for

    spec = get_spec("slavc")
    model = build_network(spec, config_for(spec, width=4))
    image, audio = torch.randn(1, 3, 224, 224), torch.randn(1, *spec.audio.shape)
    with torch.no_grad():
        f, g = model.imgnet(image), F.adaptive_max_pool2d(model.audnet(audio), 1).flatten(1)
        per_head = [torch.einsum("nchw,nc->nhw", F.normalize(getattr(model, f"img_proj{k}")(f), dim=1),
                                 F.normalize(getattr(model, f"aud_proj{k}")(g), dim=1)) / 0.03 for k in (1, 2)]
        expected = ((per_head[0] + per_head[1]) / 2).unsqueeze(1)
        assert torch.allclose(model(image, audio), expected, atol=1e-4)


def test_run_with_exact_inputs(tiny_export, media, capsys, monkeypatch):
    """`sslrt run --exact-inputs` reaches the image transform (and the default run does not ask for
    it); the results agree within the resize's ~1e-6 (a tiny model)."""
    import sslrt.runtime.pipeline as pipeline
    from conftest import run_cli

    asked = []
    real = pipeline.image_to_tensor

    def recording(image, spec=None, exact=False):
        asked.append(exact)
        return real(image, spec, exact=exact)

    monkeypatch.setattr(pipeline, "image_to_tensor", recording)
    results = []
    for extra in ([], ["--exact-inputs"]):
        asked.clear()
        code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "--model", tiny_export.directory, "--json", *extra], capsys)
        assert code == 0, err
        assert asked == [bool(extra)]
        results.append(json.loads(out))
    assert np.abs(np.asarray(results[0]["heatmap"]) - np.asarray(results[1]["heatmap"])).max() < 1e-5
    assert results[0]["peak"] == results[1]["peak"]


def test_fma_emulation_rounds_once():
    """_fma_f32 is a float32 fused multiply-add: one rounding of the exact a * b + c, also where the
    float64 sum lands exactly halfway between two float32 (the two-sum correction), for either sign
    and for operands in any memory order."""
    from fractions import Fraction

    from sslrt.preprocess.image import _fma_f32

    def exact_fma(a, b, c):
        value = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
        lo = np.float32(float(value))  # one of the two float32 around the exact value
        candidates = [np.nextafter(lo, np.float32(-np.inf)), lo, np.nextafter(lo, np.float32(np.inf))]
        return min(candidates, key=lambda x: (abs(Fraction(float(x)) - value), int(np.array(x).view(np.uint32)) & 1))

    # a * b + c is just above 1 + 2**-24 (halfway between 1 and 1 + 2**-23), and float64 rounds the
    # sum to exactly that halfway point: rounding it again to float32 would give 1.0
    a = np.float32(-(2.0 ** -24) * (1 + 2.0 ** -20))
    b = np.float32(1 - 2.0 ** -20)
    c = np.float32(1 + 2.0 ** -23)
    assert float(np.float64(a) * np.float64(b) + np.float64(c)) == 1 + 2.0 ** -24
    assert _fma_f32(np.array([a], np.float64), np.float64(b), c)[0] == exact_fma(a, b, c) == np.float32(1 + 2.0 ** -23)
    assert _fma_f32(np.array([-a], np.float64), np.float64(b), -c)[0] == -exact_fma(a, b, c)
    # the same element inside a Fortran-ordered operand (the height pass gathers such views)
    grid = np.zeros((3, 4), np.float64, order="F")
    grid[1, 2] = a
    got = _fma_f32(grid, np.float64(b), np.full((3, 4), c, np.float32))
    assert got[1, 2] == np.float32(1 + 2.0 ** -23) and got[0, 0] == c
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal(2000).astype(np.float32) for _ in range(3))
    got = _fma_f32(a.astype(np.float64), b.astype(np.float64), c)
    assert all(g == exact_fma(x, y, z) for g, x, y, z in zip(got[:300], a, b, c))


def test_exact_mel_without_torch_is_one_clear_error(monkeypatch):
    """Exact inputs of SSL-TIE's mel front end need torch's kernels: without torch, an SslrtError
    (one line, exit 2 from the CLI) naming what to install, not an ImportError."""
    import sys

    from sslrt.errors import SslrtError
    from sslrt.preprocess.spectrogram import mel_spectrogram_db_exact

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(SslrtError, match="pip install torch"):
        mel_spectrogram_db_exact(np.zeros(16000, np.float32), 16000)
