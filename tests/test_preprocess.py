"""Preprocessing (numpy, no torch) against the official transforms transcribed with PIL + torch."""
import numpy as np
import pytest
import soundfile as sf

from conftest import SAMPLES, needs_shared
from official import official_image_tensor, official_spectrogram, official_spectrogram_file
from sslrt.errors import SslrtError
from sslrt.preprocess import audio_to_spectrogram, image_to_tensor, load_image, spectrogram_from_waveform
from sslrt.preprocess.audio import SilentAudioWarning


@pytest.mark.parametrize("shape", [(7, 5), (100, 300), (224, 224), (500, 37), (1080, 1440)])
def test_image_tensor_matches_official_bicubic(shape):
    rng = np.random.default_rng(shape[0])
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = image_to_tensor(rgb)
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    assert np.abs(ours - official_image_tensor(rgb)).max() <= 1e-4


def test_default_resize_stays_within_float32_rounding_of_the_exact_one():
    """The default resize (row gathers and small matrix products, a transpose between the passes)
    against the exact one, which replays torch's kernel: the same sums in another order, so within
    a few float32 ulps, for down- and upscaling, images narrower than the 4 taps and 1x1 outputs."""
    from sslrt.preprocess.image import _resize_bicubic, _resize_bicubic_exact

    rng = np.random.default_rng(5)
    sizes = [((1, 1), (224, 224)), ((3000, 17), (224, 224)), ((2, 5), (7, 300)), ((225, 223), (1, 1))]
    sizes += [((int(rng.integers(1, 700)), int(rng.integers(1, 700))), (int(rng.integers(1, 300)), int(rng.integers(1, 300))))
              for _ in range(8)]
    for (h, w), (oh, ow) in sizes:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = _resize_bicubic(rgb, oh, ow) / np.float32(255)
        exact = _resize_bicubic_exact(rgb, oh, ow)
        assert ours.shape == exact.shape == (3, oh, ow)
        assert np.abs(ours - exact).max() <= 5e-7, ((h, w), (oh, ow))


@needs_shared
@pytest.mark.parametrize("name", ["accordion_baby_10467.jpg", "car_img.jpeg"])
def test_real_image_matches_official_and_golden_checksum(name, golden):
    ours = image_to_tensor(load_image(SAMPLES / name))
    official = official_image_tensor(SAMPLES / name)
    assert np.abs(ours - official).max() <= 1e-4
    expected = next(p["image_tensor_sum"] for p in golden["pairs"] if p["image"] == name)
    assert ours.astype(np.float64).sum() == pytest.approx(expected, abs=0.5)  # 150528 values, ~1e-6 each


@needs_shared
@pytest.mark.parametrize("name", ["accordion_baby_10467_accordion.wav", "accordion_baby_10467_baby.wav", "car.wav"])
def test_real_spectrogram_matches_official_and_golden(name, golden):
    ours = audio_to_spectrogram(SAMPLES / name)
    assert ours.shape == (1, 257, 299) and ours.dtype == np.float32
    assert np.abs(ours - official_spectrogram_file(SAMPLES / name)).max() <= 1e-5
    pair = next(p for p in golden["pairs"] if p["audio"] == name)
    assert ours.astype(np.float64).sum() == pytest.approx(pair["spectrogram_sum"], abs=1e-2)


@needs_shared
def test_mp3_stereo_24k_is_resampled_to_16k():
    ours = audio_to_spectrogram(SAMPLES / "car_engine.mp3")
    assert ours.shape == (1, 257, 299)
    assert np.abs(ours - official_spectrogram_file(SAMPLES / "car_engine.mp3")).max() <= 1e-5


def test_short_clip_is_tiled_like_the_official_code():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, 12345)
    assert np.abs(spectrogram_from_waveform(x, 16000) - official_spectrogram(x.copy(), 16000)).max() <= 1e-5


def test_multichannel_keeps_channel_zero_and_clips():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.5, 1.5, (160000, 3))  # out of range on purpose: the official code clips
    assert np.abs(spectrogram_from_waveform(x, 16000) - official_spectrogram(x[:, 0].copy(), 16000)).max() <= 1e-5


def test_other_formats_and_rates(media):
    for name in ["sound.wav", "stereo44k.flac", "short.ogg"]:
        spec = audio_to_spectrogram(media / name)
        assert spec.shape == (1, 257, 299) and np.isfinite(spec).all()
    # a 44.1 kHz tone must land in the same frequency bin as the 16 kHz tone of the same pitch
    tone44 = audio_to_spectrogram(media / "stereo44k.flac")[0].mean(1)
    t = np.arange(16000 * 3) / 16000
    tone16 = spectrogram_from_waveform(0.3 * np.sin(2 * np.pi * 440 * t), 16000)[0].mean(1)
    assert tone44.argmax() == tone16.argmax()


def test_silent_audio_is_valid_with_a_warning():
    with pytest.warns(SilentAudioWarning):
        spec = spectrogram_from_waveform(np.zeros(16000), 16000)
    assert np.allclose(spec, np.log(1e-7) / 12)


def test_bad_audio_is_refused(tmp_path):
    with pytest.raises(SslrtError, match="NaN"):
        spectrogram_from_waveform(np.array([0.1, np.nan, 0.2]), 16000)
    with pytest.raises(SslrtError, match="not found"):
        audio_to_spectrogram(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(SslrtError, match="empty"):
        audio_to_spectrogram(tmp_path / "empty.wav")
    sf.write(tmp_path / "zero_frames.wav", np.zeros(0), 16000)
    with pytest.raises(SslrtError, match="no samples"):
        audio_to_spectrogram(tmp_path / "zero_frames.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00junk" * 10)
    with pytest.raises(SslrtError, match="corrupt"):
        audio_to_spectrogram(tmp_path / "junk.wav")


def test_bad_images_are_refused(tmp_path, media):
    with pytest.raises(SslrtError, match="not found"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(SslrtError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    with pytest.raises(SslrtError, match="corrupt"):
        load_image(tmp_path / "corrupt.jpg")
    with pytest.raises(SslrtError, match="NaN"):
        image_to_tensor(np.full((4, 4, 3), np.nan, dtype=np.float32))


def test_png_and_jpeg_decode_to_rgb(media):
    png = load_image(media / "scene.png")
    jpg = load_image(media / "scene.jpg")
    assert png.shape == jpg.shape == (120, 160, 3)
    assert np.abs(png.astype(int) - jpg.astype(int)).mean() < 6  # same picture, RGB order both
