"""`sslrt run` and `sslrt demo` as a user drives them, and every bad input: one line, exit 2."""
import json
import os

import numpy as np
import soundfile as sf

from conftest import make_checkpoint, run_cli


def test_run_json_has_every_field(tiny_export, media, capsys):
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory, "--json"], capsys)
    assert code == 0, err
    assert out.count("\n") == 1  # exactly one JSON object
    r = json.loads(out)
    assert np.array(r["heatmap"]).shape == (14, 14)
    assert -1 <= r["score"] <= 1
    h, w = 120, 160
    x, y = r["peak"]
    x0, y0, x1, y1 = r["bbox"]
    assert 0 <= x0 <= x <= x1 <= w and 0 <= y0 <= y <= y1 <= h
    assert r["backend"] == "onnxruntime" and r["precision"] == "fp32"
    t = r["timings_ms"]
    # one pair: its inference is the first call (warm-up included), and the one-time costs are named
    assert {"preprocess", "inference", "postprocess", "load"} <= set(t) and t["first_call"] is True
    assert set(t) <= {"preprocess", "inference", "postprocess", "load", "startup", "first_call"}


def test_run_human_summary_and_overlay(tiny_export, media, tmp_path, capsys):
    import cv2

    target = tmp_path / "overlay.png"
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory, "--save", target], capsys)
    assert code == 0, err
    assert "sound at (" in out and "overlay:" in out
    picture = cv2.imread(str(target))
    assert picture.shape == (120, 160, 3)
    assert not any(n.startswith(".") for n in os.listdir(tmp_path))  # no temp file left


def test_checkpoint_model_is_exported_once_to_the_cache(tiny_checkpoint, tiny_export, media, capsys, tmp_path, monkeypatch):
    from sslrt.store.cache import cache_root

    monkeypatch.setenv("SSLRT_CACHE_DIR", str(tmp_path / "cache"))  # a cache of its own: other tests export too
    args = ["run", media / "scene.jpg", media / "sound.wav", "--json"]
    code, out, err = run_cli(args + ["-m", tiny_checkpoint], capsys)
    assert code == 0, err
    cached = list((cache_root() / "exports").iterdir())
    assert len(cached) == 1 and (cached[0] / "manifest.json").is_file()
    code, out2, _ = run_cli(args + ["-m", tiny_checkpoint], capsys)
    assert len(list((cache_root() / "exports").iterdir())) == 1
    _, out3, _ = run_cli(args + ["-m", tiny_export.directory], capsys)
    assert json.loads(out)["heatmap"] == json.loads(out2)["heatmap"] == json.loads(out3)["heatmap"]


def test_pairs_batch_equals_single_runs(tiny_export, media, tmp_path, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"image,audio\n{media}/scene.jpg,{media}/sound.wav\n{media}/scene.png,{media}/stereo44k.flac\n"
                   f"{media}/scene.jpg,{media}/short.ogg\n")
    outdir = tmp_path / "overlays"
    outdir.mkdir()
    code, out, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory, "--json", "--batch-size", "2",
                              "--save-dir", outdir], capsys)
    assert code == 0, err
    batch = json.loads(out)
    assert batch["count"] == 3 and len(os.listdir(outdir)) == 3
    code, single, _ = run_cli(["run", media / "scene.png", media / "stereo44k.flac", "-m", tiny_export.directory, "--json"], capsys)
    assert np.abs(np.array(batch["results"][1]["heatmap"]) - np.array(json.loads(single)["heatmap"])).max() <= 1e-5


def test_overlays_as_jpeg_where_asked(tiny_export, media, tmp_path, capsys):
    import cv2

    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{media}/scene.jpg,{media}/sound.wav\n{media}/scene.png,{media}/short.ogg\n")
    outdir = tmp_path / "overlays"
    outdir.mkdir()
    code, out, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory, "--save-dir", outdir,
                              "--overlay-format", "jpg"], capsys)
    assert code == 0, err
    assert sorted(os.listdir(outdir)) == ["scene__short.jpg", "scene__sound.jpg"]
    for name in os.listdir(outdir):
        assert (outdir / name).read_bytes()[:2] == b"\xff\xd8"  # JPEG, as named
        assert cv2.imread(str(outdir / name)).shape == (120, 160, 3)  # the original image's size
    assert out.count("overlay: ") == 2
    code, _, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory, "--save-dir", outdir,
                            "--overlay-format", "gif"], capsys)
    assert code == 2 and err == "error: --overlay-format must be png or jpg, got 'gif'\n"
    code, _, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory,
                            "--save", tmp_path / "one.png", "--overlay-format", "jpg"], capsys)
    assert code == 2 and "--overlay-format goes with --save-dir" in err and not (tmp_path / "one.png").exists()
    code, _, err = run_cli(["run", "--pairs", csv, "--ray", "--output", tmp_path / "shards", "--save-dir", outdir,
                            "--overlay-format", "JPEG"], capsys)
    assert code == 2 and err == "error: --overlay-format jpg is for local runs; --ray writes PNG overlays\n"


def test_silent_audio_runs_with_a_warning(tiny_export, media, tmp_path, capsys):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 10), 16000)
    code, out, err = run_cli(["run", media / "scene.jpg", silent, "-m", tiny_export.directory, "--json"], capsys)
    assert code == 0
    assert "warning:" in err and "silent" in err
    assert json.loads(out)["warnings"]


def _bad_inputs(tmp_path, media, tiny_export):
    """(name, args replacing image/audio/model, expected message fragment)."""
    corrupt_jpg = tmp_path / "corrupt.jpg"
    corrupt_jpg.write_bytes((media / "scene.jpg").read_bytes()[:40] + b"\x00" * 200)
    truncated_wav = tmp_path / "truncated.wav"
    truncated_wav.write_bytes((media / "sound.wav").read_bytes()[:30])
    empty_wav = tmp_path / "empty.wav"
    empty_wav.write_bytes(b"")
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros(0), 16000)
    nan_wav = tmp_path / "nan.wav"
    sf.write(nan_wav, np.array([0.1, np.nan, 0.3] * 1000), 16000, subtype="FLOAT")
    other_model = tmp_path / "other.pth"
    import torch

    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(8, 3, 3, 3)}}, other_model)
    narrow_wrong = make_checkpoint(tmp_path / "wrong_shapes.pth", width=4)
    obj = torch.load(narrow_wrong, weights_only=True)
    obj["model_state_dict"]["audnet.conv1_a.weight"] = torch.zeros(4, 3, 7, 7)
    torch.save(obj, narrow_wrong)
    img, wav, model = media / "scene.jpg", media / "sound.wav", tiny_export.directory
    return [
        ("missing image", [tmp_path / "nope.jpg", wav, model], "image not found"),
        ("corrupt jpeg", [corrupt_jpg, wav, model], "corrupt"),
        ("missing audio", [img, tmp_path / "nope.wav", model], "audio not found"),
        ("truncated wav", [img, truncated_wav, model], "corrupt"),
        ("empty wav", [img, empty_wav, model], "empty"),
        ("wav without samples", [img, header_only, model], "no samples"),
        ("nan signal", [img, nan_wav, model], "NaN"),
        ("missing model", [img, wav, tmp_path / "nope_model"], "model not found"),
        ("checkpoint of another model", [img, wav, other_model], "not a checkpoint of the paper's model"),
        ("wrong tensor shape", [img, wav, narrow_wrong], "audnet.conv1_a.weight"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(tiny_export, media, tmp_path, capsys):
    for name, (image, audio, model), fragment in _bad_inputs(tmp_path, media, tiny_export):
        save = tmp_path / f"{name}.png"
        code, out, err = run_cli(["run", image, audio, "-m", model, "--json", "--save", save], capsys)
        assert code == 2, name
        assert out == "", name
        assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, (name, err)
        assert not save.exists(), name


def test_usage_errors_exit_2(tiny_export, media, capsys):
    code, _, err = run_cli(["run", media / "scene.jpg", "-m", tiny_export.directory], capsys)
    assert code == 2 and "IMAGE and AUDIO" in err
    code, _, err = run_cli(["run", "--bogus"], capsys)
    assert code == 2


def test_bad_pairs_file(tmp_path, media, tiny_export, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"{media}/scene.jpg,{media}/sound.wav\n{media}/scene.jpg\n")
    code, _, err = run_cli(["run", "--pairs", csv, "-m", tiny_export.directory], capsys)
    assert code == 2 and "pairs.csv:2" in err


def test_demo_runs_offline_and_writes_an_overlay(tmp_path, capsys):
    import cv2

    target = tmp_path / "demo.png"
    code, out, err = run_cli(["demo", "-o", target], capsys)
    assert code == 0, err
    assert "model:" in out and "sound source:" in out and cv2.imread(str(target)) is not None
