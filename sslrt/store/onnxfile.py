"""What an ONNX file asks of the runtime, read without the onnx package (the run path must not
import it): the files its initializers load as external data, its operators, its initializers'
element types and shapes.

A minimal reader of the protobuf wire format, walking only the fields of ModelProto that say
this (graph -> initializers, nodes -> attributes -> subgraphs); tensor payloads are skipped by
their length, never copied. Used by the exporter to record a graph's external-data files in the
manifest, and by the runtime to check a graph before it is loaded (external data hashed and
inside the export; precision and width as the manifest says).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from sslrt.errors import SslrtError

# onnx.proto field numbers
_MODEL_GRAPH = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 1, 2, 8, 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
FLOAT16 = 10  # TensorProto.DataType

# Operators that only a quantized graph holds.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                           "MatMulInteger", "DynamicQuantizeLinear", "QGemm"})
_MAX_DEPTH = 32  # subgraph nesting (If / Loop bodies) beyond any real model


class OnnxFileError(SslrtError):
    pass


@dataclass
class OnnxSummary:
    """The parts of an ONNX model the runtime checks before loading it."""

    external_data: list[str] = field(default_factory=list)  # locations, as written in the model
    ops: Counter = field(default_factory=Counter)  # op_type -> count (all domains)
    initializer_types: Counter = field(default_factory=Counter)  # TensorProto data_type -> count
    conv_out_channels: int = 0  # the largest first dimension of a 4-D initializer (conv weights)

    @property
    def quantized(self) -> bool:
        return any(op in QUANTIZED_OPS for op in self.ops)

    @property
    def has_fp16(self) -> bool:
        return self.initializer_types.get(FLOAT16, 0) > 0

    def precision(self) -> str:
        """What the graph computes in: int8 (quantized operators), fp16 (float16 weights) or fp32."""
        return "int8" if self.quantized else "fp16" if self.has_fp16 else "fp32"

    def fingerprint(self) -> dict:
        return {"precision": self.precision(), "ops": dict(sorted(self.ops.items())),
                "conv_out_channels": self.conv_out_channels}


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise OnnxFileError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value) of one message; value is an int (varint / fixed) or a
    (start, end) span of a length-delimited field."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise OnnxFileError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            value, pos = pos, pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + length), pos + length
        elif wire == 5:
            value, pos = pos, pos + 4
        else:
            raise OnnxFileError(f"unsupported wire type {wire}")
        if pos > end:
            raise OnnxFileError("a field runs past the end of its message")
        yield number, wire, value


def _string(buf, span) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise OnnxFileError("a name is not UTF-8") from None


def _tensor(buf, span, out: OnnxSummary) -> None:
    dims, location, external = [], None, False
    for number, wire, value in _fields(buf, *span):
        if number == _TENSOR_DIMS:
            if wire == 2:  # packed
                pos, end = value
                while pos < end:
                    d, pos = _varint(buf, pos, end)
                    dims.append(d)
            elif wire == 0:
                dims.append(value)
        elif number == _TENSOR_DATA_TYPE and wire == 0:
            out.initializer_types[value] += 1
        elif number == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == 1
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            key = val = None
            for n, w, v in _fields(buf, *value):
                if w == 2 and n == _ENTRY_KEY:
                    key = _string(buf, v)
                elif w == 2 and n == _ENTRY_VALUE:
                    val = _string(buf, v)
            if key == "location":
                location = val
    if location is not None or external:
        if not location:
            raise OnnxFileError("an initializer is stored externally without a location")
        if location not in out.external_data:
            out.external_data.append(location)
    if len(dims) == 4:
        out.conv_out_channels = max(out.conv_out_channels, dims[0])


def _sparse(buf, span, out: OnnxSummary) -> None:
    for number, wire, value in _fields(buf, *span):
        if wire == 2 and number in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(buf, value, out)


def _graph(buf, span, out: OnnxSummary, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxFileError("subgraphs nested too deeply")
    for number, wire, value in _fields(buf, *span):
        if wire != 2:
            continue
        if number == _GRAPH_INITIALIZER:
            _tensor(buf, value, out)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse(buf, value, out)
        elif number == _GRAPH_NODE:
            _node(buf, value, out, depth)


def _node(buf, span, out: OnnxSummary, depth: int) -> None:
    op = None
    for number, wire, value in _fields(buf, *span):
        if wire != 2:
            continue
        if number == _NODE_OP_TYPE:
            op = _string(buf, value)
        elif number == _NODE_ATTRIBUTE:
            for n, w, v in _fields(buf, *value):
                if w != 2:
                    continue
                if n in (_ATTR_T, _ATTR_TENSORS):
                    _tensor(buf, v, out)
                elif n in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
                    _sparse(buf, v, out)
                elif n in (_ATTR_G, _ATTR_GRAPHS):
                    _graph(buf, v, out, depth + 1)
    if op is not None:
        out.ops[op] += 1


def summarize_onnx_bytes(data: bytes) -> OnnxSummary:
    buf = memoryview(data)
    out = OnnxSummary()
    graphs = 0
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number == _MODEL_GRAPH and wire == 2:
            _graph(buf, value, out, 0)
            graphs += 1
    if graphs != 1:
        raise OnnxFileError("no graph" if not graphs else "more than one graph")
    return out


def summarize_onnx(path: str, data: bytes | None = None) -> OnnxSummary:
    """Read `path` (an .onnx file; its external data is not read; `data`: its bytes, where already
    read) -> OnnxSummary; a file that is not a protobuf ONNX model raises one line."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    try:
        return summarize_onnx_bytes(data)
    except OnnxFileError as exc:
        raise OnnxFileError(f"not a readable ONNX model ({exc}): {os.path.basename(path)}") from None
