"""PyTorch checkpoint -> ONNX export directory (needs torch and onnx).

One fused graph: image (B,3,224,224), audio (B,1,257,299) -> heatmap (B,1,14,14), batch dynamic.
The export is checked (onnx.checker), simplified only where the simplified graph still matches
the unsimplified one, and its parity against the PyTorch reference is measured and recorded.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
import platform
import warnings

import numpy as np

from sslrt import __version__
from sslrt.config import (
    IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD, INPUT_AUDIO, INPUT_IMAGE, OUTPUT_AUDIO_EMBEDDING, OUTPUT_HEATMAP,
    OUTPUT_IMAGE_EMBEDDING, SPEC_SHAPE,
    CLIP_SECONDS, CROP_START, CROP_STOP, LOG_EPS, LOG_SCALE, NOVERLAP, NPERSEG, SAMPLE_RATE,
)
from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.export.atomic import staging_dir, write_json_atomic
from sslrt.export.manifest import FORMAT, FORMAT_VERSION, MANIFEST, artifact_entry, read_export, sha256_file

DEFAULT_OPSET = 17
FORMATS = ("onnx", "tensorrt")
# fp16 covers the two ResNet towers (all but ~0.01% of the FLOPs); the head after them stays fp32:
# the L2 norms (a sum of 512 squared activations can overflow fp16's 65504), their 1e-12 floor (0
# in fp16) and the cosine map itself (in fp16 a heatmap value near 0.5 is quantized to 2.4e-4
# steps, coarser than the gap between the two hottest cells of a flat map, so the peak would move).
FP16_TOWERS = ("/imgnet/", "/audnet/")
FP16_KEEP_FP32_OPS = ["ReduceL2", "Clip", "Div", "MatMul"]
# The simplified graph must agree with the plain export this closely, or the plain one is kept.
SIMPLIFY_TOLERANCE = 1e-5
# Generated calibration pairs for INT8, added to the user's own (--calibration-pairs).
CALIBRATION_PAIRS = 16


def preprocessing_settings() -> dict:
    return {
        "image": {"size": [IMAGE_SIZE, IMAGE_SIZE], "resize": "bicubic, align_corners=False, no antialias",
                  "mean": list(IMAGE_MEAN), "std": list(IMAGE_STD), "channel_order": "RGB"},
        "audio": {"sample_rate": SAMPLE_RATE, "clip_seconds": CLIP_SECONDS, "crop": [CROP_START, CROP_STOP],
                  "nperseg": NPERSEG, "noverlap": NOVERLAP, "log_eps": LOG_EPS, "log_scale": LOG_SCALE,
                  "spectrogram_shape": list(SPEC_SHAPE)},
    }


def _require_export_deps():
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"export needs torch and onnx ({exc.name} is missing): "
                                 "pip install torch==2.13.0 && pip install 'sslrt[export]'") from None


def parity_inputs(n: int = 4, seed: int = 1234, pairs: list[tuple[str, str]] | None = None):
    """Model inputs for the export-time parity check: the user's pairs if given, else generated ones."""
    from sslrt.preprocess import audio_to_spectrogram, image_to_tensor, load_image, spectrogram_from_waveform
    from sslrt.runtime.generated import generated_image, generated_waveform

    if pairs:
        images = [image_to_tensor(load_image(i)) for i, _ in pairs]
        audios = [audio_to_spectrogram(a) for _, a in pairs]
        source = [f"{os.path.basename(i)} + {os.path.basename(a)}" for i, a in pairs]
    else:
        images = [image_to_tensor(generated_image(seed + k)) for k in range(n)]
        audios = [spectrogram_from_waveform(generated_waveform(seed + k)) for k in range(n)]
        source = [f"generated pairs (seed {seed}, n={n})"]
    return np.stack(images), np.stack(audios), source


def _export_graph(model, path: str, opset: int, graph: str = "fused") -> None:
    import torch

    from sslrt.graphs import GRAPH_IO, INPUT_SHAPES
    from sslrt.model.network import graph_module

    inputs, outputs = GRAPH_IO[graph]
    dummies = tuple(torch.zeros(2, *INPUT_SHAPES[name]) for name in inputs)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: fast, quiet, and gives the plain Conv/Relu/MatMul graph that
        # ONNX Runtime and TensorRT both optimise best.
        torch.onnx.export(graph_module(model, graph), dummies, path, input_names=list(inputs),
                          output_names=list(outputs), opset_version=opset, dynamo=False,
                          dynamic_axes={name: batch for name in (*inputs, *outputs)})


def _try_simplify(path: str, feeds: dict[str, np.ndarray]) -> bool:
    """Replace `path` by its onnxslim-simplified graph if that graph gives the same outputs."""
    try:
        import onnxslim
    except ImportError:
        return False
    from sslrt.engines.onnxruntime import OnnxRuntimeEngine

    slim_path = path + ".slim.onnx"
    try:
        # onnxslim prints a summary table on stdout, which belongs to the user's JSON.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            onnxslim.slim(path, slim_path)
        plain, slim = OnnxRuntimeEngine(path).run(feeds), OnnxRuntimeEngine(slim_path).run(feeds)
        if any(np.abs(plain[k] - slim[k]).max() > SIMPLIFY_TOLERANCE for k in plain):
            return False
        os.replace(slim_path, path)
        return True
    except Exception:  # a simplifier failure only costs the simplification
        return False
    finally:
        if os.path.exists(slim_path):
            os.unlink(slim_path)


def onnx_filename(precision: str, graph: str) -> str:
    return "sslrt.onnx" if (precision, graph) == ("fp32", "fused") else f"sslrt_{precision}_{graph}.onnx".replace("_fused", "")


def convert_fp16(src: str, dst: str) -> None:
    """fp16 copy of an ONNX graph whose inputs and outputs stay float32 (keep_io_types), so every
    engine is fed and read in float32 whatever its precision."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16  # ships inside onnxruntime
    except ImportError:
        try:
            from onnxconverter_common.float16 import convert_float_to_float16
        except ImportError:
            raise BackendUnavailable("fp16 export needs onnxruntime's transformers tools or onnxconverter-common: "
                                     "pip install onnxconverter-common") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "values truncated to fp16 range" notices of tiny weights
        model = onnx.load(src)
        head = [n.name for n in model.graph.node if not n.name.startswith(FP16_TOWERS)]
        towers = len(model.graph.node) - len(head)
        # By node name where the exporter's scope names survive, else by op type.
        model = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP16_KEEP_FP32_OPS,
                                         node_block_list=head if towers else None)
    _drop_cast_round_trips(model.graph)
    _toposort(model.graph)  # the converter appends its input casts after their consumers
    onnx.save(model, dst)
    onnx.checker.check_model(dst)


def _drop_cast_round_trips(graph) -> None:
    """The converter wraps every output of a kept-fp32 node in Cast(fp16) -> Cast(fp32), which
    would round the fp32 head to fp16 after all: make each such fp32 Cast an Identity of the fp32
    tensor before the round trip, and drop the fp16 Casts nobody reads any more."""
    import onnx

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if cast_to(node) == onnx.TensorProto.FLOAT:
            down = producer.get(node.input[0])
            if down is not None and cast_to(down) == onnx.TensorProto.FLOAT16:
                source = down.input[0]
                if source in producer and cast_to(producer[source]) == onnx.TensorProto.FLOAT16:
                    continue  # not an fp32 tensor
                node.op_type = "Identity"
                del node.attribute[:]
                node.input[0] = source
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in graph.node if not (cast_to(n) == onnx.TensorProto.FLOAT16 and not (set(n.output) & read))]
    del graph.node[:]
    graph.node.extend(keep)


def _toposort(graph) -> None:
    """Reorder graph.node so every node comes after the producers of its inputs (stable)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise SslrtError("fp16 conversion produced a graph with a cycle or a dangling input")
        done = {id(n) for n in ready}
        for n in ready:
            known.update(n.output)
        ordered += ready
        pending = [n for n in pending if id(n) not in done]
    del graph.node[:]
    graph.node.extend(ordered)


def library_versions() -> dict:
    import importlib.metadata as md

    out = {"sslrt": __version__, "python": platform.python_version()}
    for name in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "numpy", "scipy", "opencv-python-headless",
                 "soundfile", "tensorrt", "cuda-python", "cuda-bindings"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _add_int8(stage, graphs, artifacts, parity, opset, image, audio, parity_source, calibration_pairs, step) -> None:
    """Quantize every exported graph to INT8 and record its agreement with fp32."""
    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.export.int8 import quantize_graph
    from sslrt.graphs import GRAPH_IO, artifact_key
    from sslrt.parity import compare_engines

    cal_image, cal_audio, cal_source = parity_inputs(n=CALIBRATION_PAIRS, seed=97)
    if calibration_pairs:
        user_image, user_audio, user_source = parity_inputs(pairs=calibration_pairs)
        cal_image, cal_audio = np.concatenate([user_image, cal_image]), np.concatenate([user_audio, cal_audio])
        cal_source = user_source + cal_source
    for graph in graphs:
        step(f"quantizing to INT8 ({graph} graph)")
        names = GRAPH_IO[graph][0]
        feeds = {INPUT_IMAGE: cal_image, INPUT_AUDIO: cal_audio}
        batches = [{n: feeds[n][i:i + 1] for n in names} for i in range(len(cal_image))]
        filename = onnx_filename("int8", graph)
        quantize_graph(os.path.join(stage, onnx_filename("fp32", graph)), os.path.join(stage, filename), batches)
        engine = OnnxRuntimeEngine(os.path.join(stage, filename), precision="int8")
        artifacts[artifact_key("onnx", "int8", graph)] = artifact_entry(
            stage, filename, backend="onnxruntime", precision="int8", graph=graph, opset=opset,
            calibration=cal_source, inputs=[s.to_dict() for s in engine.inputs], outputs=[s.to_dict() for s in engine.outputs])
        if graph == "fused":
            fp32 = OnnxRuntimeEngine(os.path.join(stage, onnx_filename("fp32", "fused")))
            parity["onnx_int8_vs_onnx_fp32"] = compare_engines(fp32, engine, image, audio) | {"inputs": parity_source}
            fp32.close()
        engine.close()


def _add_tensorrt(stage, graphs, artifacts, parity, precision, batch, workspace_mib, timing_cache,
                  reference, image, audio, parity_source, step) -> None:
    """A TensorRT engine of `precision` for every exported graph (the encoders too, so embedding
    reuse works on TensorRT), each from the ONNX graph of that precision, and its parity."""
    from sslrt.engines.tensorrt import TensorRTEngine
    from sslrt.export.tensorrt import build_engine, engine_filename, plan_build
    from sslrt.graphs import artifact_key, cosine_map
    from sslrt.parity import compare_engines, heatmap_agreement

    engines = {}
    for graph in graphs:
        source = artifacts[artifact_key("onnx", precision, graph)]
        plan = plan_build(stage, precision, graph, source["inputs"], batch, workspace_mib, timing_cache)
        info = build_engine(plan, progress=step)
        key = artifact_key("tensorrt", precision, graph)
        artifacts[key] = artifact_entry(stage, engine_filename(precision, graph), inputs=source["inputs"],
                                        outputs=source["outputs"], **info)
        engines[graph] = TensorRTEngine(os.path.join(stage, engine_filename(precision, graph)), artifacts[key])
    step("measuring TensorRT parity against the PyTorch reference")
    key = f"tensorrt_{precision}"
    parity[f"{key}_vs_torch_fp32"] = pt = compare_engines(reference, engines["fused"], image, audio)
    pt["inputs"] = parity_source
    _check_parity(pt, key, precision)
    if "vision" in engines and "audio" in engines:
        v = engines["vision"].run({INPUT_IMAGE: image})[OUTPUT_IMAGE_EMBEDDING]
        a = engines["audio"].run({INPUT_AUDIO: audio})[OUTPUT_AUDIO_EMBEDDING]
        ref = reference.run({INPUT_IMAGE: image, INPUT_AUDIO: audio})[OUTPUT_HEATMAP]
        parity[f"{key}_encoders_vs_torch_fp32"] = pe = heatmap_agreement(ref, cosine_map(v, a)) | {"inputs": parity_source}
        _check_parity(pe, f"{key} encoders", precision)
    for engine in engines.values():
        engine.close()


def _check_parity(parity: dict, key: str, precision: str) -> None:
    """Record whether a reduced-precision artifact meets the fp16 budget; warn where it does not."""
    from sslrt.parity import FP16_BUDGET, within_budget

    if precision == "fp32":
        return
    ok, failed = within_budget(parity, FP16_BUDGET)
    parity["budget"] = dict(FP16_BUDGET)
    parity["within_budget"] = ok
    if not ok:
        warnings.warn(f"{key} is outside the fp16 parity budget against PyTorch fp32: {'; '.join(failed)}")


def export_checkpoint(checkpoint: str, out_dir: str, opset: int = DEFAULT_OPSET, simplify: bool = True,
                      parity_pairs: list[tuple[str, str]] | None = None, encoders: bool = True,
                      int8: bool = False, calibration_pairs: list[tuple[str, str]] | None = None,
                      progress=None, precision: str = "fp32", fmt: str = "onnx", batch=None,
                      workspace_mib: int | None = None, timing_cache: str | None = None) -> "ExportedModel":
    """Export `checkpoint` to `out_dir` (created or updated atomically) and return it, validated.

    Always writes the fp32 fused graph (image, audio -> heatmap, `onnx_fp32`) and, with
    `encoders`, the vision and audio graphs that let the runtime reuse an image's or a sound's
    embedding. `int8` adds INT8 copies of each graph; `precision="fp16"` adds fp16 copies of each
    graph with float32 I/O (`onnx_fp16`, `onnx_fp16_vision`, ...); `fmt="tensorrt"` adds a TensorRT
    engine of `precision` for each graph (`tensorrt_fp16`, `tensorrt_fp16_vision`, ...), built
    strongly typed from the ONNX graph of that precision on this machine's GPU (export/tensorrt.py)
    with the batch profile `batch` (a BatchProfile, default 1:8:32), the `workspace_mib` limit and
    the timing cache file `timing_cache`. Every artifact's parity is measured and recorded.
    """
    if fmt not in FORMATS:
        raise SslrtError(f"unknown export format '{fmt}' (choose from: {', '.join(FORMATS)})")
    if precision not in ("fp32", "fp16"):
        raise SslrtError(f"unknown precision '{precision}' (choose from: fp32, fp16)")
    if fmt != "tensorrt" and (batch is not None or workspace_mib is not None or timing_cache is not None):
        raise SslrtError("--batch, --workspace and --timing-cache apply to --format tensorrt")
    if fmt == "tensorrt":
        # Fail before the slow work: TensorRT, cuda-python and a GPU must all be here.
        from sslrt.engines.tensorrt import INSTALL, load_error
        from sslrt.export.tensorrt import DEFAULT_PROFILE

        why = load_error()  # TensorRT's libraries load, cuda-python sees a GPU
        if why is not None:
            raise BackendUnavailable(why if "pip install" in why else
                                     f"--format tensorrt needs a CUDA GPU on the machine that builds the engine ({why})")
        try:
            import polygraphy  # noqa: F401  (it builds the engines)
        except ImportError:
            raise BackendUnavailable(f"--format tensorrt needs Polygraphy: {INSTALL}") from None
        batch = batch or DEFAULT_PROFILE
    _require_export_deps()
    import onnx

    from sslrt.engines.onnxruntime import OnnxRuntimeEngine
    from sslrt.engines.torch import TorchEngine
    from sslrt.graphs import GRAPH_IO, artifact_key, cosine_map
    from sslrt.model import load_checkpoint
    from sslrt.parity import compare_engines, heatmap_agreement

    step = progress or (lambda msg: None)
    if opset < 17:
        raise SslrtError(f"opset {opset} is too old: sslrt exports opset >= 17")
    checkpoint = os.path.abspath(checkpoint)
    step("loading checkpoint")
    model, cfg = load_checkpoint(checkpoint)
    ckpt_sha = sha256_file(checkpoint)
    image, audio, parity_source = parity_inputs(pairs=parity_pairs)
    feeds = {INPUT_IMAGE: image[:2], INPUT_AUDIO: audio[:2]}
    reference = TorchEngine.from_model(model, checkpoint)
    graphs = ("fused", "vision", "audio") if encoders else ("fused",)

    with staging_dir(out_dir) as stage:
        artifacts, engines = {}, {}
        for graph in graphs:
            filename = onnx_filename("fp32", graph)
            path = os.path.join(stage, filename)
            step(f"exporting ONNX ({graph} graph)")
            _export_graph(model, path, opset, graph)
            onnx.checker.check_model(path)
            inputs = {k: feeds[k] for k in GRAPH_IO[graph][0]}
            simplified = simplify and _try_simplify(path, inputs)
            engines[graph] = engine = OnnxRuntimeEngine(path)
            artifacts[artifact_key("onnx", "fp32", graph)] = artifact_entry(
                stage, filename, backend="onnxruntime", precision="fp32", graph=graph, opset=opset, simplified=simplified,
                inputs=[s.to_dict() for s in engine.inputs], outputs=[s.to_dict() for s in engine.outputs])
        step("measuring parity against the PyTorch reference")
        parity = {"onnx_fp32_vs_torch_fp32": compare_engines(reference, engines["fused"], image, audio) | {"inputs": parity_source}}
        if encoders:
            v = engines["vision"].run({INPUT_IMAGE: image})[OUTPUT_IMAGE_EMBEDDING]
            a = engines["audio"].run({INPUT_AUDIO: audio})[OUTPUT_AUDIO_EMBEDDING]
            ref = reference.run({INPUT_IMAGE: image, INPUT_AUDIO: audio})[OUTPUT_HEATMAP]
            parity["onnx_fp32_encoders_vs_torch_fp32"] = heatmap_agreement(ref, cosine_map(v, a)) | {"inputs": parity_source}
        for engine in engines.values():
            engine.close()
        if int8:
            _add_int8(stage, graphs, artifacts, parity, opset, image, audio, parity_source, calibration_pairs, step)
        if precision == "fp16":
            for graph in graphs:
                step(f"converting to fp16 ONNX ({graph} graph)")
                fp16_name = onnx_filename("fp16", graph)
                fp16_path = os.path.join(stage, fp16_name)
                convert_fp16(os.path.join(stage, onnx_filename("fp32", graph)), fp16_path)
                fp16_engine = OnnxRuntimeEngine(fp16_path, precision="fp16")
                artifacts[artifact_key("onnx", "fp16", graph)] = artifact_entry(
                    stage, fp16_name, backend="onnxruntime", precision="fp16", graph=graph, opset=opset, io_dtype="float32",
                    converted_from=onnx_filename("fp32", graph), kept_fp32_ops=FP16_KEEP_FP32_OPS,
                    inputs=[s.to_dict() for s in fp16_engine.inputs], outputs=[s.to_dict() for s in fp16_engine.outputs])
                if graph == "fused":
                    parity["onnx_fp16_vs_torch_fp32"] = p16 = compare_engines(reference, fp16_engine, image, audio)
                    p16["inputs"] = parity_source
                    p16["provider"] = "CPUExecutionProvider"
                    _check_parity(p16, "onnx_fp16", "fp16")
                fp16_engine.close()
        if fmt == "tensorrt":
            _add_tensorrt(stage, graphs, artifacts, parity, precision, batch, workspace_mib, timing_cache,
                          reference, image, audio, parity_source, step)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": {"path": checkpoint, "sha256": ckpt_sha, "bytes": os.path.getsize(checkpoint)},
            "model": cfg.to_dict() | {"params": int(sum(p.numel() for p in model.parameters()))},
            "preprocess": preprocessing_settings(),
            "artifacts": artifacts,
            "parity": parity,
            "versions": library_versions(),
        }
        write_json_atomic(os.path.join(stage, MANIFEST), manifest)
    return read_export(out_dir)
