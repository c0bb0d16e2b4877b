"""Media through PyAV: audio from any container equals soundfile's samples, frames upright, windows."""
import numpy as np
import pytest
import soundfile as sf

av = pytest.importorskip("av")

from sslrt.errors import SslrtError  # noqa: E402
from sslrt.preprocess import load_audio, spectrogram_from_waveform  # noqa: E402
from sslrt.preprocess.audio import resample_to_16k  # noqa: E402
from sslrt.preprocess.media import decode_audio, probe, read_frame  # noqa: E402
from sslrt.preprocess.window import audio_window, window_clip  # noqa: E402
from sslrt.spec import get_spec  # noqa: E402
from sslrt.synthetic.clips import write_clip  # noqa: E402

SPEC = get_spec("ours")


def _pcm(seconds=2.5, rate=16000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.shape)
    return np.clip(np.rint(x * 32767), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("ext,fmt", [(".mkv", "matroska"), (".mov", "mov")])
def test_pcm_in_a_container_gives_the_samples_soundfile_gives(tmp_path, ext, fmt):
    pcm = _pcm()
    sf.write(tmp_path / "a.wav", pcm, 16000, subtype="PCM_16")
    write_clip(tmp_path / f"a{ext}", None, 10, 0, 0, pcm, 16000, acodec="pcm_s16le", fmt=fmt)
    ref, sr_ref = load_audio(tmp_path / "a.wav")
    got, sr = load_audio(tmp_path / f"a{ext}")  # libsndfile cannot read it: PyAV's turn
    assert sr == sr_ref == 16000
    assert got.dtype == np.float64 and np.array_equal(got, ref)  # bit for bit: s16 / 32768 like soundfile
    assert np.array_equal(spectrogram_from_waveform(got, sr), spectrogram_from_waveform(ref, sr_ref))


def test_multichannel_keeps_channel_0_like_soundfile(tmp_path):
    left, right = _pcm(1.0, seed=1), _pcm(1.0, seed=2)
    inter = np.stack([left, right], axis=1)
    sf.write(tmp_path / "s.wav", inter, 16000, subtype="PCM_16")
    with av.open(str(tmp_path / "s.mkv"), "w") as out:
        st = out.add_stream("pcm_s16le", rate=16000)
        st.layout = "stereo"
        for k in range(0, len(inter), 1024):
            frame = av.AudioFrame.from_ndarray(inter[k:k + 1024].reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate, frame.pts = 16000, k
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    ref, _ = load_audio(tmp_path / "s.wav")
    got, _ = load_audio(tmp_path / "s.mkv")
    assert np.array_equal(got, ref)


@pytest.mark.parametrize("name,codec,fmt,rate", [("a.m4a", "aac", "mp4", 16000), ("a.webm", "libopus", "webm", 48000)])
def test_compressed_audio_decodes(tmp_path, name, codec, fmt, rate):
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this PyAV")
    t = np.arange(int(2.0 * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_clip(tmp_path / name, None, 10, 0, 0, wave, rate, acodec=codec, fmt=fmt)
    got, sr = load_audio(tmp_path / name)
    assert sr == rate and got.ndim == 1 and abs(got.shape[0] - wave.shape[0]) < 0.1 * rate
    spectrum = np.abs(np.fft.rfft(got[: rate]))
    assert abs(np.argmax(spectrum) * rate / rate - 440) <= 2  # the tone survived the codec
    assert spectrogram_from_waveform(got, sr).shape == (1, 257, 299)


def test_bad_audio_containers_are_one_line(tmp_path):
    (tmp_path / "junk.m4a").write_bytes(b"\x00\x00\x00\x18ftypjunk" * 20)
    with pytest.raises(SslrtError, match="corrupt"):
        load_audio(tmp_path / "junk.m4a")
    write_clip(tmp_path / "mute.mp4", [np.zeros((48, 64, 3), np.uint8)] * 5, 10, 64, 48)
    with pytest.raises(SslrtError, match="no audio stream"):
        decode_audio(tmp_path / "mute.mp4")


def test_window_clip_is_heard_as_exactly_the_window():
    rng = np.random.default_rng(3)
    track = rng.uniform(-0.5, 0.5, 16000 * 10)
    # t = 5 s of a 10 s track: the window is the official crop, and the clip transform agrees.
    window = audio_window(track, 5.0, SPEC)
    assert np.array_equal(window, track[56000:104000])
    assert np.array_equal(spectrogram_from_waveform(window_clip(window, SPEC)), spectrogram_from_waveform(track))
    # Elsewhere: the spectrogram of the window itself (no tiling, no turning).
    from scipy import signal

    w = audio_window(track, 1.0, SPEC)  # moved inside the track: [0, 3 s)
    assert np.array_equal(w, track[:48000])
    _, _, s = signal.spectrogram(np.clip(w, -1, 1), 16000, nperseg=512, noverlap=353)
    expected = (np.log(s + 1e-7) / 12)[None].astype(np.float32)
    assert np.array_equal(spectrogram_from_waveform(window_clip(w, SPEC)), expected)
    assert np.array_equal(audio_window(track, 9.9, SPEC), track[-48000:])
    short = track[:20000]  # shorter than the window: whole, tiled by the family's transform
    assert np.array_equal(window_clip(audio_window(short, 0.5, SPEC), SPEC), short)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_streamed_windows_equal_the_whole_track_resampled(tmp_path, rate):
    from sslrt.video.audio import AudioTrack

    rng = np.random.default_rng(rate)
    pcm = np.clip(np.rint(rng.standard_normal(int(rate * 7.3)) * 3000), -32768, 32767).astype(np.int16)
    write_clip(tmp_path / "a.mkv", None, 10, 0, 0, pcm, rate, acodec="pcm_s16le", fmt="matroska")
    whole = resample_to_16k(pcm / 32768.0, rate)
    track = AudioTrack(tmp_path / "a.mkv", SPEC, 0.0)
    for t in (0.0, 0.7, 1.5, 2.0, 3.33, 5.0, 6.9, 7.29):
        got = track.window(t)
        want = audio_window(whole, t, SPEC)
        assert got.shape == want.shape == (48000,)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_rotated_video_is_read_upright(tmp_path):
    """A 90-degree display matrix (written into the MP4's tkhd box) turns the frames."""
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:8, :, 0] = 255  # a red band along the top
    write_clip(tmp_path / "r.mp4", [rgb] * 5, 10, 64, 48, crf=0)
    data = bytearray((tmp_path / "r.mp4").read_bytes())
    identity = bytes.fromhex("00010000" "00000000" "00000000" "00000000" "00010000" "00000000" "00000000" "00000000" "40000000")
    tkhd = data.index(b"tkhd")
    at = data.index(identity, tkhd)
    # Display matrix of a 90-degree clockwise turn (what phones write for portrait video).
    data[at:at + 36] = bytes.fromhex("00000000" "00010000" "00000000" "FFFF0000" "00000000" "00000000" "00000000" "00000000" "40000000")
    (tmp_path / "r.mp4").write_bytes(bytes(data))
    info = probe(tmp_path / "r.mp4")
    assert info.video.rotation in (90, 270) and (info.video.width, info.video.height) == (48, 64)
    frame, _ = read_frame(tmp_path / "r.mp4", 0.2)
    assert frame.shape == (64, 48, 3)
    red = frame[:, :, 0] > 128
    assert red[:, :8].mean() > 0.9 or red[:, -8:].mean() > 0.9  # the top band is now a side band
