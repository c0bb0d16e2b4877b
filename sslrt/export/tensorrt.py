"""ONNX -> TensorRT engines on Polygraphy, for `sslrt export --format tensorrt`.

Each engine is built from the ONNX graph of its precision, strongly typed, on TensorRT 10 and 11
alike: fp32 from the fp32 graph (`sslrt.onnx`, `sslrt_fp32_vision.onnx`, ...), fp16 from the fp16
graph written by `sslrt export --fp16` (`sslrt_fp16.onnx`, `sslrt_fp16_vision.onnx`, ...: fp16
towers, fp32 head, float32 I/O). A strongly typed network computes every tensor in the type the
graph gives it, so the engine's precision is the graph's, and nothing depends on the builder
precision flags (BuilderFlag.FP16, PREFER/OBEY_PRECISION_CONSTRAINTS, ILayer.precision) that
TensorRT 11 removed (weak typing has been deprecated since 10.12). TF32 is off (Polygraphy's
CreateConfig default, tf32=False): "fp32" means fp32, and the fp32 head of an fp16 engine stays fp32.

Polygraphy does the build: NetworkFromOnnxPath(strongly_typed=True), CreateConfig(profiles,
memory_pool_limits, load_timing_cache, tf32=False), EngineBytesFromNetwork(save_timing_cache):
one optimization profile over the batch axis for every input of the graph (names and shapes from
the manifest entry of the graph, not assumed), a workspace limit, and a timing cache that is
loaded before and merged into after every build (so a rebuild, or a build of another checkpoint
of the same architecture, skips most tactic timing).

Profile parsing, the build plan and the Polygraphy loaders are plain Python, usable and testable
without TensorRT (Polygraphy imports TensorRT lazily, when a loader runs).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field

from sslrt.errors import SslrtError

ENGINE_FILE = "sslrt_{precision}.engine"


def engine_filename(precision: str, graph: str = "fused") -> str:
    """sslrt_fp16.engine (fused), sslrt_fp16_vision.engine, sslrt_fp32_audio.engine, ..."""
    return ENGINE_FILE.format(precision=precision) if graph == "fused" else f"sslrt_{precision}_{graph}.engine"


# The batch profile is shared with the ONNX Runtime TensorRT provider's options: it lives with the engines.
from sslrt.engines.base import DEFAULT_PROFILE, BatchProfile, parse_profile  # noqa: E402,F401


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def default_timing_cache(tensorrt_version: str, gpu_name: str) -> str:
    """One timing cache per TensorRT version and GPU model (a cache is only valid for both)."""
    from sslrt.store.cache import cache_root

    return str(cache_root() / "tensorrt" / f"timing-trt{_slug(tensorrt_version)}-{_slug(gpu_name)}.cache")


def input_profile_shapes(inputs: list, profile: BatchProfile) -> dict[str, tuple[tuple, tuple, tuple]]:
    """(min, opt, max) shape of every input: the batch axis (None / a name / -1 in `inputs`, the
    manifest entry's list of {"name", "shape"}) over the profile, the other axes as the graph has them."""
    out = {}
    for spec in inputs:
        name, shape = (spec["name"], spec["shape"]) if isinstance(spec, dict) else (spec.name, spec.shape)
        rest = tuple(shape[1:])
        if not all(isinstance(d, int) and d > 0 for d in rest):
            raise SslrtError(f"input '{name}' has a dynamic axis besides the batch ({list(shape)}): cannot build a profile")
        out[name] = tuple((b, *rest) for b in (profile.min, profile.opt, profile.max))
    if not out:
        raise SslrtError("the graph has no inputs to build a TensorRT profile for")
    return out


@dataclass(frozen=True)
class BuildPlan:
    """What one engine build does (checked by tests without TensorRT)."""

    onnx_path: str  # the ONNX graph of `precision`
    engine_path: str
    precision: str
    graph: str
    shapes: dict = field(default_factory=dict)  # input -> (min, opt, max) shapes
    workspace_bytes: int | None = None
    timing_cache: str | None = None
    strongly_typed: bool = True  # the only typing TensorRT 11 has
    tf32: bool = False


def plan_build(directory: str, precision: str, graph: str, inputs: list, profile: BatchProfile = DEFAULT_PROFILE,
               workspace_mib: int | None = None, timing_cache: str | None = None) -> BuildPlan:
    """The build of the `graph` engine of `precision` from the export in `directory`: from the
    ONNX graph of the same precision (fp16 engines from the fp16 graph), strongly typed, TF32 off."""
    from sslrt.export.onnx import onnx_filename

    if precision not in ("fp16", "fp32"):
        raise SslrtError(f"TensorRT precision must be fp16 or fp32, not {precision}")
    if workspace_mib is not None and workspace_mib < 1:
        raise SslrtError("--workspace must be >= 1 MiB")
    onnx_path = os.path.join(directory, onnx_filename(precision, graph))
    return BuildPlan(onnx_path=onnx_path, engine_path=os.path.join(directory, engine_filename(precision, graph)),
                     precision=precision, graph=graph, shapes=input_profile_shapes(inputs, profile),
                     workspace_bytes=None if workspace_mib is None else int(workspace_mib) << 20,
                     timing_cache=timing_cache)


@contextlib.contextmanager
def quiet_polygraphy():
    """Polygraphy logs to stdout (which belongs to the user's JSON): warnings and worse only, to stderr."""
    from polygraphy.logger import G_LOGGER

    with contextlib.redirect_stdout(sys.stderr), G_LOGGER.verbosity(G_LOGGER.WARNING):
        yield


def polygraphy_loaders(plan: BuildPlan):
    """(network, config, build) Polygraphy loaders of a plan; lazy: nothing runs (or needs
    TensorRT) until `build()` is called, except a workspace limit, whose key is a TensorRT enum."""
    try:
        from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile
    except ImportError:
        from sslrt.engines.tensorrt import INSTALL

        raise SslrtError(f"--format tensorrt needs Polygraphy: {INSTALL}") from None
    with quiet_polygraphy():
        profile = Profile()
        for name, (lo, opt, hi) in plan.shapes.items():
            profile.add(name, min=lo, opt=opt, max=hi)
        limits = None
        if plan.workspace_bytes is not None:
            from polygraphy.mod.trt_importer import lazy_import_trt

            limits = {lazy_import_trt().MemoryPoolType.WORKSPACE: plan.workspace_bytes}
        cache = plan.timing_cache if plan.timing_cache and os.path.isfile(plan.timing_cache) else None
        network = NetworkFromOnnxPath(plan.onnx_path, strongly_typed=plan.strongly_typed)
        config = CreateConfig(profiles=[profile], tf32=plan.tf32, memory_pool_limits=limits, load_timing_cache=cache)
        build = EngineBytesFromNetwork(network, config=config, save_timing_cache=plan.timing_cache)
    return network, config, build


def build_engine(plan: BuildPlan, progress=None) -> dict:
    """Build and serialize the engine of `plan`; returns what the manifest records about it."""
    from sslrt.engines.tensorrt import device_info, import_cudart, import_tensorrt

    step = progress or (lambda msg: None)
    trt = import_tensorrt()
    import_cudart()
    gpu = device_info()
    if not os.path.isfile(plan.onnx_path):
        raise SslrtError(f"{plan.onnx_path} is missing: the {plan.precision} TensorRT engine is built from the {plan.precision} ONNX graph")
    if plan.timing_cache is None:
        plan = BuildPlan(**{**plan.__dict__, "timing_cache": default_timing_cache(trt.__version__, gpu["name"])})
    os.makedirs(os.path.dirname(os.path.abspath(plan.timing_cache)), exist_ok=True)
    reused = os.path.isfile(plan.timing_cache) and os.path.getsize(plan.timing_cache) > 0
    _, _, build = polygraphy_loaders(plan)

    from polygraphy.exception import PolygraphyException

    profile = ", ".join(f"{n} {lo[0]}:{opt[0]}:{hi[0]}" for n, (lo, opt, hi) in plan.shapes.items())
    step(f"building TensorRT {plan.precision} engine ({plan.graph} graph, batch {profile}) on {gpu['name']}")
    t0 = time.perf_counter()
    try:
        with quiet_polygraphy():
            serialized = build()
    except PolygraphyException as exc:
        raise SslrtError(f"TensorRT could not build the {plan.graph} engine from {os.path.basename(plan.onnx_path)}: "
                         f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else 'see the log above'}") from None
    seconds = time.perf_counter() - t0
    with open(plan.engine_path, "wb") as f:
        f.write(serialized)
    first = next(iter(plan.shapes.values()))
    return {
        "backend": "tensorrt",
        "precision": plan.precision,
        "graph": plan.graph,
        "built_from": os.path.basename(plan.onnx_path),
        "strongly_typed": plan.strongly_typed,
        "tf32": plan.tf32,
        "tensorrt_version": trt.__version__,
        "gpu": gpu,
        "profile": {"min": first[0][0], "opt": first[1][0], "max": first[2][0]},
        "profile_shapes": {n: [list(s) for s in v] for n, v in plan.shapes.items()},
        "workspace_mib": None if plan.workspace_bytes is None else plan.workspace_bytes >> 20,
        "timing_cache": {"path": plan.timing_cache, "reused": bool(reused)},
        "build_seconds": round(seconds, 1),
    }
