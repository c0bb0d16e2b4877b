"""ONNX export: a valid, dynamic-batch graph, an honest manifest, atomic writes."""
import json
import os

import numpy as np
import onnx
import pytest

from conftest import run_cli
from sslrt.errors import SslrtError
from sslrt.store.manifest import read_export


def test_export_is_valid_onnx_with_dynamic_batch(tiny_export):
    path = tiny_export.artifact_path("onnx_fp32")
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims["image"][1:] == [3, 224, 224] and dims["audio"][1:] == [1, 257, 299]
    assert isinstance(dims["image"][0], str)  # symbolic batch

    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.engines.torch import TorchEngine
    from sslrt.measure.parity import compare_engines

    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 3, 224, 224)).astype(np.float32)
    audio = rng.uniform(-1.5, 0, (3, 1, 257, 299)).astype(np.float32)
    stats = compare_engines(TorchEngine(tiny_export.checkpoint_path), OnnxRuntimeEngine(path), image, audio, batch_size=3)
    assert stats["samples"] == 3 and stats["max_abs"] <= 1e-5


def test_manifest_fields(tiny_export, tiny_checkpoint):
    m = tiny_export.manifest
    assert m["model"]["width"] == 4
    assert m["checkpoint"]["path"] == str(tiny_checkpoint)
    art = m["artifacts"]["onnx_fp32"]
    assert [i["name"] for i in art["inputs"]] == ["image", "audio"] and art["outputs"][0]["shape"] == [None, 1, 14, 14]
    assert m["preprocess"]["audio"]["spectrogram_shape"] == [257, 299]
    assert {"torch", "onnx", "onnxruntime", "numpy"} <= set(m["versions"])
    assert m["parity"]["onnx_fp32_vs_torch_fp32"]["max_abs"] <= 1e-5


def test_interrupted_export_leaves_nothing(tmp_path, tiny_checkpoint, monkeypatch):
    import sslrt.export.onnx as exp
    from sslrt.export import export_checkpoint

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(exp, "try_simplify", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(str(tiny_checkpoint), str(out))
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no staging folder left behind either


def test_reexport_replaces_files_manifest_last(tmp_path, tiny_checkpoint):
    from sslrt.export import export_checkpoint

    out = tmp_path / "out"
    first = export_checkpoint(str(tiny_checkpoint), str(out), simplify=False)
    second = export_checkpoint(str(tiny_checkpoint), str(out), simplify=True)
    assert read_export(str(out)).manifest["created"] == second.manifest["created"]
    files = sorted(a["file"] for a in second.artifacts.values())
    assert files == ["sslrt.onnx", "sslrt_fp32_audio.onnx", "sslrt_fp32_vision.onnx"]
    assert sorted(os.listdir(out)) == sorted(files + ["manifest.json"])
    assert first.directory == second.directory


def test_tampered_export_is_refused(tmp_path, tiny_export, media, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_export.directory, copy)
    # A file is hashed when it is loaded: `sslrt run` loads the encoder graphs, `bench` and
    # reuse_embeddings=False the fused one. Tampering either is refused by the run that loads it.
    for graph_file, extra in (("sslrt_fp32_audio.onnx", []), ("sslrt.onnx", ["--no-reuse-embeddings"])):
        with open(copy / graph_file, "r+b") as f:  # same size, different bytes
            f.seek(1000)
            f.write(b"\x00\x01\x02\x03")
        code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "--model", copy, *extra], capsys)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "does not match its manifest" in err and "sha256" in err
        shutil.copyfile(os.path.join(tiny_export.directory, graph_file), copy / graph_file)
    (copy / "sslrt.onnx").write_bytes(b"short")
    with pytest.raises(SslrtError, match="bytes"):
        read_export(str(copy))
    (copy / "manifest.json").unlink()
    with pytest.raises(SslrtError, match="no manifest.json"):
        read_export(str(copy))


def test_export_cli(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "cli_export"
    code, stdout, err = run_cli(["export", tiny_checkpoint, "-o", out, "--json"], capsys)
    assert code == 0, err
    manifest = json.loads(stdout)
    assert manifest["artifacts"]["onnx_fp32"]["file"] == "sslrt.onnx" and (out / "sslrt.onnx").is_file()


def test_export_of_a_foreign_file_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    code, out, err = run_cli(["export", bad, "-o", tmp_path / "o"], capsys)
    assert code == 2 and err.startswith("error: not a PyTorch checkpoint") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
