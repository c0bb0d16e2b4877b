"""Winograd F(2x2, 3x3) for the OpenVINO adapter's fp32 models: the wide 3x3 convolutions
rewritten, in the read model, as transform -> 16 matrix products -> inverse transform.

Why: on the CPUs measured (benchmarks/cpu/openvino_modes.md) OpenVINO's direct fp32
convolutions already run at the cores' FMA peak, so fp32 gets faster only by doing fewer
multiplications. F(2x2, 3x3) computes each 2x2 output tile from a 4x4 input tile with 16
products per channel pair instead of 36 (2.25x fewer); the transforms add and subtract only
(B, A) or are folded into the weights once (G), so the extra rounding is a few ulps of the sums
(~1e-5 of the output scale per layer, well inside the 1e-4 the fp32 paths are held to).

Only convolutions where the products dominate the transforms are rewritten: 3x3, stride 1,
padding 1, no dilation or groups, constant fp32 weights, static channels and map, and both
channel counts >= `min_channels` (the ResNet-18 layer3/layer4 convolutions; the 64- and 128-channel
ones on big maps measured no faster). The rewrite works on channels-last data so that each
product is one (tiles x C_in) @ (C_in x C_out) matrix product with the batch folded into the
tiles, which OpenVINO runs on its GEMM kernels. The graph's inputs, outputs and names stay.

Measured and not taken: a compact form (Pad -> ExtractImagePatches -> the B^T and A^T transforms
as 16x16 and 4x16 constant MatMuls -> DepthToSpace or Transpose; 191 executed nodes instead of
1157, compiling in 0.14 instead of 0.57 s) ran the full-width model at 116 instead of 108 ms/pair
on the one-thread streams that use this rewrite (the dense transforms do 4x the adds' work). At a
batch of one on two threads it measured 58-60 ms in the machine's fast state and 76-78 ms in its
slow one (the form here: 61-63 and 79-84; the direct graph: 68 and 71), so it did not make the
batch of one worth rewriting either.

Pure graph code on the openvino Python API (no onnx, no torch).
"""
from __future__ import annotations

import numpy as np

# The 2D weight transform G g G^T of F(2,3); B^T and A^T are applied below as adds and subtracts:
# B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]],  A^T = [[1,1,1,0],[0,1,-1,-1]].
_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
# Below this many input or output channels the transforms cost more than the products save.
MIN_CHANNELS = 256


def transformed_weights(weights: np.ndarray) -> np.ndarray:
    """(C_out, C_in, 3, 3) -> (16, C_in, C_out): U[(r,s)] = (G g G^T)[r,s], in float64 then fp32."""
    c_out, c_in = weights.shape[:2]
    # (u, v, C_in, C_out) first, so that both products below are plain matrix products
    g = np.asarray(weights, dtype=np.float64).transpose(2, 3, 1, 0).reshape(3, 3 * c_in * c_out)
    u = _G @ (_G @ g).reshape(4, 3, c_in * c_out)  # (r, s, C_in*C_out)
    return u.reshape(16, c_in, c_out).astype(np.float32)


def _eligible(node, min_channels: int):
    """(weights array, C_in, C_out, H, W) of a convolution this pass rewrites, else None."""
    if node.get_type_name() != "Convolution":
        return None
    attrs = node.get_attributes()
    if (list(attrs.get("strides", [])) != [1, 1] or list(attrs.get("dilations", [])) != [1, 1]
            or list(attrs.get("pads_begin", [])) != [1, 1] or list(attrs.get("pads_end", [])) != [1, 1]
            or str(attrs.get("auto_pad", "explicit")).lower() not in ("explicit", "notset")):
        return None
    weights = node.input_value(1).get_node()
    if weights.get_type_name() != "Constant":
        return None
    w = weights.get_data()
    if w.dtype != np.float32 or w.ndim != 4 or w.shape[2:] != (3, 3):
        return None
    shape = node.input_value(0).get_partial_shape()
    if shape.rank.is_dynamic or len(shape) != 4 or not all(shape[i].is_static for i in (1, 2, 3)):
        return None
    c_in, h, w_ = (shape[i].get_length() for i in (1, 2, 3))
    c_out = w.shape[0]
    if c_in != w.shape[1] or min(c_in, c_out) < min_channels:
        return None
    return w, c_in, c_out, h, w_


def _winograd_output(x, w: np.ndarray, c_in: int, c_out: int, h: int, w_: int):
    """The output (B, C_out, h, w) of the 3x3 convolution of x (B, C_in, h, w) by w, padding 1."""
    import openvino.opset13 as ops

    constants = {}

    def i64(values):  # one Constant node per distinct value (fewer nodes: faster compiling)
        key = tuple(np.atleast_1d(values).tolist()) if np.ndim(values) else values
        if key not in constants:
            constants[key] = ops.constant(np.asarray(values, dtype=np.int64))
        return constants[key]

    def take(t, lo, hi, axis):  # t[..., lo:hi, ...] along one axis
        return ops.slice(t, i64([lo]), i64([hi]), i64([1]), i64([axis]))

    def bt(d0, d1, d2, d3):  # B^T along one axis: d0-d2, d1+d2, d2-d1, d1-d3
        return [ops.subtract(d0, d2), ops.add(d1, d2), ops.subtract(d2, d1), ops.subtract(d1, d3)]

    def at(m0, m1, m2, m3):  # A^T along one axis: m0+m1+m2, m1-m2-m3
        return ops.add(ops.add(m0, m1), m2), ops.subtract(ops.subtract(m1, m2), m3)

    th, tw = -(-h // 2), -(-w_ // 2)  # 2x2 output tiles
    hp, wp = 2 * th + 2, 2 * tw + 2  # padded input: tile t reads rows 2t .. 2t+3
    t = ops.transpose(x, i64([0, 2, 3, 1]))  # channels last
    t = ops.pad(t, i64([0, 1, 1, 0]), i64([0, hp - h - 1, wp - w_ - 1, 0]), "constant")
    # rows 2t+u, u = 0..3, as the even/odd planes E[t], O[t], E[t+1], O[t+1]
    even, odd = ops.split(ops.reshape(t, i64([-1, th + 1, 2, wp, c_in]), False), i64(2), 2).outputs()
    rows = bt(take(even, 0, th, 1), take(odd, 0, th, 1), take(even, 1, th + 1, 1), take(odd, 1, th + 1, 1))
    planes = []
    for r in rows:  # the same along the columns
        e, o = ops.split(ops.reshape(r, i64([-1, th, tw + 1, 2, c_in]), False), i64(3), 2).outputs()
        for v in bt(take(e, 0, tw, 2), take(o, 0, tw, 2), take(e, 1, tw + 1, 2), take(o, 1, tw + 1, 2)):
            planes.append(ops.reshape(v, i64([1, -1, c_in]), False))
    v = ops.concat(planes, 0)  # (16, B*th*tw, C_in)
    m = ops.matmul(v, ops.constant(transformed_weights(w)), False, False)  # (16, B*th*tw, C_out)
    m = ops.split(m, i64(0), 16).outputs()
    cols = [at(*m[4 * r:4 * r + 4]) for r in range(4)]  # per row index r: (column 0, column 1)
    y00, y10 = at(*(c[0] for c in cols))
    y01, y11 = at(*(c[1] for c in cols))
    tile = i64([-1, th, 1, tw, 1, c_out])
    y0 = ops.concat([ops.reshape(y00, tile, False), ops.reshape(y01, tile, False)], 4)
    y1 = ops.concat([ops.reshape(y10, tile, False), ops.reshape(y11, tile, False)], 4)
    y = ops.reshape(ops.concat([y0, y1], 2), i64([-1, 2 * th, 2 * tw, c_out]), False)
    if (2 * th, 2 * tw) != (h, w_):
        y = ops.slice(y, i64([0, 0]), i64([h, w_]), i64([1, 1]), i64([1, 2]))
    return ops.transpose(y, i64([0, 3, 1, 2]))


def apply_winograd(model, min_channels: int = MIN_CHANNELS) -> int:
    """Rewrite the eligible convolutions of an ov.Model in place; the number rewritten."""
    rewritten = 0
    for node in list(model.get_ordered_ops()):
        found = _eligible(node, min_channels)
        if found is None:
            continue
        out = _winograd_output(node.input_value(0), *found)
        out.set_friendly_name(node.get_friendly_name() + "/winograd")
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(out.output(0))
        rewritten += 1
    if rewritten:
        model.validate_nodes_and_infer_types()
    return rewritten
