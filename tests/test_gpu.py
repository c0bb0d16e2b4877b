"""GPU / TensorRT features: what can be checked on any machine runs everywhere (profile parsing,
the manifest compatibility check, backend selection, the fp16 ONNX graph on the CPU provider, the
comparator); what needs a GPU or TensorRT carries the `gpu` / `tensorrt` marker and skips, with
the reason, where they are absent. Nothing here mocks TensorRT or CUDA."""
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from sslrt.errors import BackendUnavailable, SslrtError
from test_runtime_without_torch import BLOCK_TORCH


def _has(mod):
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def _cuda_gpus():
    from sslrt.engines import cuda_device_count

    return cuda_device_count()


def _torch_cuda():
    if not _has("torch"):
        return False
    import torch

    return torch.cuda.is_available()


needs_torch_cuda = pytest.mark.skipif(not _torch_cuda(), reason="no CUDA GPU visible to torch (torch.cuda.is_available() is False)")
def _tensorrt_ready():
    if not (_has("tensorrt") and (_has("cuda.bindings") or _has("cuda.cudart")) and _has("polygraphy")):
        return False
    from sslrt.engines.tensorrt import load_error

    return load_error() is None


needs_tensorrt = pytest.mark.skipif(not _tensorrt_ready(), reason="TensorRT, cuda-python, Polygraphy or a CUDA GPU is absent (or does not load)")


def _ort_cuda():
    if not _has("onnxruntime"):
        return False
    from sslrt.engines.onnxruntime import available_gpu_backends

    return "onnxruntime-cuda" in available_gpu_backends()  # compiled in, its library loads, and a GPU


needs_ort_cuda = pytest.mark.skipif(not _ort_cuda(), reason="onnxruntime-gpu (CUDAExecutionProvider that loads) or a CUDA GPU is absent")


def _inputs(n=6, seed=0):
    from sslrt.export.onnx import parity_inputs

    image, audio, _ = parity_inputs(n=n, seed=seed)
    return image, audio


@pytest.fixture(scope="session")
def tiny_export_fp16(tmp_path_factory, tiny_checkpoint):
    from sslrt.export import export_checkpoint

    return export_checkpoint(str(tiny_checkpoint), str(tmp_path_factory.mktemp("exports") / "tiny16"), targets=["onnx_fp16"])


# -- TensorRT batch profile -----------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [("1:8:64", (1, 8, 64)), ("4", (4, 4, 4)), (" 2:2:2 ", (2, 2, 2)), (None, (1, 8, 32))])
def test_profile_parsing(text, expected):
    from sslrt.export.tensorrt import parse_profile

    p = parse_profile(text)
    assert (p.min, p.opt, p.max) == expected and p.to_dict() == dict(zip(("min", "opt", "max"), expected))


@pytest.mark.parametrize("text", ["", "1:8", "8:1:64", "1:8:4", "0:1:2", "a:b:c", "1:8:64:128", "-1:2:3", "1.5:2:3", "1:2:99999"])
def test_bad_profiles_are_user_errors(text):
    from sslrt.export.tensorrt import parse_profile

    with pytest.raises(SslrtError, match="--batch"):
        parse_profile(text)


def test_bad_profile_on_the_cli_exits_2(tiny_checkpoint, tmp_path, capsys):
    code, out, err = run_cli(["export", tiny_checkpoint, "-o", tmp_path / "x", "--format", "tensorrt", "--batch", "8:1:2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--batch" in err and not (tmp_path / "x").exists()


# -- manifest compatibility check of a TensorRT engine --------------------------------------
ENTRY = {"file": "sslrt_fp16.engine", "backend": "tensorrt", "precision": "fp16", "tensorrt_version": "10.3.0",
         "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, "profile": {"min": 1, "opt": 8, "max": 32}}


def test_engine_of_this_trt_and_gpu_is_accepted():
    from sslrt.engines.tensorrt import check_engine_compatibility

    check_engine_compatibility(ENTRY, "10.3.0", {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})


@pytest.mark.parametrize("version,gpu,what", [
    ("10.4.0", {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}, "TensorRT 10.3.0"),
    ("10.3.0", {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}, "NVIDIA H100"),
    ("10.3.0", {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.1"}, "sm 9.0"),
])
def test_engine_of_another_trt_or_gpu_is_refused_with_reexport(version, gpu, what):
    from sslrt.engines.tensorrt import check_engine_compatibility

    with pytest.raises(SslrtError) as info:
        check_engine_compatibility(ENTRY, version, gpu)
    msg = str(info.value)
    assert "\n" not in msg and what in msg and "re-export" in msg and "--format tensorrt" in msg


def test_engine_entry_without_build_info_is_refused():
    from sslrt.engines.tensorrt import check_engine_compatibility

    with pytest.raises(SslrtError, match="re-export"):
        check_engine_compatibility({"file": "x.engine"}, "10.3.0", {"name": "g", "compute_capability": "9.0"})


# -- backend selection ------------------------------------------------------------------------
@pytest.mark.parametrize("available,artifacts,precision,expected", [
    ({"onnxruntime"}, {"onnx_fp32"}, None, ("onnxruntime", "fp32")),
    ({"onnxruntime", "onnxruntime-cuda"}, {"onnx_fp32"}, None, ("onnxruntime-cuda", "fp32")),
    ({"onnxruntime", "onnxruntime-cuda", "tensorrt"}, {"onnx_fp32", "tensorrt_fp16"}, None, ("tensorrt", "fp16")),
    ({"onnxruntime", "tensorrt"}, {"onnx_fp32", "tensorrt_fp32", "tensorrt_fp16"}, None, ("tensorrt", "fp16")),
    ({"onnxruntime", "tensorrt"}, {"onnx_fp32", "tensorrt_fp32", "tensorrt_fp16"}, "fp32", ("tensorrt", "fp32")),
    # TensorRT installed but the export holds no engine: the next best
    ({"onnxruntime", "onnxruntime-cuda", "tensorrt"}, {"onnx_fp32"}, None, ("onnxruntime-cuda", "fp32")),
    # an engine in the export but no TensorRT here (e.g. copied to a CPU machine)
    ({"onnxruntime"}, {"onnx_fp32", "tensorrt_fp16"}, None, ("onnxruntime", "fp32")),
    ({"onnxruntime"}, {"onnx_fp32", "onnx_fp16"}, "fp16", ("onnxruntime", "fp16")),
    ({"onnxruntime", "onnxruntime-cuda"}, {"onnx_fp32", "onnx_fp16"}, "fp16", ("onnxruntime-cuda", "fp16")),
    # torch is never auto's choice
    ({"onnxruntime", "torch", "torch-cuda"}, {"onnx_fp32"}, None, ("onnxruntime", "fp32")),
])
def test_choose_backend(available, artifacts, precision, expected):
    from sslrt.engines import choose_backend

    assert choose_backend(available, artifacts, precision) == expected


def test_choose_backend_explains_what_is_missing():
    from sslrt.engines import choose_backend

    with pytest.raises(SslrtError, match="re-export with --precision fp16"):
        choose_backend({"onnxruntime"}, {"onnx_fp32"}, "fp16")
    with pytest.raises(BackendUnavailable, match="pip install"):
        choose_backend(set(), {"onnx_fp32"}, None)


def test_auto_says_what_it_chose(tiny_export, media, capsys):
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory, "--backend", "auto", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert "backend auto: chose" in err and result["backend"] in err
    # on a CPU-only machine the choice is ONNX Runtime CPU fp32
    from sslrt.engines import available_backends

    if available_backends() == {"onnxruntime"}:
        assert (result["backend"], result["precision"]) == ("onnxruntime", "fp32")


@pytest.mark.parametrize("backend,hint", [("tensorrt", "pip install 'sslrt[tensorrt-cu12]'"), ("onnxruntime-cuda", "pip install 'sslrt[gpu-cu12]'"),
                                          ("onnxruntime-trt", "pip install 'sslrt[tensorrt-cu12]'"), ("torch-cuda", "pip install")])
def test_absent_backend_says_what_to_install(backend, hint, tiny_export, media, capsys):
    from sslrt.engines import available_backends

    if backend in available_backends(include_torch=backend.startswith("torch")):
        pytest.skip(f"{backend} is installed here")
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory, "--backend", backend], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and hint in err


def test_tensorrt_backend_on_an_export_without_engine_says_reexport(tiny_export, media, capsys):
    if not (_has("tensorrt") and _cuda_gpus()):
        pytest.skip("needs TensorRT to get past the install check")
    code, _, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export.directory, "--backend", "tensorrt"], capsys)
    assert code == 2 and "--format tensorrt" in err


def test_export_tensorrt_without_tensorrt_exits_2_with_install_hint(tiny_checkpoint, tmp_path, capsys):
    if _has("tensorrt") and _cuda_gpus():
        pytest.skip("TensorRT and a GPU are present here")
    out_dir = tmp_path / "trt"
    code, out, err = run_cli(["export", tiny_checkpoint, "-o", out_dir, "--format", "tensorrt", "--fp16", "--batch", "1:8:64"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "pip install 'sslrt[tensorrt-cu12]'" in err or "CUDA GPU" in err
    assert not out_dir.exists()  # refused before any work


def test_tensorrt_options_need_format_tensorrt(tiny_checkpoint, tmp_path, capsys):
    code, _, err = run_cli(["export", tiny_checkpoint, "-o", tmp_path / "x", "--workspace", "512"], capsys)
    assert code == 2 and "--format tensorrt" in err


def test_tensorrt_modules_import_no_torch():
    script = BLOCK_TORCH + ("import sslrt.engines.tensorrt, sslrt.export.tensorrt, sslrt.engines\n"
                            "sslrt.engines.available_backends()\n"
                            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# -- fp16 ONNX on the CPU provider ------------------------------------------------------------
def test_fp16_onnx_keeps_float32_io_and_is_recorded(tiny_export_fp16):
    import onnx

    m = tiny_export_fp16.manifest
    art = m["artifacts"]["onnx_fp16"]
    assert art["precision"] == "fp16" and art["io_dtype"] == "float32" and art["file"] == "sslrt_fp16.onnx"
    model = onnx.load(tiny_export_fp16.artifact_path("onnx_fp16"))
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32, f32]
    assert model.graph.output[0].type.tensor_type.elem_type == f32
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)  # the weights are fp16
    parity = m["parity"]["onnx_fp16_vs_torch_fp32"]
    assert parity["within_budget"] is True and parity["provider"] == "CPUExecutionProvider"


def test_fp16_conversion_keeps_one_of_repeated_casts():
    """onnxruntime's fp16 converter before 1.32 writes one Cast(fp32) per kept-fp32 consumer of an
    fp16 tensor, all to the same name (seen with onnxruntime-gpu 1.31.1 on an H100 machine): the
    graph is repaired to one Cast, and two different nodes writing one tensor are refused."""
    import onnx
    from onnx import TensorProto, helper

    from sslrt.export.fp16 import _drop_repeated_nodes

    def cast():
        return helper.make_node("Cast", ["h"], ["h_cast_to_fp32"], to=TensorProto.FLOAT, name="h_cast_to_fp32_node")

    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"), cast(),
             helper.make_node("ReduceL2", ["h_cast_to_fp32"], ["n"], keepdims=1, name="norm"), cast(),
             helper.make_node("Div", ["h_cast_to_fp32", "n"], ["y"], name="div")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnx.checker.ValidationError, match="single static assignment"):
        onnx.checker.check_model(model)
    _drop_repeated_nodes(model.graph)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Relu", "Cast", "ReduceL2", "Div"]

    model.graph.node[3].CopyFrom(helper.make_node("Cast", ["x"], ["h_cast_to_fp32"], to=TensorProto.FLOAT))
    model.graph.node.append(cast())
    with pytest.raises(SslrtError, match="twice, from different nodes"):
        _drop_repeated_nodes(model.graph)


def test_fp16_onnx_on_cpu_within_the_fp16_budget(tiny_export_fp16):
    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.engines.torch import TorchEngine
    from sslrt.measure.parity import FP16_BUDGET, compare_engines, within_budget

    image, audio = _inputs(8, seed=77)
    fp16 = OnnxRuntimeEngine(tiny_export_fp16.artifact_path("onnx_fp16"), precision="fp16")
    stats = compare_engines(TorchEngine(tiny_export_fp16.checkpoint_path), fp16, image, audio)
    ok, failed = within_budget(stats, FP16_BUDGET)
    assert ok, failed
    assert 0 < stats["max_abs"]  # it really is a different (reduced-precision) computation


def test_fp16_run_through_the_cli(tiny_export_fp16, media, capsys):
    code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "-m", tiny_export_fp16.directory, "--precision", "fp16", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["precision"] == "fp16"


# -- the comparator -----------------------------------------------------------------------------
def test_comparator_report_fields():
    from sslrt.measure.parity import heatmap_agreement, localization_ciou, within_budget

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((5, 1, 14, 14)).astype(np.float32)
    same = heatmap_agreement(ref, ref)
    assert set(same) >= {"samples", "max_abs", "mean_abs", "min_cosine", "mean_cosine", "argmax_agreement",
                         "localization_agreement", "mean_ciou", "min_ciou"}
    assert same["max_abs"] == 0 and same["argmax_agreement"] == 1 and same["localization_agreement"] == 1
    assert same["mean_ciou"] == pytest.approx(1.0) and same["mean_cosine"] == pytest.approx(1.0)
    # a tiny perturbation keeps localization; the opposite map does not
    near = heatmap_agreement(ref, ref + 1e-4 * rng.standard_normal(ref.shape).astype(np.float32))
    assert near["localization_agreement"] == 1 and near["max_abs"] < 1e-3
    flipped = heatmap_agreement(ref, -ref)
    assert flipped["localization_agreement"] == 0 and flipped["min_cosine"] == pytest.approx(-1.0)
    assert within_budget(same)[0] and not within_budget(flipped)[0]
    # an argmax flip between two cells closer than the typical error is a near-tie; a jump to a cold cell is not
    tied = np.zeros((2, 1, 14, 14), np.float32)
    tied[:, 0, 3, 3], tied[:, 0, 9, 9] = 1.0, 1.0 - 1e-5
    candidate = tied + 1e-4 * rng.standard_normal(tied.shape).astype(np.float32)
    candidate[:, 0, 3, 3], candidate[:, 0, 9, 9] = 1.0 - 1e-5, 1.0  # both samples swap their two hottest cells
    candidate[1, 0, 0, 0] = 1.2  # sample 1's peak jumps to a cell that was cold (gap 1.0)
    stats = heatmap_agreement(tied, candidate)
    assert stats["argmax_agreement"] == 0 and stats["argmax_near_ties"] == 1
    assert [m["sample"] for m in stats["argmax_misses"]] == [0, 1]
    assert stats["argmax_misses"][0]["reference_gap"] == pytest.approx(1e-5, rel=0.1)
    assert stats["argmax_misses"][1]["reference_gap"] == pytest.approx(1.0)
    # cIoU of the candidate's mask against the reference's own mask, as the official evaluation computes it
    ciou = localization_ciou(ref, ref[::-1])
    assert ciou.shape == (5,) and ciou[2] == pytest.approx(1.0)


def test_localization_ciou_matches_the_official_formula():
    """A transcription of the official evaluation (upsample, min-max, median threshold, ciou)."""
    import cv2  # noqa: F401  (the official Flickr/IS3 path uses torch's align_corners=True; postprocess matches it)

    from sslrt.measure.parity import localization_ciou
    from sslrt.measure.metrics import minmax_normalize as minmax
    from sslrt.measure.metrics import upsample_heatmap

    def upsample_align_corners(h):
        return upsample_heatmap(h, "bilinear_align_corners")

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 14, 14)).astype(np.float32), rng.standard_normal((2, 14, 14)).astype(np.float32)
    got = localization_ciou(a, b)
    for i in range(2):
        gt_pred = minmax(upsample_align_corners(a[i:i + 1]))[0]
        gt = (gt_pred > np.sort(gt_pred.ravel())[int(224 * 224 * 0.5)]).astype(float)
        pred = minmax(upsample_align_corners(b[i:i + 1]))[0]
        infer = (pred > np.sort(pred.ravel())[int(224 * 224 * 0.5)]).astype(float)
        expected = (infer * gt).sum() / (gt.sum() + (infer * (gt == 0)).sum())
        assert got[i] == pytest.approx(expected)


# -- on a GPU -----------------------------------------------------------------------------------
@pytest.mark.gpu
@needs_torch_cuda
@pytest.mark.parametrize("precision,cuda_graph", [("fp32", False), ("fp16", False), ("fp16", True)])
def test_torch_cuda_parity(tiny_checkpoint, precision, cuda_graph):
    from sslrt.engines.torch import TorchEngine
    from sslrt.measure.parity import FP16_BUDGET, compare_engines, within_budget

    image, audio = _inputs(11)  # batches 4, 4, 3 ...
    cand = TorchEngine(str(tiny_checkpoint), precision=precision, device="cuda", channels_last=True, cuda_graph=cuda_graph)
    assert cand.backend == "torch-cuda"
    ref = TorchEngine(str(tiny_checkpoint))
    stats = compare_engines(ref, cand, image, audio, batch_size=4)
    # ... then 4, 3, 4: a replay after the batch size changed (a graph per batch size)
    mixed = [cand.run({"image": image[a:b], "audio": audio[a:b]})["heatmap"] for a, b in ((0, 4), (4, 7), (0, 4))]
    want = [ref.run({"image": image[a:b], "audio": audio[a:b]})["heatmap"] for a, b in ((0, 4), (4, 7), (0, 4))]
    tol = 1e-4 if precision == "fp32" else FP16_BUDGET["max_abs"]
    assert all(np.abs(m - w).max() <= tol for m, w in zip(mixed, want))
    if cuda_graph:
        assert sorted(cand._graphs._graphs) == [3, 4]
    if precision == "fp32":
        assert stats["max_abs"] <= 1e-4
    else:
        assert within_budget(stats, FP16_BUDGET)[0], stats


@pytest.mark.gpu
@needs_ort_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnxruntime_cuda_parity(tiny_export_fp16, precision):
    from sslrt.engines import create_engine
    from sslrt.engines.torch import TorchEngine
    from sslrt.resolve import resolve_model
    from sslrt.measure.parity import FP16_BUDGET, compare_engines, within_budget

    image, audio = _inputs(8)
    engine = create_engine("onnxruntime-cuda", resolve_model(tiny_export_fp16.directory), precision=precision)
    assert engine.device == "cuda" and engine._io_binding is True
    stats = compare_engines(TorchEngine(tiny_export_fp16.checkpoint_path), engine, image, audio)
    assert stats["max_abs"] <= 1e-4 if precision == "fp32" else within_budget(stats, FP16_BUDGET)[0]


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_tensorrt_build_run_and_parity(tiny_checkpoint, tmp_path, capsys, precision):
    from sslrt.engines import create_engine
    from sslrt.engines.torch import TorchEngine
    from sslrt.store.manifest import read_export
    from sslrt.resolve import resolve_model
    from sslrt.measure.parity import FP16_BUDGET, compare_engines, within_budget

    cache = tmp_path / "timing.cache"
    out = tmp_path / "trt"
    code, _, err = run_cli(["export", tiny_checkpoint, "-o", out, "--format", "tensorrt", "--precision", precision, "--batch", "1:4:8",
                            "--timing-cache", cache, "--workspace", "1024"], capsys)
    assert code == 0, err
    entry = read_export(str(out)).artifacts[f"tensorrt_{precision}"]
    assert entry["profile"] == {"min": 1, "opt": 4, "max": 8} and entry["gpu"]["compute_capability"] and entry["tensorrt_version"]
    assert cache.is_file() and cache.stat().st_size > 0
    assert entry["strongly_typed"] is True and entry["tf32"] is False
    assert entry["built_from"] == ("sslrt.onnx" if precision == "fp32" else "sslrt_fp16.onnx")
    artifacts = read_export(str(out)).artifacts
    assert {f"tensorrt_{precision}_vision", f"tensorrt_{precision}_audio"} <= set(artifacts)  # the encoders too
    image, audio = _inputs(11)  # 11 > max batch 8: the adapter splits it
    reference = TorchEngine(str(tiny_checkpoint))
    for cuda_graph in (False, True):
        engine = create_engine("tensorrt", resolve_model(str(out)), precision=precision, cuda_graph=cuda_graph)
        stats = compare_engines(reference, engine, image, audio, batch_size=4)
        assert stats["max_abs"] <= 1e-3 if precision == "fp32" else within_budget(stats, FP16_BUDGET)[0], stats
        # 4, 3, 4: the second 4 replays the batch-4 graph after a batch-3 one ran
        tol = 1e-3 if precision == "fp32" else FP16_BUDGET["max_abs"]
        for a, b in ((0, 4), (4, 7), (0, 4)):
            feeds = {"image": image[a:b], "audio": audio[a:b]}
            assert np.abs(engine.run(feeds)["heatmap"] - reference.run(feeds)["heatmap"]).max() <= tol
        engine.close()
    for graph, name in (("vision", "image"), ("audio", "audio")):  # encoder engines: not named image+audio
        engine = create_engine("tensorrt", resolve_model(str(out)), precision=precision, graph=graph)
        assert [s.name for s in engine.inputs] == [name]
        engine.close()
    # a rebuild reuses the timing cache
    code, _, err = run_cli(["export", tiny_checkpoint, "-o", out, "--format", "tensorrt", "--precision", precision,
                            "--timing-cache", cache], capsys)
    assert code == 0, err
    assert read_export(str(out)).artifacts[f"tensorrt_{precision}"]["timing_cache"]["reused"] is True


def test_network_head_is_the_forward_tail(tiny_checkpoint):
    """torch-cuda fp16 runs the towers under autocast and `head` in fp32: head must be forward's tail."""
    import torch

    from sslrt.model import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    image, audio = (torch.from_numpy(x) for x in _inputs(2))
    with torch.no_grad():
        assert torch.equal(model.head(model.imgnet(image), model.audnet(audio)), model(image, audio))
