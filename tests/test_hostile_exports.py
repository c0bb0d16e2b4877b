"""Issue 14, exports: tampered manifests and graphs, the checkpoint cache, killed and concurrent
exporters. Every refusal is one line (exit 2 on the command line)."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from conftest import make_checkpoint, run_cli
from sslrt.errors import SslrtError
from sslrt.store.manifest import read_export, sha256_file


def _copy(export, tmp_path: Path, name: str = "copy") -> Path:
    dst = tmp_path / name
    shutil.copytree(export.directory, dst)
    return dst


def _edit_manifest(folder: Path, change) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    change(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def _put(folder: Path, key: str, source: Path) -> None:
    """Replace artifact `key`'s file by `source`, updating its size and sha256 in the manifest (a
    manifest edited along with its hashes)."""
    m = json.loads((folder / "manifest.json").read_text())
    target = folder / m["artifacts"][key]["file"]
    shutil.copyfile(source, target)
    m["artifacts"][key]["bytes"] = os.path.getsize(target)
    m["artifacts"][key]["sha256"] = sha256_file(str(target))
    (folder / "manifest.json").write_text(json.dumps(m))


def _run(media, model, capsys, *extra):
    return run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", model, "--json", *extra], capsys)


def _refused(media, model, capsys, fragment, *extra):
    code, out, err = _run(media, model, capsys, *extra)
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


# -- manifests that are not what they say ---------------------------------------------------------
@pytest.mark.parametrize("change, fragment", [
    (lambda m: m["model"].__setitem__("width", "abc"), "manifest 'model' is malformed"),
    (lambda m: m["artifacts"].__setitem__("onnx_fp32", "sslrt.onnx"), "malformed"),
    (lambda m: m["artifacts"]["onnx_fp32_vision"].__setitem__("file", "/etc/passwd"), "outside the export folder"),
    (lambda m: m["artifacts"]["onnx_fp32_vision"].__setitem__("file", "../tiny/sslrt_fp32_vision.onnx"),
     "outside the export folder"),
    (lambda m: m["artifacts"]["onnx_fp32_vision"].__setitem__("file", "sub\x00.onnx"), "outside the export folder"),
    (lambda m: m.__setitem__("checkpoint", "a string"), ""),
])
def test_malformed_manifest_is_one_line(change, fragment, tiny_export, media, tmp_path, capsys):
    copy = _copy(tiny_export, tmp_path)
    _edit_manifest(copy, change)
    if fragment:
        _refused(media, copy, capsys, fragment)
    else:  # a malformed field the run does not need: it runs, and the torch backend says what is missing
        code, _, err = _run(media, copy, capsys)
        assert code == 0, err
        code, _, err = _run(media, copy, capsys, "-b", "torch")
        assert code == 2 and err.count("\n") == 1


def test_artifact_symlinked_outside_the_folder_is_refused(tiny_export, media, tmp_path, capsys):
    copy = _copy(tiny_export, tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(copy / "sslrt_fp32_vision.onnx", outside)
    (copy / "sslrt_fp32_vision.onnx").unlink()
    (copy / "sslrt_fp32_vision.onnx").symlink_to(outside)
    _refused(media, copy, capsys, "outside the export folder")
    with pytest.raises(SslrtError, match="outside"):
        read_export(str(copy))


def test_swapped_encoders_with_updated_hashes_are_refused(tiny_export, media, tmp_path, capsys):
    copy = _copy(tiny_export, tmp_path)
    vision, audio = copy / "sslrt_fp32_vision.onnx", copy / "sslrt_fp32_audio.onnx"
    shutil.copyfile(vision, tmp_path / "v.onnx")
    _put(copy, "onnx_fp32_vision", audio)
    _put(copy, "onnx_fp32_audio", tmp_path / "v.onnx")
    _refused(media, copy, capsys, "is not the vision graph")
    # the same with the recorded inputs/outputs swapped too: the graph's role still decides
    _edit_manifest(copy, lambda m: [m["artifacts"]["onnx_fp32_vision"].update(
        inputs=m["artifacts"]["onnx_fp32_audio"]["inputs"], outputs=m["artifacts"]["onnx_fp32_audio"]["outputs"])])
    _refused(media, copy, capsys, "is not the vision graph")


def test_fused_graph_listed_as_an_encoder_is_refused(tiny_export, media, tmp_path, capsys):
    copy = _copy(tiny_export, tmp_path)
    _put(copy, "onnx_fp32_audio", copy / "sslrt.onnx")
    _refused(media, copy, capsys, "is not the audio graph")


def test_int8_graph_labelled_fp32_is_refused(media, tmp_path, capsys):
    from sslrt.resolve import demo_model_dir

    demo = read_export(demo_model_dir())  # the demo export has int8 graphs
    copy = _copy(demo, tmp_path)
    _put(copy, "onnx_fp32_vision", copy / "sslrt_int8_vision.onnx")
    _refused(media, copy, capsys, "labelled fp32 but is an int8 graph")
    copy2 = _copy(demo, tmp_path, "copy2")
    _put(copy2, "onnx_int8_audio", copy2 / "sslrt_fp32_audio.onnx")
    _refused(media, copy2, capsys, "labelled int8 but is an fp32 graph", "--precision", "int8")


def test_graph_of_another_width_is_refused(tiny_export, media, tmp_path, capsys):
    from sslrt.resolve import demo_model_dir

    copy = _copy(tiny_export, tmp_path)  # width 4; the demo model is width 8
    _put(copy, "onnx_fp32_vision", Path(demo_model_dir()) / "sslrt_fp32_vision.onnx")
    _refused(media, copy, capsys, "the manifest does not describe it")
    # the fused graph has the same tensors at any width: its convolutions tell
    copy2 = _copy(tiny_export, tmp_path, "copy2")
    _put(copy2, "onnx_fp32", Path(demo_model_dir()) / "sslrt.onnx")
    _refused(media, copy2, capsys, "64-channel features", "--no-reuse-embeddings")


def test_io_check_catches_what_the_file_check_cannot(tiny_export, media, tmp_path, capsys, monkeypatch):
    """Without the ONNX content checks (e.g. a TensorRT engine), the session's tensors still refuse
    a graph of another width."""
    from sslrt.resolve import demo_model_dir
    from sslrt.store import manifest

    monkeypatch.setattr(manifest.ExportedModel, "_check_onnx", lambda *a: None)
    copy = _copy(tiny_export, tmp_path)
    _put(copy, "onnx_fp32_vision", Path(demo_model_dir()) / "sslrt_fp32_vision.onnx")
    _refused(media, copy, capsys, "has image_embedding of shape [None, 64, 14, 14], this model's is [None, 32, 14, 14]")


# -- external data ----------------------------------------------------------------------------------
def _with_external_data(tiny_export, tmp_path) -> Path:
    """A copy whose vision graph keeps its weights in an external-data file, exported honestly
    (the manifest entry written by artifact_entry)."""
    import onnx

    from sslrt.store.manifest import artifact_entry

    copy = _copy(tiny_export, tmp_path)
    model = onnx.load(str(copy / "sslrt_fp32_vision.onnx"))
    onnx.save_model(model, str(copy / "sslrt_fp32_vision.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="vision.weights", size_threshold=0)
    m = json.loads((copy / "manifest.json").read_text())
    old = m["artifacts"]["onnx_fp32_vision"]
    entry = artifact_entry(str(copy), "sslrt_fp32_vision.onnx", **{k: v for k, v in old.items()
                                                                    if k not in ("file", "bytes", "sha256")})
    assert entry["external_data"]["vision.weights"]["bytes"] > 1000
    m["artifacts"]["onnx_fp32_vision"] = entry
    (copy / "manifest.json").write_text(json.dumps(m))
    return copy


def test_external_data_is_hashed_and_kept_inside(tiny_export, media, tmp_path, capsys):
    copy = _with_external_data(tiny_export, tmp_path)
    code, out, err = _run(media, copy, capsys)
    assert code == 0, err
    reference = json.loads(_run(media, tiny_export.directory, capsys)[1])
    assert json.loads(out)["heatmap"] == reference["heatmap"]
    # the weights file changed, same size
    weights = copy / "vision.weights"
    data = bytearray(weights.read_bytes())
    data[100:104] = b"\x00\x01\x02\x03"
    weights.write_bytes(bytes(data))
    _refused(media, copy, capsys, "external data 'vision.weights'")
    # a manifest that does not record the external data
    _edit_manifest(copy, lambda m: m["artifacts"]["onnx_fp32_vision"].pop("external_data"))
    _refused(media, copy, capsys, "that the manifest does not record")


def test_external_data_outside_the_folder_is_refused(tiny_export, media, tmp_path, capsys):
    import onnx

    copy = _copy(tiny_export, tmp_path)
    model = onnx.load(str(copy / "sslrt_fp32_audio.onnx"))
    onnx.save_model(model, str(tmp_path / "audio.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="audio.weights", size_threshold=0)
    # point the graph's locations one folder up, where the weights are
    model = onnx.load(str(tmp_path / "audio.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../audio.weights"
    onnx.save_model(model, str(tmp_path / "audio_up.onnx"))
    _put(copy, "onnx_fp32_audio", tmp_path / "audio_up.onnx")
    _refused(media, copy, capsys, "outside the export folder")


# -- the checkpoint cache -----------------------------------------------------------------------------
def test_planted_cache_entry_of_another_checkpoint_is_not_run(tiny_export, media, tmp_path, capsys):
    from sslrt.store.cache import export_cache_dir

    other = make_checkpoint(tmp_path / "other.pth.tar", width=4, seed=11)
    entry = export_cache_dir(sha256_file(str(other)))
    shutil.rmtree(entry, ignore_errors=True)
    shutil.copytree(tiny_export.directory, entry)  # records tiny.pth.tar's sha256, not other's
    code, out, err = _run(media, other, capsys)
    assert code == 0, err
    assert read_export(str(entry)).checkpoint_sha256 == sha256_file(str(other))  # re-exported
    planted = json.loads(_run(media, tiny_export.directory, capsys)[1])
    assert json.loads(out)["heatmap"] != planted["heatmap"]


def test_damaged_cache_entry_is_exported_again(tiny_checkpoint, media, tmp_path, capsys):
    from sslrt.store.cache import export_cache_dir

    ckpt = make_checkpoint(tmp_path / "c.pth.tar", width=4, seed=29)
    assert _run(media, ckpt, capsys)[0] == 0
    entry = export_cache_dir(sha256_file(str(ckpt)))
    with open(entry / "sslrt_fp32_vision.onnx", "r+b") as f:  # same size, other bytes
        f.seek(2000)
        f.write(b"\x00\x01\x02\x03")
    code, _, err = _run(media, ckpt, capsys)
    assert code == 0, err
    read_export(str(entry), verify_hashes=True)


def test_concurrent_resolves_export_once(tiny_checkpoint, tmp_path, monkeypatch):
    import time

    import sslrt.export as export_pkg
    from sslrt.resolve import resolve_model

    ckpt = make_checkpoint(tmp_path / "c.pth.tar", width=4, seed=23)  # not in the (session-wide) cache yet
    calls, real = [], export_pkg.export_checkpoint

    def slow_export(*a, **k):
        calls.append(1)
        time.sleep(0.5)
        return real(*a, **k)

    monkeypatch.setattr(export_pkg, "export_checkpoint", slow_export)
    results, errors = [], []

    def worker():
        try:
            results.append(resolve_model(str(ckpt)).directory)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert len(calls) == 1


# -- staging folders of killed exporters ---------------------------------------------------------------
def test_stale_staging_folders_are_removed_by_the_next_export(tiny_checkpoint, tmp_path):
    from sslrt.export import export_checkpoint

    dead = tmp_path / ".out.999999999.abc123.tmp"  # a PID that is not running
    dead.mkdir()
    (dead / "sslrt.onnx").write_bytes(b"x" * 1000)
    alive = tmp_path / f".out.{os.getppid()}.def456.tmp"  # a running writer: left alone
    alive.mkdir()
    other = tmp_path / ".other.999999999.abc.tmp"  # another directory's: not ours to judge
    other.mkdir()
    export_checkpoint(str(tiny_checkpoint), str(tmp_path / "out"), encoders=False, simplify=False)
    assert not dead.exists() and alive.exists() and other.exists()
    assert sorted(os.listdir(tmp_path)) == sorted([".other.999999999.abc.tmp", alive.name, "out"])
