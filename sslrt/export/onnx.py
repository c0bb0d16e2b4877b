"""PyTorch network -> ONNX graphs (needs torch and onnx): the building blocks of the export
targets (sslrt.export.targets).

Each graph of sslrt.graphs (fused, vision, audio) is exported with a dynamic batch axis, checked
with onnx.checker, and simplified with onnxslim only where the simplified graph still gives the
same outputs.
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import warnings

import numpy as np

from sslrt.version import __version__
from sslrt.errors import BackendUnavailable
from sslrt.graphs import GRAPH_IO, input_shapes

DEFAULT_OPSET = 17
# The simplified graph must agree with the plain export this closely, or the plain one is kept.
SIMPLIFY_TOLERANCE = 1e-5


def max_opset() -> int:
    """The newest opset the TorchScript exporter of the installed torch writes (20 where unknown)."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET))
    except Exception:  # noqa: BLE001 - no torch (refused later), or a torch without the constant
        return 20


def require_export_deps():
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(f"export needs torch and onnx ({exc.name} is missing): "
                                 "pip install torch==2.13.0 && pip install 'sslrt[export]'") from None


def parity_inputs(spec=None, n: int = 4, seed: int = 1234, pairs: list[tuple[str, str]] | None = None):
    """Model inputs of family `spec` (default: the paper's) for export-time parity checks and
    INT8 calibration: the user's pairs if given, else generated ones. Returns (images,
    spectrograms, description)."""
    from sslrt.preprocess import audio_to_spectrogram, image_to_tensor, load_image, spectrogram_from_waveform
    from sslrt.synthetic.generated import generated_image, generated_waveform

    image_spec, audio_spec = (spec.image, spec.audio) if spec is not None else (None, None)
    if pairs:
        images = [image_to_tensor(load_image(i), image_spec) for i, _ in pairs]
        audios = [audio_to_spectrogram(a, audio_spec) for _, a in pairs]
        source = [f"{os.path.basename(i)} + {os.path.basename(a)}" for i, a in pairs]
    else:
        images = [image_to_tensor(generated_image(seed + k), image_spec) for k in range(n)]
        audios = [spectrogram_from_waveform(generated_waveform(seed + k), 16000, audio_spec) for k in range(n)]
        source = [f"generated pairs (seed {seed}, n={n})"]
    return np.stack(images), np.stack(audios), source


def export_graph(model, path: str, opset: int, spec, graph: str = "fused") -> None:
    """Write one graph of `model` (a network of sslrt.model) to `path`."""
    import torch

    from sslrt.model.network import graph_module

    inputs, outputs = GRAPH_IO[graph]
    shapes = input_shapes(spec)
    dummies = tuple(torch.zeros(2, *shapes[name]) for name in inputs)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: fast, quiet, and gives the plain Conv/Relu/MatMul graph that
        # ONNX Runtime and TensorRT both optimise best.
        torch.onnx.export(graph_module(model, graph), dummies, path, input_names=list(inputs),
                          output_names=list(outputs), opset_version=opset, dynamo=False,
                          dynamic_axes={name: batch for name in (*inputs, *outputs)})


def try_simplify(path: str, feeds: dict[str, np.ndarray]) -> bool:
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
    for name in ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim", "numpy", "scipy", "opencv-python-headless",
                 "soundfile", "tensorrt", "cuda-python", "cuda-bindings"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
