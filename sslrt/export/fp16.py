"""fp32 ONNX graph -> fp16 ONNX graph with float32 inputs and outputs, for GPU engines.

fp16 covers the two towers (all but ~0.01% of the FLOPs); the head after them stays fp32: the L2
norms (a sum of 512 squared activations can overflow fp16's 65504), their 1e-12 floor (0 in fp16)
and the cosine map itself (in fp16 a heatmap value near 0.5 is quantized to 2.4e-4 steps, coarser
than the gap between the two hottest cells of a flat map, so the peak would move).
"""
from __future__ import annotations

import warnings

from sslrt.errors import BackendUnavailable, SslrtError

# Node-name scopes of the towers in the exported graphs (the modules named imgnet/audnet).
FP16_TOWERS = ("/imgnet/", "/audnet/")
FP16_KEEP_FP32_OPS = ["ReduceL2", "Clip", "Div", "MatMul"]


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
    _drop_repeated_nodes(model.graph)
    _drop_cast_round_trips(model.graph)
    _toposort(model.graph)  # the converter appends its input casts after their consumers
    onnx.save(model, dst)
    onnx.checker.check_model(dst)


def _drop_repeated_nodes(graph) -> None:
    """Keep one of identical nodes that write the same tensor. onnxruntime's converter before 1.32
    inserts one Cast(fp32) per kept-fp32 consumer of an fp16 tensor, each writing the same
    `<name>_cast_to_fp32` (seen with onnxruntime-gpu 1.31.1 on the towers' last ReLU, read by two
    head nodes), which breaks the graph's single-assignment form; 1.32 shares one Cast."""
    first: dict[str, object] = {}
    keep = []
    for node in graph.node:
        earlier = next((first[o] for o in node.output if o in first), None)
        if earlier is None:
            first.update((o, node) for o in node.output)
            keep.append(node)
        elif earlier.SerializeToString() != node.SerializeToString():
            raise SslrtError(f"fp16 conversion wrote {node.output[0]!r} twice, from different nodes")
    del graph.node[:]
    graph.node.extend(keep)


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
