"""INT8 for CPU: static QDQ quantization of the exported ONNX graphs with ONNX Runtime.

Weights per channel (int8, symmetric), activations uint8 calibrated on real and generated inputs.
Layers whose quantization costs the most accuracy for the least speed stay fp32 (see
FP32_NODES): the stems, which see raw pixels / log-spectrogram values, and the L2 normalisations
and the cosine map at the end, where the heatmap's small contrasts live.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings

import numpy as np

from sslrt.errors import BackendUnavailable

# Operator types quantized; everything else (ReduceL2, Div, MatMul of the cosine map, Clip, ...)
# runs in fp32 on dequantized values.
QUANTIZED_OPS = ["Conv", "Add", "Relu", "MaxPool"]


class _Feeds:
    """onnxruntime.quantization's CalibrationDataReader protocol over in-memory batches."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._it = iter(batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # newer ORT versions may call it
        pass


def stem_conv_names(onnx_path: str) -> list[str]:
    """Names of the Conv nodes fed directly by a graph input (the 7x7 stems)."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def quantize_graph(fp32_path: str, int8_path: str, calibration: list[dict[str, np.ndarray]],
                   keep_stems_fp32: bool = True, method: str = "minmax") -> None:
    """Quantize one ONNX graph (QDQ, per-channel int8 weights, uint8 activations)."""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise BackendUnavailable("INT8 export needs onnxruntime's quantization tools: pip install onnxruntime onnx") from None
    prep = int8_path + ".prep.onnx"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            quant_pre_process(fp32_path, prep, skip_symbolic_shape=True)
            quantize_static(
                prep, int8_path, _Feeds(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                # AVX2 without VNNI multiplies u8 x s8 with 16-bit saturating adds; 7-bit weights
                # (reduce_range) keep those sums exact.
                reduce_range=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=QUANTIZED_OPS,
                nodes_to_exclude=stem_conv_names(fp32_path) if keep_stems_fp32 else None,
                calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                  "entropy": CalibrationMethod.Entropy}[method],
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    finally:
        for p in (prep, int8_path + ".prep.onnx.data"):
            if os.path.exists(p):
                os.unlink(p)
