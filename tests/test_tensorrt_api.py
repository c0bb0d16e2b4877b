"""Every TensorRT name sslrt uses, and that the Polygraphy calls it makes use, exists in the
TensorRT 10 and 11 Python bindings, checked without TensorRT or a GPU.

The API lists in tests/data/tensorrt_api_*.txt are dir() of the real binding wheels from PyPI
(tensorrt-cu12-bindings 10.9 and 10.16, tensorrt-cu13-bindings 11.4; wheel file and sha256 in each
header), extracted by tools/extract_tensorrt_api.py. sslrt's side is read from its own source
with `ast`: attribute chains on the TensorRT module (`trt.BuilderFlag.TF32`, `getattr(trt.X, "Y")`)
and attributes of the TensorRT objects its TensorRT modules hold (`self._engine` is an ICudaEngine,
`context` an IExecutionContext, ...). TensorRT 11 dropped the weakly typed build API
(BuilderFlag.FP16/INT8, PREFER/OBEY_PRECISION_CONSTRAINTS, ILayer.precision), which is what this
catches before a GPU machine does.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
API_FILES = sorted(DATA.glob("tensorrt_api_*.txt"))

# Variables (or self attributes) that hold TensorRT objects in sslrt's TensorRT modules -> class.
TRT_OBJECTS = {
    "_engine": "ICudaEngine",
    "_context": "IExecutionContext", "context": "IExecutionContext",
    "_runtime": "Runtime", "runtime": "Runtime",
    "builder": "Builder", "network": "INetworkDefinition", "parser": "OnnxParser", "config": "IBuilderConfig",
    "layer": "ILayer", "opt_profile": "IOptimizationProfile", "cache": "ITimingCache",
}
# Calls that return the tensorrt module.
TRT_MODULE_CALLS = {"import_tensorrt", "lazy_import_trt"}

# What the Polygraphy loaders sslrt builds with (export/tensorrt.py: NetworkFromOnnxPath(strongly_typed=True),
# CreateConfig(profiles, tf32=False, memory_pool_limits, load_timing_cache), EngineBytesFromNetwork(save_timing_cache))
# touch in TensorRT without an AttributeError fallback, read from polygraphy 0.53.6
# (backend/trt/loader.py, config.py, profile.py, util.py).
POLYGRAPHY_USES = [
    # util.get_trt_logger
    "ILogger", "Logger.INTERNAL_ERROR", "Logger.ERROR", "Logger.WARNING", "Logger.INFO", "Logger.VERBOSE",
    # loader.CreateNetwork / NetworkFromOnnxPath
    "Builder", "Builder.create_network", "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "INetworkDefinition",
    "init_libnvinfer_plugins", "OnnxParser", "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error",
    # config.CreateConfig (profiles, memory pools, timing cache, tf32=False)
    "Builder.create_builder_config", "IBuilderConfig.add_optimization_profile", "Builder.create_optimization_profile",
    "IOptimizationProfile", "IOptimizationProfile.set_shape", "INetworkDefinition.num_inputs", "INetworkDefinition.get_input",
    "ITensor.name", "ITensor.shape", "ITensor.is_shape_tensor", "LayerType", "IBuilderConfig.set_memory_pool_limit",
    "MemoryPoolType.WORKSPACE", "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache",
    "IBuilderConfig.clear_flag", "BuilderFlag.TF32", "ProfilingVerbosity.DETAILED", "IBuilderConfig.profiling_verbosity",
    # util.str_from_config (evaluated for the build's log line)
    "IBuilderConfig.DLA_core", "IBuilderConfig.default_device_type", "DeviceType.DLA", "BuilderFlag", "IBuilderConfig.get_flag",
    "IBuilderConfig.num_optimization_profiles",
    # loader.EngineBytesFromNetwork (build, merge and save the timing cache)
    "Builder.build_serialized_network", "IBuilderConfig.get_timing_cache", "ITimingCache.combine", "ITimingCache.serialize",
]


def load_api(path: Path) -> tuple[dict, set[str]]:
    header, names = {}, set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            m = re.match(r"# (wheel|sha256): (\S+)", line)
            if m:
                header[m.group(1)] = m.group(2)
            m = re.search(r"version (\S+)$", line)
            if m:
                header["version"] = m.group(1)
        elif line.strip():
            names.add(line.strip())
    return header, names


def _root_is_trt(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "trt"
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr == "_trt"
    if isinstance(node, ast.Call):
        f = node.func
        return (isinstance(f, ast.Name) and f.id in TRT_MODULE_CALLS) or (isinstance(f, ast.Attribute) and f.attr in TRT_MODULE_CALLS)
    return False


def _chain(node: ast.AST) -> list[str] | None:
    """['BuilderFlag', 'TF32'] for trt.BuilderFlag.TF32, None where the chain is not rooted at the module."""
    parts = []
    while isinstance(node, ast.Attribute):
        if _root_is_trt(node.value):
            return [node.attr, *parts]
        parts.insert(0, node.attr)
        node = node.value
    return None


def _object_class(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return TRT_OBJECTS.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return TRT_OBJECTS.get(node.attr)
    return None


def tensorrt_names_used(source: str) -> set[str]:
    """TensorRT names a module's source uses (nothing where it never touches the tensorrt module)."""
    tree = ast.parse(source)
    # only modules that hold the tensorrt module (`trt = ...`, `import tensorrt as trt`, `self._trt = ...`)
    # hold TensorRT objects; elsewhere `engine`, `config`, ... are sslrt's own
    if not any((isinstance(n, ast.Name) and n.id == "trt") or (isinstance(n, ast.Attribute) and n.attr == "_trt")
               for n in ast.walk(tree)):
        return set()
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain:
                used.add(".".join(chain[:2]))  # Class.member is as deep as the lists go
                continue
            cls = _object_class(node.value)
            if cls:
                used.add(f"{cls}.{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            target = node.args[0]
            chain = _chain(target) if isinstance(target, ast.Attribute) else None
            if _root_is_trt(target):
                used.add(node.args[1].value)
            elif chain and len(chain) == 1:
                used.add(f"{chain[0]}.{node.args[1].value}")
            elif _object_class(target):
                used.add(f"{_object_class(target)}.{node.args[1].value}")
    return used


def sslrt_tensorrt_names() -> dict[str, set[str]]:
    out = {}
    for path in sorted((REPO / "sslrt").rglob("*.py")):
        names = tensorrt_names_used(path.read_text())
        if names:
            out[str(path.relative_to(REPO))] = names
    return out


def test_the_api_lists_are_the_real_10_and_11_bindings():
    assert len(API_FILES) >= 2
    majors = set()
    for path in API_FILES:
        header, names = load_api(path)
        assert re.fullmatch(r"[0-9a-f]{64}", header.get("sha256", "")), path
        assert header["wheel"].startswith(("tensorrt_cu12_bindings-", "tensorrt_cu13_bindings-")) and header["version"] in header["wheel"]
        assert len(names) > 1500 and {"Builder", "ICudaEngine.create_execution_context", "nptype", "__version__"} <= names
        majors.add(header["version"].split(".")[0])
    assert {"10", "11"} <= majors


def test_the_scanner_sees_what_sslrt_uses():
    used = set().union(*sslrt_tensorrt_names().values())
    # the runtime adapter and the builder both show up (a scanner that finds nothing checks nothing)
    assert {"IExecutionContext.execute_async_v3", "ICudaEngine.get_tensor_name", "TensorIOMode.INPUT", "nptype",
            "Runtime.deserialize_cuda_engine", "ExecutionContextAllocationStrategy.USER_MANAGED"} <= used


def test_the_scanner_catches_the_weakly_typed_build_api():
    """The pre-Polygraphy builder of sslrt used names that TensorRT 11 removed."""
    old = ("def build(trt, builder, network):\n"
           "    config = builder.create_builder_config()\n"
           "    config.set_flag(trt.BuilderFlag.FP16)\n"
           "    flag = getattr(trt.BuilderFlag, 'PREFER_PRECISION_CONSTRAINTS', None)\n"
           "    layer = network.get_layer(0)\n"
           "    layer.precision = trt.float32\n")
    used = tensorrt_names_used(old)
    assert {"BuilderFlag.FP16", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS", "ILayer.precision"} <= used
    _, api11 = load_api(DATA / "tensorrt_api_11.4.txt")
    _, api10 = load_api(DATA / "tensorrt_api_10.16.txt")
    assert {"BuilderFlag.FP16", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS", "ILayer.precision"} <= api10
    assert not ({"BuilderFlag.FP16", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS", "ILayer.precision"} & api11)


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_every_tensorrt_name_sslrt_uses_exists(api_file):
    header, api = load_api(api_file)
    missing = {f"{file}: {name}" for file, names in sslrt_tensorrt_names().items() for name in names if name not in api}
    assert not missing, f"not in TensorRT {header['version']}: {sorted(missing)}"


@pytest.mark.parametrize("api_file", API_FILES, ids=lambda p: p.stem)
def test_every_tensorrt_name_of_the_polygraphy_calls_exists(api_file):
    header, api = load_api(api_file)
    missing = [name for name in POLYGRAPHY_USES if name not in api]
    assert not missing, f"Polygraphy's build path needs {missing}, not in TensorRT {header['version']}"
