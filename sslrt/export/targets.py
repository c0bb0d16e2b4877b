"""The export targets, one table (cf. Ultralytics' export_formats()): each row is what one
artifact family is (format, precision, graphs), what it needs, and the builder that writes it.

`export_checkpoint` loads the checkpoint once, runs the builder of every selected row in table
order inside one staging folder (published atomically, manifest last) and records each
artifact with its parity against the PyTorch reference. Adding an export target = one builder
function plus its row.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.export.onnx import DEFAULT_OPSET, library_versions, max_opset, onnx_filename, parity_inputs, require_export_deps
from sslrt.graphs import GRAPH_IO, GRAPHS, INPUT_AUDIO, INPUT_IMAGE, OUTPUT_AUDIO_EMBEDDING, OUTPUT_HEATMAP, \
    OUTPUT_IMAGE_EMBEDDING, artifact_key, cosine_map
from sslrt.store.atomic import staging_dir, write_json_atomic
from sslrt.store.manifest import FORMAT, FORMAT_VERSION, MANIFEST, ExportedModel, artifact_entry, read_export, sha256_file

# Generated calibration pairs for INT8, added to the user's own (--calibration-pairs).
CALIBRATION_PAIRS = 16


@dataclass
class ExportContext:
    """What the builders share: the staging folder, the loaded network and its reference engine,
    the parity inputs, the options, and what has been written so far."""

    stage: str
    model: object  # the torch network
    spec: object  # sslrt.spec.ModelSpec
    checkpoint: str
    reference: object  # TorchEngine on `model`
    image: np.ndarray
    audio: np.ndarray
    parity_source: list[str]
    graphs: tuple[str, ...]
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    calibration_pairs: list | None = None
    batch: object = None  # TensorRT BatchProfile
    workspace_mib: int | None = None
    timing_cache: str | None = None
    step: Callable[[str], None] = lambda msg: None
    artifacts: dict = field(default_factory=dict)
    parity: dict = field(default_factory=dict)

    def path(self, filename: str) -> str:
        return os.path.join(self.stage, filename)


@dataclass(frozen=True)
class ExportTarget:
    key: str  # the manifest key of its fused artifact (encoder artifacts add _vision / _audio)
    format: str  # "onnx" | "tensorrt"
    precision: str
    graphs: str  # which graphs it writes, in words
    requires: tuple[str, ...]  # Python modules that must import (plus "cuda" for a GPU)
    builder: Callable[[ExportContext], None]
    after: tuple[str, ...] = ()  # targets it builds from (selected with it)
    description: str = ""

    def missing(self) -> list[str]:
        """What this machine lacks for this target (empty: available)."""
        out = []
        for module in self.requires:
            if module == "cuda":
                from sslrt.engines import cuda_device_count

                if cuda_device_count() < 1:
                    out.append("a CUDA GPU")
            else:
                try:
                    found = importlib.util.find_spec(module) is not None
                except (ImportError, ValueError):
                    found = False
                if not found:
                    out.append(module)
        return out


# -- builders -----------------------------------------------------------------------------------
def _io_specs(engine) -> dict:
    return {"inputs": [s.to_dict() for s in engine.inputs], "outputs": [s.to_dict() for s in engine.outputs]}


def build_onnx_fp32(ctx: ExportContext) -> None:
    """The fp32 graphs (fused, and the encoders), their parity against the PyTorch reference."""
    import onnx

    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.export.onnx import export_graph, try_simplify
    from sslrt.measure.parity import compare_engines, heatmap_agreement

    feeds = {INPUT_IMAGE: ctx.image[:2], INPUT_AUDIO: ctx.audio[:2]}
    engines = {}
    for graph in ctx.graphs:
        filename = onnx_filename("fp32", graph)
        ctx.step(f"exporting ONNX ({graph} graph)")
        export_graph(ctx.model, ctx.path(filename), ctx.opset, ctx.spec, graph)
        onnx.checker.check_model(ctx.path(filename))
        simplified = ctx.simplify and try_simplify(ctx.path(filename), {k: feeds[k] for k in GRAPH_IO[graph][0]})
        engines[graph] = engine = OnnxRuntimeEngine(ctx.path(filename))
        ctx.artifacts[artifact_key("onnx", "fp32", graph)] = artifact_entry(
            ctx.stage, filename, backend="onnxruntime", precision="fp32", graph=graph, opset=ctx.opset, simplified=simplified,
            **_io_specs(engine))
    ctx.step("measuring parity against the PyTorch reference")
    ctx.parity["onnx_fp32_vs_torch_fp32"] = compare_engines(ctx.reference, engines["fused"], ctx.image, ctx.audio) \
        | {"inputs": ctx.parity_source}
    if {"vision", "audio"} <= set(engines):
        v = engines["vision"].run({INPUT_IMAGE: ctx.image})[OUTPUT_IMAGE_EMBEDDING]
        a = engines["audio"].run({INPUT_AUDIO: ctx.audio})[OUTPUT_AUDIO_EMBEDDING]
        ref = ctx.reference.run({INPUT_IMAGE: ctx.image, INPUT_AUDIO: ctx.audio})[OUTPUT_HEATMAP]
        ctx.parity["onnx_fp32_encoders_vs_torch_fp32"] = heatmap_agreement(ref, cosine_map(v, a, ctx.spec.heatmap_scale)) \
            | {"inputs": ctx.parity_source}
    for engine in engines.values():
        engine.close()


def build_onnx_fp16(ctx: ExportContext) -> None:
    """Every graph with fp16 towers and an fp32 head, float32 I/O (the TensorRT fp16 engines are
    built from these, strongly typed)."""
    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.export.fp16 import FP16_KEEP_FP32_OPS, convert_fp16
    from sslrt.measure.parity import compare_engines

    for graph in ctx.graphs:
        ctx.step(f"converting to fp16 ONNX ({graph} graph)")
        name = onnx_filename("fp16", graph)
        convert_fp16(ctx.path(onnx_filename("fp32", graph)), ctx.path(name))
        engine = OnnxRuntimeEngine(ctx.path(name), precision="fp16")
        ctx.artifacts[artifact_key("onnx", "fp16", graph)] = artifact_entry(
            ctx.stage, name, backend="onnxruntime", precision="fp16", graph=graph, opset=ctx.opset, io_dtype="float32",
            converted_from=onnx_filename("fp32", graph), kept_fp32_ops=FP16_KEEP_FP32_OPS, **_io_specs(engine))
        if graph == "fused":
            ctx.parity["onnx_fp16_vs_torch_fp32"] = p16 = compare_engines(ctx.reference, engine, ctx.image, ctx.audio)
            p16["inputs"] = ctx.parity_source
            p16["provider"] = "CPUExecutionProvider"
            _check_budget(p16, "onnx_fp16", "fp16")
        engine.close()


def build_onnx_int8(ctx: ExportContext) -> None:
    """Every fp32 graph quantized (QDQ, per-channel int8 weights, uint8 activations) for CPU."""
    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.export.int8 import quantize_graph
    from sslrt.measure.parity import compare_engines

    cal_image, cal_audio, cal_source = parity_inputs(ctx.spec, n=CALIBRATION_PAIRS, seed=97)
    if ctx.calibration_pairs:
        user_image, user_audio, user_source = parity_inputs(ctx.spec, pairs=ctx.calibration_pairs)
        cal_image, cal_audio = np.concatenate([user_image, cal_image]), np.concatenate([user_audio, cal_audio])
        cal_source = user_source + cal_source
    feeds = {INPUT_IMAGE: cal_image, INPUT_AUDIO: cal_audio}
    for graph in ctx.graphs:
        ctx.step(f"quantizing to INT8 ({graph} graph)")
        names = GRAPH_IO[graph][0]
        batches = [{n: feeds[n][i:i + 1] for n in names} for i in range(len(cal_image))]
        filename = onnx_filename("int8", graph)
        quantize_graph(ctx.path(onnx_filename("fp32", graph)), ctx.path(filename), batches)
        engine = OnnxRuntimeEngine(ctx.path(filename), precision="int8")
        ctx.artifacts[artifact_key("onnx", "int8", graph)] = artifact_entry(
            ctx.stage, filename, backend="onnxruntime", precision="int8", graph=graph, opset=ctx.opset,
            calibration=cal_source, **_io_specs(engine))
        if graph == "fused":
            fp32 = OnnxRuntimeEngine(ctx.path(onnx_filename("fp32", "fused")))
            ctx.parity["onnx_int8_vs_onnx_fp32"] = compare_engines(fp32, engine, ctx.image, ctx.audio) | {"inputs": ctx.parity_source}
            fp32.close()
        engine.close()


def _build_tensorrt(ctx: ExportContext, precision: str) -> None:
    """A TensorRT engine of `precision` for every exported graph (the encoders too, so embedding
    reuse works on TensorRT), each built strongly typed from the ONNX graph of that precision."""
    from sslrt.engines.tensorrt import TensorRTEngine
    from sslrt.export.tensorrt import build_engine, engine_filename, plan_build
    from sslrt.measure.parity import compare_engines, heatmap_agreement

    engines = {}
    for graph in ctx.graphs:
        source = ctx.artifacts[artifact_key("onnx", precision, graph)]
        plan = plan_build(ctx.stage, precision, graph, source["inputs"], ctx.batch, ctx.workspace_mib, ctx.timing_cache)
        info = build_engine(plan, progress=ctx.step)
        key = artifact_key("tensorrt", precision, graph)
        ctx.artifacts[key] = artifact_entry(ctx.stage, engine_filename(precision, graph), inputs=source["inputs"],
                                            outputs=source["outputs"], **info)
        engines[graph] = TensorRTEngine(ctx.path(engine_filename(precision, graph)), ctx.artifacts[key])
    ctx.step("measuring TensorRT parity against the PyTorch reference")
    key = f"tensorrt_{precision}"
    ctx.parity[f"{key}_vs_torch_fp32"] = pt = compare_engines(ctx.reference, engines["fused"], ctx.image, ctx.audio)
    pt["inputs"] = ctx.parity_source
    _check_budget(pt, key, precision)
    if {"vision", "audio"} <= set(engines):
        v = engines["vision"].run({INPUT_IMAGE: ctx.image})[OUTPUT_IMAGE_EMBEDDING]
        a = engines["audio"].run({INPUT_AUDIO: ctx.audio})[OUTPUT_AUDIO_EMBEDDING]
        ref = ctx.reference.run({INPUT_IMAGE: ctx.image, INPUT_AUDIO: ctx.audio})[OUTPUT_HEATMAP]
        ctx.parity[f"{key}_encoders_vs_torch_fp32"] = pe = heatmap_agreement(ref, cosine_map(v, a, ctx.spec.heatmap_scale)) \
            | {"inputs": ctx.parity_source}
        _check_budget(pe, f"{key} encoders", precision)
    for engine in engines.values():
        engine.close()


def build_tensorrt_fp16(ctx: ExportContext) -> None:
    _build_tensorrt(ctx, "fp16")


def build_tensorrt_fp32(ctx: ExportContext) -> None:
    _build_tensorrt(ctx, "fp32")


def _check_budget(parity: dict, key: str, precision: str) -> None:
    """Record whether a reduced-precision artifact meets the fp16 budget; warn where it does not."""
    from sslrt.measure.parity import FP16_BUDGET, within_budget

    if precision == "fp32":
        return
    ok, failed = within_budget(parity, FP16_BUDGET)
    parity["budget"] = dict(FP16_BUDGET)
    parity["within_budget"] = ok
    if not ok:
        warnings.warn(f"{key} is outside the fp16 parity budget against PyTorch fp32: {'; '.join(failed)}")


_TORCH = ("torch", "onnx")
_TRT = ("torch", "onnx", "tensorrt", "polygraphy", "cuda")
EXPORT_TARGETS: tuple[ExportTarget, ...] = (
    ExportTarget("onnx_fp32", "onnx", "fp32", "fused + vision + audio encoders", _TORCH, build_onnx_fp32,
                 description="always written: the reference graphs every other target starts from"),
    ExportTarget("onnx_fp16", "onnx", "fp16", "fused + vision + audio encoders", (*_TORCH, "onnxruntime"), build_onnx_fp16,
                 description="fp16 towers, fp32 head, float32 I/O (GPU providers; runs on CPU too)"),
    ExportTarget("onnx_int8", "onnx", "int8", "fused + vision + audio encoders", (*_TORCH, "onnxruntime.quantization"),
                 build_onnx_int8, description="static QDQ quantization for CPU (--int8)"),
    ExportTarget("tensorrt_fp16", "tensorrt", "fp16", "fused + vision + audio encoders", _TRT, build_tensorrt_fp16,
                 after=("onnx_fp16",), description="TensorRT engines for this machine's GPU, strongly typed from the fp16 "
                                                   "graphs on Polygraphy (--format tensorrt --fp16)"),
    ExportTarget("tensorrt_fp32", "tensorrt", "fp32", "fused + vision + audio encoders", _TRT, build_tensorrt_fp32,
                 description="TensorRT engines, TF32 off (--format tensorrt)"),
)
TARGETS_BY_KEY = {t.key: t for t in EXPORT_TARGETS}
FORMATS = ("onnx", "tensorrt")


def preprocessing_summary(spec) -> dict:
    """The transforms in words and numbers, for a person reading the manifest (the runtime reads `spec`)."""
    a = spec.audio
    return {"image": {"size": [spec.image.size, spec.image.size], "resize": f"{spec.image.resize}, align_corners=False, no antialias",
                      "mean": list(spec.image.mean), "std": list(spec.image.std), "channel_order": "RGB"},
            "audio": {"sample_rate": a.sample_rate, "reader": a.reader, "clip_seconds": a.clip_seconds, "segment": a.segment,
                      "crop": list(a.crop) if a.crop else None, "spectrogram": a.spectrogram, "n_fft": a.n_fft, "hop": a.hop,
                      "log": a.log, "spectrogram_shape": list(a.shape[1:])}}


def select_targets(fmt: str = "onnx", precision: str = "fp32", int8: bool = False) -> list[str]:
    """The CLI's --format / --precision (--fp16) / --int8 -> target keys, in table order."""
    if fmt not in FORMATS:
        raise SslrtError(f"unknown export format '{fmt}' (choose from: {', '.join(FORMATS)})")
    if precision not in ("fp32", "fp16"):
        raise SslrtError(f"unknown precision '{precision}' (choose from: fp32, fp16)")
    keys = {"onnx_fp32"}
    if int8:
        keys.add("onnx_int8")
    if precision == "fp16":
        keys.add("onnx_fp16")
    if fmt == "tensorrt":
        keys.add(f"tensorrt_{precision}")
    return [t.key for t in EXPORT_TARGETS if t.key in keys]


def targets_table() -> list[dict]:
    """The table with what this machine has, for `sslrt export --list`."""
    return [{"key": t.key, "format": t.format, "precision": t.precision, "graphs": t.graphs,
             "available": not t.missing(), "missing": t.missing(), "description": t.description} for t in EXPORT_TARGETS]


def _check_output(checkpoint: str, out_dir: str) -> None:
    """The export directory may be new or an earlier export, never a file (the checkpoint included)."""
    if not os.path.isfile(checkpoint):
        raise SslrtError(f"checkpoint not found: {checkpoint}")
    if os.path.exists(out_dir) and os.path.realpath(out_dir) == os.path.realpath(checkpoint):
        raise SslrtError(f"the export directory cannot be the checkpoint itself: {out_dir}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SslrtError(f"the export directory {out_dir} is a file: give a folder (-o)")
    parent = os.path.dirname(os.path.abspath(out_dir))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise SslrtError(f"cannot create the export directory {out_dir}: {parent} is a file")


def export_checkpoint(checkpoint: str, out_dir: str, targets: list[str] | None = None, opset: int = DEFAULT_OPSET,
                      simplify: bool = True, parity_pairs: list[tuple[str, str]] | None = None, encoders: bool = True,
                      calibration_pairs: list[tuple[str, str]] | None = None, progress=None, batch=None,
                      workspace_mib: int | None = None, timing_cache: str | None = None,
                      family: str | None = None) -> ExportedModel:
    """Export `checkpoint` to `out_dir` (created or updated atomically) and return it, validated.

    `targets`: keys of EXPORT_TARGETS (default: onnx_fp32, which every export has); see
    `select_targets` for the CLI's flags. `encoders` adds the vision and audio graphs that let the
    runtime reuse an image's or a sound's embedding. TensorRT targets take the batch profile
    `batch` (a BatchProfile, default 1:8:32), `workspace_mib` and the timing-cache file.
    """
    keys = list(dict.fromkeys(["onnx_fp32", *(targets or [])]))
    unknown = [k for k in keys if k not in TARGETS_BY_KEY]
    if unknown:
        raise SslrtError(f"unknown export target(s) {unknown} (known: {', '.join(TARGETS_BY_KEY)})")
    keys += [dep for k in keys for dep in TARGETS_BY_KEY[k].after]  # what a target builds from
    selected = [t for t in EXPORT_TARGETS if t.key in keys]
    if not any(t.format == "tensorrt" for t in selected) and (batch is not None or workspace_mib is not None
                                                               or timing_cache is not None):
        raise SslrtError("--batch, --workspace and --timing-cache apply to --format tensorrt")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise SslrtError(f"opset {opset} is too old: sslrt exports opset >= 17")
    if opset > max_opset():
        raise SslrtError(f"opset {opset} is newer than this exporter writes (17 to {max_opset()})")
    _check_output(checkpoint, out_dir)
    for target in selected:  # fail before the slow work
        if target.format == "tensorrt":
            from sslrt.engines.tensorrt import INSTALL, load_error

            why = load_error()  # TensorRT's libraries load, cuda-python sees a GPU
            if why is not None:
                raise BackendUnavailable(why if "pip install" in why else
                                         f"--format tensorrt needs a CUDA GPU on the machine that builds the engine ({why})")
        missing = [m for m in target.missing() if m not in ("torch", "onnx")]
        if missing:
            hint = ""
            if target.format == "tensorrt":
                hint = f": {INSTALL}"  # imported above with load_error
            raise BackendUnavailable(f"export target {target.key} needs {', '.join(missing)} on this machine{hint}")
    if any(t.format == "tensorrt" for t in selected):
        from sslrt.export.tensorrt import DEFAULT_PROFILE

        batch = batch or DEFAULT_PROFILE
    require_export_deps()
    from sslrt.engines.torch import TorchEngine
    from sslrt.model import load_family_checkpoint

    step = progress or (lambda msg: None)
    checkpoint = os.path.abspath(checkpoint)
    step("loading checkpoint")
    model, cfg, spec, info = load_family_checkpoint(checkpoint, family)
    ckpt_sha = sha256_file(checkpoint)
    image, audio, parity_source = parity_inputs(spec, pairs=parity_pairs)
    with staging_dir(out_dir) as stage:
        ctx = ExportContext(stage=stage, model=model, spec=spec, checkpoint=checkpoint,
                            reference=TorchEngine.from_model(model, checkpoint, spec=spec), image=image, audio=audio,
                            parity_source=parity_source, graphs=GRAPHS if encoders else ("fused",), opset=opset,
                            simplify=simplify, calibration_pairs=calibration_pairs, batch=batch,
                            workspace_mib=workspace_mib, timing_cache=timing_cache, step=step)
        for target in selected:
            target.builder(ctx)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": {"path": checkpoint, "sha256": ckpt_sha, "bytes": os.path.getsize(checkpoint)},
            "family": spec.name,
            "checkpoint_reading": {"family_detected": info.detected, "entry": info.entry, "prefix": info.prefix,
                                   "ignored": list(info.ignored), "unexpected": list(info.unexpected),
                                   "metadata": info.metadata},
            "spec": spec.to_dict(),
            "preprocess": preprocessing_summary(spec),
            "model": cfg.to_dict() | {"params": int(sum(p.numel() for p in model.parameters()))},
            "targets": [t.key for t in selected],
            "artifacts": ctx.artifacts,
            "parity": ctx.parity,
            "versions": library_versions(),
        }
        write_json_atomic(os.path.join(stage, MANIFEST), manifest)
    return read_export(out_dir)  # sizes checked; the files were hashed as they were written
