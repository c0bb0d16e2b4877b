"""`sslrt video`, `sslrt run clip.mp4`, `sslrt demo --video`: the same engine as `sslrt run`, tracking
on generated moving scenes, an overlay video that plays, and every bad input refused cleanly."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

av = pytest.importorskip("av")

from conftest import run_cli  # noqa: E402
from sslrt.synthetic.clips import moving_clip, write_clip, write_moving_clip  # noqa: E402


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    c = moving_clip(1, seconds=3.0, fps=20, size=(160, 120))
    write_moving_clip(d / "moving.mp4", c)
    write_moving_clip(d / "moving_pcm.mkv", c, acodec="pcm_s16le", fmt="matroska")
    return d, c


def _decoded(path):
    with av.open(str(path)) as c:
        frames = [f.time for f in c.decode(video=0)]
        return frames, bool(c.streams.audio), c.streams.video[0].codec_context.name, c.duration / 1e6


def _no_temp_files(folder):
    return not [n for n in os.listdir(folder) if n.startswith(".") or ".tmp" in n]


def test_video_heatmaps_equal_sslrt_run_on_the_frame_and_window(clips, tmp_path, capsys):
    """Consistency: at sampled times, `sslrt video` = `sslrt run frame.png window.wav` (16 kHz WAV of
    the clip the family hears as that window) = `sslrt run clip --at t`."""
    import cv2

    from sslrt.preprocess import load_audio
    from sslrt.preprocess.audio import resample_to_16k
    from sslrt.preprocess.media import read_frame
    from sslrt.preprocess.window import audio_window, window_clip
    from sslrt.spec import get_spec

    d, _ = clips
    src = d / "moving_pcm.mkv"
    code, out, err = run_cli(["video", src, "-o", tmp_path / "o.mp4", "--heatmaps", "--fps", "4", "--json"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 12 and all(np.array(r["heatmap"]).shape == (14, 14) for r in records)
    samples, sr = load_audio(src)
    track = resample_to_16k(samples, sr)
    worst = 0.0
    for rec in (records[0], records[5], records[-1]):  # a moved window at each end, one centred
        rgb, frame_t = read_frame(src, rec["t"])
        assert frame_t == pytest.approx(rec["t"])
        cv2.imwrite(str(tmp_path / "frame.png"), rgb[:, :, ::-1])
        clip = window_clip(audio_window(track, rec["t"], get_spec("ours")), get_spec("ours"))
        sf.write(tmp_path / "window.wav", clip, 16000, subtype="DOUBLE")
        code, out, err = run_cli(["run", tmp_path / "frame.png", tmp_path / "window.wav", "--json"], capsys)
        assert code == 0, err
        ran = json.loads(out)
        diff = np.abs(np.array(ran["heatmap"]) - np.array(rec["heatmap"])).max()
        worst = max(worst, diff)
        assert diff <= 1e-5, (rec["t"], diff)
        assert ran["peak"] == rec["peak"] and ran["bbox"] == rec["bbox"]
        code, out, err = run_cli(["run", src, "--at", rec["t"], "--json"], capsys)
        assert code == 0, err
        assert np.abs(np.array(json.loads(out)["heatmap"]) - np.array(rec["heatmap"])).max() <= 1e-5
    print(f"consistency: max abs heatmap difference {worst:.2e}")


def test_tracking_a_moving_sounding_object(tmp_path):
    """The demo model's peak stays inside the moving sounding object's true box."""
    from sslrt.runtime.pipeline import Localizer
    from sslrt.video import VideoOptions, localize_video

    localizer = Localizer.open(None)
    hits = total = 0
    for seed in range(6):
        c = moving_clip(seed, seconds=4.0, fps=25, size=(224, 224))
        src = tmp_path / f"m{seed}.mp4"
        write_moving_clip(src, c)
        localize_video(localizer, src, None, tmp_path / f"m{seed}.jsonl", options=VideoOptions(fps=4, video=False))
        for line in open(tmp_path / f"m{seed}.jsonl"):
            rec = json.loads(line)
            x0, y0, x1, y1 = c.box_at(rec["t"])
            hits += x0 <= rec["peak"][0] < x1 and y0 <= rec["peak"][1] < y1
            total += 1
    print(f"tracking: {hits}/{total} = {hits / total:.1%}")
    assert total == 96 and hits / total >= 0.9


def test_overlay_video_plays_with_the_input_frames_and_audio(clips, tmp_path, capsys):
    d, c = clips
    out = tmp_path / "o.mp4"
    code, stdout, err = run_cli(["video", d / "moving.mp4", "-o", out, "--csv"], capsys)
    assert code == 0, err
    assert "real-time factor" in stdout
    src_times, _, _, src_duration = _decoded(d / "moving.mp4")
    times, has_audio, codec, duration = _decoded(out)
    assert len(times) == len(src_times) == c.frames
    assert np.allclose(times, src_times, atol=1e-3)
    assert has_audio and duration == pytest.approx(src_duration, abs=0.06)
    assert codec in ("h264", "mpeg4")
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert len(lines) == 12 and set(json.loads(lines[0])) >= {"t", "peak", "bbox", "score", "sounding"}
    assert (tmp_path / "o.csv").read_text().count("\n") == 13
    with av.open(str(out)) as o, av.open(str(d / "moving.mp4")) as i:  # audio copied, not re-encoded
        assert o.streams.audio[0].codec_context.name == i.streams.audio[0].codec_context.name
        pa = [bytes(p) for p in o.demux(o.streams.audio[0]) if p.size]
        pb = [bytes(p) for p in i.demux(i.streams.audio[0]) if p.size]
        assert pa == pb
    assert _no_temp_files(tmp_path)


def test_part_every_frame_and_track_only(clips, tmp_path, capsys):
    d, _ = clips
    out = tmp_path / "part.mp4"
    code, _, err = run_cli(["video", d / "moving.mp4", "-o", out, "--start", "1", "--end", "2", "--fps", "0"], capsys)
    assert code == 0, err
    times, has_audio, _, _ = _decoded(out)
    assert len(times) == 20 and times[0] == pytest.approx(0, abs=1e-3) and has_audio
    recs = [json.loads(x) for x in (tmp_path / "part.jsonl").read_text().splitlines()]
    assert len(recs) == 20 and recs[0]["t"] == pytest.approx(1.0) and recs[-1]["t"] == pytest.approx(1.95)
    code, out_text, err = run_cli(["video", d / "moving.mp4", "--no-video", "--track", tmp_path / "t.jsonl",
                                   "--fps", "2"], capsys)
    assert code == 0, err
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 6
    assert not any(n.endswith(".mp4") for n in os.listdir(tmp_path) if n != "part.mp4")


def test_odd_size_and_variable_frame_rate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (61, 81, 3), dtype=np.uint8) for _ in range(12)]
    times = [0, 0.1, 0.15, 0.4, 0.5, 0.55, 0.9, 1.0, 1.3, 1.35, 1.6, 1.9]
    wave = (0.2 * rng.standard_normal(16000 * 2)).astype(np.float32)
    # odd sizes cannot be H.264 4:2:0: the source is MPEG-4 in MKV, the overlay pads to 82x62.
    write_clip(tmp_path / "vfr.mkv", frames, 10, 81, 61, wave, vcodec="ffv1", acodec="pcm_s16le", times=times)
    code, _, err = run_cli(["video", tmp_path / "vfr.mkv", "-o", tmp_path / "vfr_out.mp4", "--fps", "0"], capsys)
    assert code == 0, err
    got, has_audio, _, _ = _decoded(tmp_path / "vfr_out.mp4")
    assert np.allclose(got, times, atol=2e-3) and has_audio
    with av.open(str(tmp_path / "vfr_out.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (82, 62)


def test_run_on_a_ten_second_clip_is_the_official_crop_and_middle_frame(tmp_path, capsys):
    import cv2

    from sslrt.preprocess import load_audio

    c = moving_clip(5, seconds=10.0, fps=10, size=(64, 48))
    write_moving_clip(tmp_path / "ten.mkv", c, acodec="pcm_s16le", fmt="matroska")
    code, out, err = run_cli(["run", tmp_path / "ten.mkv", "--json"], capsys)
    assert code == 0, err
    via_video = json.loads(out)
    assert via_video["image"].endswith("@5.000s")
    # The official path: the middle frame as a picture, the whole 10 s of audio as a WAV.
    samples, sr = load_audio(tmp_path / "ten.mkv")
    sf.write(tmp_path / "all.wav", samples, sr, subtype="DOUBLE")
    from sslrt.preprocess.media import read_frame

    rgb, t = read_frame(tmp_path / "ten.mkv", 5.0)
    assert t == pytest.approx(5.0)
    cv2.imwrite(str(tmp_path / "mid.png"), rgb[:, :, ::-1])
    code, out, err = run_cli(["run", tmp_path / "mid.png", tmp_path / "all.wav", "--json"], capsys)
    assert code == 0, err
    assert np.abs(np.array(json.loads(out)["heatmap"]) - np.array(via_video["heatmap"])).max() <= 1e-6
    # An audio file given beside the video replaces its audio; --at picks another time.
    code, out, err = run_cli(["run", tmp_path / "ten.mkv", tmp_path / "all.wav", "--at", "2.5", "--json"], capsys)
    assert code == 0, err and json.loads(out)["image"].endswith("@2.500s")


def test_demo_video(tmp_path, capsys):
    target = tmp_path / "demo.mp4"
    code, out, err = run_cli(["demo", "--video", "-o", target], capsys)
    assert code == 0, err
    assert "tracking:" in out and target.is_file() and (tmp_path / "demo.jsonl").is_file()
    times, has_audio, _, _ = _decoded(target)
    assert len(times) == 100 and has_audio


def test_silent_audio_is_processed_with_a_warning(tmp_path, capsys):
    write_clip(tmp_path / "quiet.mkv", [np.full((48, 64, 3), 90, np.uint8)] * 10, 10, 64, 48,
               np.zeros(16000, np.int16), acodec="pcm_s16le", fmt="matroska")
    code, _, err = run_cli(["video", tmp_path / "quiet.mkv", "-o", tmp_path / "q.mp4"], capsys)
    assert code == 0 and "warning:" in err and "silent" in err


def _bad_inputs(tmp_path, clips):
    d, _ = clips
    frames = [np.full((48, 64, 3), 100, np.uint8)] * 10
    write_clip(tmp_path / "mute.mp4", frames, 10, 64, 48)
    write_clip(tmp_path / "sound.m4a", None, 10, 0, 0, np.zeros(8000, np.float32) + 0.1, acodec="aac", fmt="mp4")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + os.urandom(3000))
    data = (d / "moving_pcm.mkv").read_bytes()
    (tmp_path / "truncated.mkv").write_bytes(data[: len(data) // 2])
    mp4 = (d / "moving.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])
    (tmp_path / "unsupported.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC"))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with av.open(str(tmp_path / "noframes.mkv"), "w") as out:  # a valid container without a single frame
        s = out.add_stream("ffv1", rate=10)
        s.width, s.height = 64, 48
        out.add_stream("pcm_s16le", rate=16000)
        out.start_encoding()
    return [
        ("video without audio", [tmp_path / "mute.mp4"], "no audio stream"),
        ("audio-only file", [tmp_path / "sound.m4a"], "no video stream"),
        ("corrupt file", [tmp_path / "corrupt.mp4"], "corrupt"),
        ("truncated mkv", [tmp_path / "truncated.mkv"], "truncated"),
        ("truncated mp4", [tmp_path / "truncated.mp4"], "corrupt"),
        ("unsupported codec", [tmp_path / "unsupported.mkv"], "not supported"),
        ("zero-length file", [tmp_path / "empty.mp4"], "empty"),
        ("zero-length media", [tmp_path / "noframes.mkv"], "noframes.mkv"),
        ("--start past the end", [d / "moving.mp4", "--start", "9"], "past the end"),
        ("missing file", [tmp_path / "nope.mp4"], "not found"),
    ]


def test_every_bad_input_is_one_line_exit_2_and_leaves_nothing(clips, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    outdir = tmp_path / "out"
    outdir.mkdir()
    for name, args, fragment in _bad_inputs(inputs, clips):
        code, out, err = run_cli(["video", *args, "-o", outdir / "o.mp4", "--csv"], capsys)
        assert code == 2, (name, err)
        assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and fragment in err, (name, err)
        assert os.listdir(outdir) == [], (name, os.listdir(outdir))
    code, _, err = run_cli(["run", inputs / "mute.mp4", "--json"], capsys)
    assert code == 2 and "no audio stream" in err
    code, _, err = run_cli(["run", clips[0] / "moving.mp4", "--at", "99"], capsys)
    assert code == 2 and "outside" in err
