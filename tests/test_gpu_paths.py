"""sslrt's own decisions on the GPU paths, checked without a GPU (issue 15): what it asks ONNX
Runtime's providers for, when a provider counts as available, when a CUDA graph is captured or
replayed, how a TensorRT engine is built (Polygraphy loaders: strongly typed, TF32 off, the graph
of the precision, a profile for every input), which versions the install sets pin, and that the
GPU test path needs no soundfile. Nothing here stands in for TensorRT or CUDA: where a probe is
injected, what is tested is sslrt's decision given its answer; the real TensorRT API is checked
against the binding wheels in test_tensorrt_api.py, the real runs are the `gpu` tests."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "sslrt" / "assets" / "demo" / "export"
FUSED_INPUTS = [{"name": "image", "shape": [None, 3, 224, 224], "dtype": "float32"},
                {"name": "audio", "shape": [None, 1, 257, 299], "dtype": "float32"}]


# -- ONNX Runtime provider options ----------------------------------------------------------------
def _options(providers, name):
    return next(p[1] for p in providers if isinstance(p, tuple) and p[0] == name)


@pytest.mark.parametrize("backend", ["onnxruntime-cuda", "onnxruntime-trt"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_provider_runs_with_tf32_off(backend, precision):
    from sslrt.engines.onnxruntime import providers_for

    assert _options(providers_for(backend, precision), "CUDAExecutionProvider")["use_tf32"] in ("0", 0, False)


def test_tensorrt_provider_cache_folder_is_created(tmp_path, monkeypatch):
    from sslrt.engines.onnxruntime import providers_for

    monkeypatch.setenv("SSLRT_CACHE_DIR", str(tmp_path / "fresh" / "cache"))  # nothing of it exists yet
    options = _options(providers_for("onnxruntime-trt", "fp16"), "TensorrtExecutionProvider")
    assert options["trt_engine_cache_enable"] and os.path.isdir(options["trt_engine_cache_path"])
    assert Path(options["trt_engine_cache_path"]).is_relative_to(tmp_path)


def test_tensorrt_provider_gets_profile_shapes_for_every_input():
    from sslrt.engines.onnxruntime import OnnxRuntimeEngine, providers_for
    from sslrt.export.tensorrt import BatchProfile

    options = _options(providers_for("onnxruntime-trt", "fp32", inputs=FUSED_INPUTS, profile=BatchProfile(1, 8, 32)),
                       "TensorrtExecutionProvider")
    assert options["trt_profile_min_shapes"] == "image:1x3x224x224,audio:1x1x257x299"
    assert options["trt_profile_opt_shapes"] == "image:8x3x224x224,audio:8x1x257x299"
    assert options["trt_profile_max_shapes"] == "image:32x3x224x224,audio:32x1x257x299"
    vision = _options(providers_for("onnxruntime-trt", "fp32", inputs=FUSED_INPUTS[:1]), "TensorrtExecutionProvider")
    assert vision["trt_profile_max_shapes"] == "image:32x3x224x224"  # an encoder graph: its own input only
    # batches beyond the profile's max are split by the engine
    engine = OnnxRuntimeEngine("unused.onnx", providers=providers_for("onnxruntime-trt", "fp32", inputs=FUSED_INPUTS))
    assert engine.max_batch == 32


# -- availability by loading ----------------------------------------------------------------------
def test_a_provider_counts_only_if_its_library_loads():
    """ONNX Runtime lists compiled-in providers; the TensorRT one of onnxruntime-gpu links
    libnvinfer.so.10 and is not available where that does not load."""
    from sslrt.engines.onnxruntime import gpu_backend_status

    compiled = {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
    errors = {"TensorrtExecutionProvider": "libnvinfer.so.10: cannot open shared object file: No such file or directory"}
    status = gpu_backend_status(compiled, 1, errors.get)
    assert status["onnxruntime-cuda"] is None
    assert "libnvinfer.so.10" in status["onnxruntime-trt"]
    assert set(gpu_backend_status(compiled, 0, errors.get).values()) == {"no CUDA GPU found"}
    assert "not in this ONNX Runtime" in gpu_backend_status({"CUDAExecutionProvider"}, 1, errors.get)["onnxruntime-trt"]


def test_library_load_probe_loads_for_real():
    import ctypes.util

    from sslrt.engines.onnxruntime import library_load_error, provider_load_error

    assert library_load_error(ctypes.util.find_library("c") or "libc.so.6") is None
    assert "libsslrt_missing.so" in library_load_error("/nonexistent/libsslrt_missing.so")
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        assert "not compiled into" in provider_load_error("TensorrtExecutionProvider")


def test_available_backends_agree_with_the_load_probe():
    from sslrt.engines import available_backends
    from sslrt.engines.onnxruntime import provider_load_error

    available = available_backends()
    for backend, provider in (("onnxruntime-cuda", "CUDAExecutionProvider"), ("onnxruntime-trt", "TensorrtExecutionProvider")):
        if provider_load_error(provider) is not None:
            assert backend not in available


def test_a_cudart_error_falls_back_to_the_driver():
    """cuda-python built for a newer CUDA than the driver fails (cudaErrorInsufficientDriver): that
    is not "no GPU"; the driver API decides."""
    from sslrt.engines.cuda import probe

    got = probe(cudart_count=lambda: (None, "cudaErrorInsufficientDriver"), driver_count=lambda: (2, 12040))
    assert (got.devices, got.via, got.cudart_error, got.driver_version) == (2, "driver", "cudaErrorInsufficientDriver", 12040)
    assert probe(cudart_count=lambda: (1, None), driver_count=lambda: (0, None)).via == "cudart"
    assert probe(cudart_count=lambda: (None, "ImportError"), driver_count=lambda: (0, None)).devices == 0


def test_the_driver_probe_runs_here():
    from sslrt.engines.cuda import driver_device_count, probe

    devices, version = driver_device_count()  # the real libcuda, where there is one
    assert devices >= 0 and (version is None or version >= 1000)
    assert probe().devices >= 0


# -- CUDA graphs: one per batch size -------------------------------------------------------------
def test_cuda_graph_cache_captures_per_batch_size():
    from sslrt.engines.cuda import CudaGraphCache

    cache, actions = CudaGraphCache(), []
    for batch in (4, 3, 4, 3, 8, 4):
        action = cache.action(batch)
        actions.append(action)
        if action == "capture":
            assert cache.put(batch, f"graph{batch}") == []
        assert cache.get(batch) == f"graph{batch}"  # never another size's graph
    assert actions == ["capture", "capture", "replay", "replay", "capture", "replay"]


def test_cuda_graph_cache_evicts_the_least_recently_used():
    from sslrt.engines.cuda import CudaGraphCache

    cache = CudaGraphCache(max_graphs=2)
    cache.put(4, "g4")
    cache.put(3, "g3")
    cache.get(4)
    assert cache.put(8, "g8") == ["g3"]  # freed by the caller
    assert cache.action(3) == "capture" and cache.action(4) == "replay" and len(cache) == 2
    assert sorted(cache.clear()) == ["g4", "g8"] and len(cache) == 0


def test_both_cuda_graph_engines_keep_a_graph_per_batch_size():
    from sslrt.engines.cuda import CudaGraphCache
    from sslrt.engines.tensorrt import TensorRTEngine
    from sslrt.engines.torch import TorchEngine

    trt_engine = TensorRTEngine("x.engine", {"precision": "fp16", "profile": {"min": 1, "opt": 4, "max": 8}}, cuda_graph=True)
    torch_engine = TorchEngine("x.pth.tar", precision="fp16", device="cuda", cuda_graph=True)  # not loaded: no GPU needed
    assert isinstance(trt_engine._graphs, CudaGraphCache) and isinstance(torch_engine._graphs, CudaGraphCache)


# -- IO binding (the CUDA provider's path, run here on the CPU device) -----------------------------
def test_io_binding_gives_the_plain_results_across_batch_changes():
    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.export.onnx import parity_inputs

    image, _, _ = parity_inputs(n=11, seed=5)
    plain = OnnxRuntimeEngine(str(DEMO / "sslrt_fp32_vision.onnx"))
    bound = OnnxRuntimeEngine(str(DEMO / "sslrt_fp32_vision.onnx"), io_binding=True)
    split = OnnxRuntimeEngine(str(DEMO / "sslrt_fp32_vision.onnx"), io_binding=True, max_batch=3)
    kept = []
    for lo, hi in ((0, 4), (4, 7), (7, 11)):  # batch 4, 3, 4: a buffer set per batch size
        feeds = {"image": image[lo:hi]}
        want = plain.run(feeds)["image_embedding"]
        got = bound.run(feeds)["image_embedding"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        np.testing.assert_allclose(split.run(feeds)["image_embedding"], want, rtol=0, atol=1e-6)
        kept.append((got, want))
    for got, want in kept:  # an earlier result is not overwritten by a later run
        np.testing.assert_array_equal(got, want)
    assert sorted(bound._bound) == [3, 4]


# -- TensorRT engine build on Polygraphy ------------------------------------------------------
@pytest.mark.parametrize("precision,graph,onnx_file,engine_file", [
    ("fp16", "fused", "sslrt_fp16.onnx", "sslrt_fp16.engine"),
    ("fp32", "fused", "sslrt.onnx", "sslrt_fp32.engine"),
    ("fp16", "vision", "sslrt_fp16_vision.onnx", "sslrt_fp16_vision.engine"),
    ("fp32", "audio", "sslrt_fp32_audio.onnx", "sslrt_fp32_audio.engine"),
])
def test_engine_build_is_strongly_typed_from_the_graph_of_its_precision(tmp_path, precision, graph, onnx_file, engine_file):
    pytest.importorskip("polygraphy")
    from sslrt.export.tensorrt import BatchProfile, plan_build, polygraphy_loaders

    inputs = {"fused": FUSED_INPUTS, "vision": FUSED_INPUTS[:1], "audio": FUSED_INPUTS[1:]}[graph]
    plan = plan_build(str(tmp_path), precision, graph, inputs, BatchProfile(1, 4, 8), timing_cache=str(tmp_path / "t.cache"))
    assert Path(plan.onnx_path).name == onnx_file and Path(plan.engine_path).name == engine_file
    network, config, build = polygraphy_loaders(plan)
    assert network.strongly_typed is True and network.path == plan.onnx_path
    assert config.tf32 is False  # "fp32" is fp32; an fp16 engine's fp32 head stays fp32
    # strongly typed: the precision is the graph's, no weakly typed builder flags
    assert not config.fp16 and not config.int8 and config.precision_constraints is None
    (profile,) = config.profiles
    assert sorted(profile.keys()) == sorted(i["name"] for i in inputs)
    for spec in inputs:
        shapes = profile[spec["name"]]
        rest = tuple(spec["shape"][1:])
        assert (tuple(shapes.min), tuple(shapes.opt), tuple(shapes.max)) == ((1, *rest), (4, *rest), (8, *rest))
    assert build.timing_cache_path == str(tmp_path / "t.cache")
    assert config.timing_cache_path is None  # no cache file yet: nothing to load


def test_engine_build_loads_an_existing_timing_cache(tmp_path):
    pytest.importorskip("polygraphy")
    from sslrt.export.tensorrt import plan_build, polygraphy_loaders

    cache = tmp_path / "t.cache"
    cache.write_bytes(b"cache")
    _, config, build = polygraphy_loaders(plan_build(str(tmp_path), "fp16", "fused", FUSED_INPUTS, timing_cache=str(cache)))
    assert config.timing_cache_path == str(cache) and build.timing_cache_path == str(cache)


def test_engine_profile_needs_static_non_batch_axes(tmp_path):
    from sslrt.errors import SslrtError
    from sslrt.export.tensorrt import DEFAULT_PROFILE, input_profile_shapes

    with pytest.raises(SslrtError, match="dynamic axis"):
        input_profile_shapes([{"name": "x", "shape": [None, 3, None]}], DEFAULT_PROFILE)


# -- install sets -----------------------------------------------------------------------------
def _extras():
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["project"]["dependencies"], data["project"]["optional-dependencies"]


def _resolve(extras, name):
    out = []
    for req in extras[name]:
        m = re.fullmatch(r"sslrt\[([\w-]+)\]", req)
        out += _resolve(extras, m.group(1)) if m else [req]
    return out


def _spec(reqs, package):
    found = [r for r in reqs if re.match(rf"{re.escape(package)}(\[[\w,]+\])?\s*[<>=~!]", r)]
    assert len(found) == 1, (package, reqs)
    return found[0]


def _bounds(req):
    lo = re.search(r">=\s*([\d.]+)", req)
    hi = re.search(r"<\s*([\d.]+)", req)
    assert lo and hi, f"{req}: needs a lower and an upper bound"
    return tuple(int(x) for x in lo.group(1).split(".")), tuple(int(x) for x in hi.group(1).split("."))


# onnxruntime-gpu on PyPI: 1.19-1.26 are CUDA 12 builds, 1.27 and later CUDA 13.
ORT_GPU_CUDA13_FROM = (1, 27)


@pytest.mark.parametrize("cuda", [12, 13])
def test_each_cuda_major_installs_a_matched_set(cuda):
    core, extras = _extras()
    assert not any(r.startswith("onnxruntime") for r in core), "onnxruntime comes from exactly one extra"
    gpu = _resolve(extras, f"gpu-cu{cuda}")
    full = _resolve(extras, f"tensorrt-cu{cuda}")
    for reqs in (gpu, full):
        assert not any(re.match(r"onnxruntime\s*[<>=~]", r) for r in reqs), "onnxruntime and onnxruntime-gpu side by side"
        lo, hi = _bounds(_spec(reqs, "onnxruntime-gpu"))
        assert "[cuda,cudnn]" in _spec(reqs, "onnxruntime-gpu")
        if cuda == 12:
            assert hi <= ORT_GPU_CUDA13_FROM
        else:
            assert lo >= ORT_GPU_CUDA13_FROM
    lo, hi = _bounds(_spec(full, "cuda-python"))
    assert lo[0] == cuda and hi == (cuda + 1,)
    lo, hi = _bounds(_spec(full, f"tensorrt-cu{cuda}"))
    # TensorRT 10: the major onnxruntime-gpu's TensorRT provider links (libnvinfer.so.10)
    assert lo[0] == 10 and hi == (11,)
    assert not any(re.match(r"tensorrt(-cu\d+)?\s*[<>=~]", r) and not r.startswith(f"tensorrt-cu{cuda}") for r in full)
    assert any(r.startswith("polygraphy") for r in full)


def test_install_hints_name_sets_that_exist():
    from sslrt.engines import backend_table

    INSTALL_HINTS = {name: row.install_hint for name, row in backend_table().items()}

    _, extras = _extras()
    named = {m for hint in INSTALL_HINTS.values() for m in re.findall(r"sslrt\[([\w-]+)\]", hint)}
    assert named and named <= set(extras), named - set(extras)
    assert "tensorrt-cu12" in INSTALL_HINTS["tensorrt"] and "tensorrt-cu13" in INSTALL_HINTS["tensorrt"]
    assert "uninstall -y onnxruntime" in INSTALL_HINTS["onnxruntime-cuda"]


# -- the GPU test path without soundfile -------------------------------------------------------
BLOCK_SOUNDFILE = r"""
import sys
class _NoSoundfile:
    def find_spec(self, name, path=None, target=None):
        if name == 'soundfile' or name.startswith('soundfile.'):
            raise ImportError('No module named ' + repr(name))
sys.meta_path.insert(0, _NoSoundfile())
"""


def test_parity_inputs_and_gpu_test_imports_need_no_soundfile():
    script = BLOCK_SOUNDFILE + ("sys.path.insert(0, 'tests')\n"
                                "import conftest\n"
                                "from sslrt.export.onnx import parity_inputs\n"
                                "import sslrt.engines, sslrt.engines.torch, sslrt.engines.tensorrt, sslrt.measure.parity, sslrt.measure.comparator\n"
                                "image, audio, _ = parity_inputs(n=2)\n"
                                "print(image.shape[0] + audio.shape[0], 'soundfile' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["4", "False"]


# -- parity through Polygraphy's Comparator -----------------------------------------------------
def test_polygraphy_comparator_parity_on_the_cpu(tiny_export):
    pytest.importorskip("polygraphy")
    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.engines.torch import TorchEngine
    from sslrt.export.onnx import parity_inputs
    from sslrt.measure.comparator import compare_with_polygraphy

    image, audio, _ = parity_inputs(n=6, seed=3)
    fp32 = OnnxRuntimeEngine(tiny_export.artifact_path("onnx_fp32"))
    int8 = OnnxRuntimeEngine(str(DEMO / "sslrt_int8.onnx"), precision="int8")  # another model: must fail the check
    report = compare_with_polygraphy(TorchEngine(tiny_export.checkpoint_path), [fp32], {"image": image, "audio": audio},
                                     batch_size=4, atol=1e-4, rtol=1e-3)
    row = report["sslrt-onnxruntime-fp32"]
    assert row["polygraphy_passed"] is True and row["polygraphy_max_absdiff"] <= 1e-4
    assert row["samples"] == 6 and row["argmax_agreement"] == 1 and row["localization_agreement"] == 1
    assert row["max_abs"] == pytest.approx(row["polygraphy_max_absdiff"], abs=1e-7)
    bad = compare_with_polygraphy(fp32, [int8], {"image": image, "audio": audio}, batch_size=4)["sslrt-onnxruntime-int8"]
    assert bad["polygraphy_passed"] is False and bad["max_abs"] > 1e-4
