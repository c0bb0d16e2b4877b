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


def library_versions() -> dict:
    import importlib.metadata as md

    out = {"sslrt": __version__, "python": platform.python_version()}
    for name in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "numpy", "scipy", "opencv-python-headless", "soundfile"):
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


def export_checkpoint(checkpoint: str, out_dir: str, opset: int = DEFAULT_OPSET, simplify: bool = True,
                      parity_pairs: list[tuple[str, str]] | None = None, encoders: bool = True,
                      int8: bool = False, calibration_pairs: list[tuple[str, str]] | None = None,
                      progress=None) -> "ExportedModel":
    """Export `checkpoint` to `out_dir` (created or updated atomically) and return it, validated.

    Writes the fused graph (image, audio -> heatmap) and, with `encoders`, the vision and audio
    graphs that let the runtime reuse an image's or a sound's embedding.
    """
    _require_export_deps()
    import onnx
    import torch

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
