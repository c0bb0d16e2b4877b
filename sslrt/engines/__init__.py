"""Engines: one interface (base.Engine), one adapter module per backend, one table of backends.

Each adapter module declares its rows (`ROWS`: name, artifact format, precisions, device, probe,
install hint, factory); this module only collects them. `create_engine` is a lookup, a check and
a call; `choose_backend` (what `auto` means) is a pure function of (installed backends, the
export's artifacts, the precision asked). Adding a backend = one adapter module with its rows,
plus its name in `ADAPTER_MODULES`.
"""
from __future__ import annotations

import importlib
from typing import Iterable

from sslrt.engines.base import MAX_BATCH_SIZE, Artifact, BackendRow, Engine, EngineOptions, TensorSpec, check_batch_size, \
    check_threads, max_threads
from sslrt.errors import BackendUnavailable, SslrtError
from sslrt.graphs import GRAPH_IO, GRAPHS, OUTPUT_AUDIO_EMBEDDING, OUTPUT_HEATMAP, OUTPUT_IMAGE_EMBEDDING, artifact_key, \
    input_shapes

# The adapter modules, imported for their rows (each imports its runtime library only when a
# probe or factory runs, so reading the table is cheap).
ADAPTER_MODULES = ("sslrt.engines.onnxruntime", "sslrt.engines.openvino", "sslrt.engines.tensorrt", "sslrt.engines.torch")
PRECISIONS = ("fp32", "fp16", "int8")

_TABLE: dict[str, BackendRow] | None = None


def backend_table() -> dict[str, BackendRow]:
    """name -> row, in declaration order."""
    global _TABLE
    if _TABLE is None:
        table: dict[str, BackendRow] = {}
        for module in ADAPTER_MODULES:
            for row in importlib.import_module(module).ROWS:
                if row.name in table or row.name == "auto":
                    raise RuntimeError(f"backend {row.name!r} is declared twice")
                table[row.name] = row
        _TABLE = table
    return _TABLE


def backend_names() -> tuple[str, ...]:
    return ("auto", *backend_table())


def get_row(name: str) -> BackendRow:
    table = backend_table()
    if name not in table:
        raise SslrtError(f"unknown backend '{name}' (choose from: {', '.join(backend_names())})")
    return table[name]


def available_backends(include_torch: bool = False) -> set[str]:
    """Rows whose probe says the backend can run here. The torch rows are probed only on request:
    importing torch is slow, and the runtime path never needs it."""
    return {name for name, row in backend_table().items()
            if (include_torch or row.artifact != "checkpoint") and row.probe()}


def row_artifact_key(row: BackendRow, precision: str, graph: str = "fused") -> str | None:
    """The export artifact a row runs for (precision, graph); None for the checkpoint rows."""
    if row.artifact == "checkpoint":
        return None
    return artifact_key(row.artifact, row.artifact_precision.get(precision, precision), graph)


def has_artifact(row: BackendRow, artifacts: Iterable[str], precision: str, graph: str = "fused") -> bool:
    key = row_artifact_key(row, precision, graph)
    return key is None or key in set(artifacts)


def graphs_for(row: BackendRow, artifacts: Iterable[str], precision: str) -> tuple[str, ...]:
    """Which graphs `row` can run at `precision` for an export holding `artifacts`."""
    artifacts = set(artifacts)
    return tuple(g for g in GRAPHS if has_artifact(row, artifacts, precision, g))


def choose_backend(available: Iterable[str], artifacts: Iterable[str], precision: str | None = None) -> tuple[str, str]:
    """`auto`: the best (backend, precision) given what is installed and what the export holds.

    (row, precision) candidates are ranked by the row's rank for that precision (`auto_rank`,
    or its `precision_ranks` override: GPU engines first, then the fastest CPU backend as
    measured; see docs/ARCHITECTURE.md); without an explicit precision each row offers its
    `auto_precisions` that the export has, in their order.
    """
    available, artifacts = set(available), set(artifacts)
    candidates = []  # (rank, row order, preference) -> (row, precision)
    for order, row in enumerate(backend_table().values()):
        if row.auto_rank is None or row.name not in available:
            continue
        for preference, p in enumerate([precision] if precision else row.auto_precisions):
            if p in row.precisions and has_artifact(row, artifacts, p):
                candidates.append(((row.rank(p), order, preference), row.name, p))
    if candidates:
        _, name, p = min(candidates)
        return name, p
    have = ", ".join(sorted(artifacts)) or "nothing"
    if precision and not any(a.split("_")[1:2] == [precision] for a in artifacts):
        raise SslrtError(f"the export has no {precision} model (has: {have}): re-export with --precision {precision}")
    raise BackendUnavailable(f"no installed backend can run this export (has: {have}; installed: "
                             f"{', '.join(sorted(available)) or 'none'}): pip install onnxruntime")


def resolve_backend(backend: str, artifacts: Iterable[str], precision: str | None,
                    available: set[str] | None = None, notify=None) -> tuple[BackendRow, str]:
    """(row, precision) for a backend name or "auto", before any session opens. `precision` None
    means the row's first auto precision the export has (fp32 for ONNX Runtime, the engine's own
    for TensorRT). `notify` receives the line that says what auto chose."""
    if precision is not None and precision not in PRECISIONS:
        raise SslrtError(f"unknown precision '{precision}' (choose from: {', '.join(PRECISIONS)})")
    artifacts = set(artifacts)
    if backend == "auto":
        available = available_backends() if available is None else available
        name, precision = choose_backend(available, artifacts, precision)
        if notify:
            notify(f"backend auto: chose {name} {precision} (installed: {', '.join(sorted(available))})")
        return get_row(name), precision
    row = get_row(backend)
    if precision is None:
        precision = next((p for p in row.auto_precisions if has_artifact(row, artifacts, p)), row.auto_precisions[0])
    if precision not in row.precisions:
        raise SslrtError(f"backend '{row.name}' runs {', '.join(row.precisions)}, not {precision}{row.precision_hint}")
    return row, precision


def _export_flag(precision: str) -> str:
    return {"int8": "--int8", "fp16": "--fp16"}.get(precision, f"--precision {precision}")


def create_engine(backend: str, model, precision: str | None = "fp32", graph: str = "fused",
                  threads: int | None = None, cuda_graph: bool = False, available: set[str] | None = None,
                  notify=None) -> Engine:
    """Open one graph of a resolved model (sslrt.resolve.ResolvedModel) on `backend` ("auto"
    allowed); the engine is loaded and ready to run. Never exports."""
    threads = check_threads(threads)
    row, precision = resolve_backend(backend, model.artifacts, precision, available, notify)
    if cuda_graph and not row.cuda_graph:
        supported = ", ".join(r.name for r in backend_table().values() if r.cuda_graph)
        raise SslrtError(f"--cuda-graph is supported by the {supported} backends, not '{row.name}'")
    if not row.probe():
        raise BackendUnavailable(f"backend '{row.name}' needs {row.install_hint}")
    key = row_artifact_key(row, precision, graph)
    if key is None:
        artifact = Artifact(row.name, precision, graph, None, model.checkpoint_for_reference(), {}, model.spec)
    else:
        if key not in model.artifacts:
            kind = "TensorRT engine" if row.artifact == "tensorrt" else "ONNX model"
            what = "" if graph == "fused" else f" for the {graph} graph"
            have = ", ".join(sorted(model.artifacts)) or "none"
            how = f"--format tensorrt --precision {precision}" if row.artifact == "tensorrt" else _export_flag(precision)
            raise SslrtError(f"{model.directory} has no {precision} {kind}{what} (has: {have}): "
                             f"re-export with `sslrt export CHECKPOINT {how}`")
        artifact = Artifact(row.name, precision, graph, key, model.exported.verified_path(key), model.artifacts[key], model.spec)
    engine = row.factory(artifact, EngineOptions(threads=threads, cuda_graph=cuda_graph))
    engine.load()
    if key is not None:
        try:
            # SLAVC's embedding is its two heads' vectors side by side (model/network.py)
            check_engine_io(engine, artifact, model.exported.config.embed_dim * model.spec.heads)
        except BaseException:
            engine.close()
            raise
    return engine


def expected_io(spec, graph: str, embed_dim: int) -> dict[str, tuple]:
    """Per-sample shape of every tensor of `graph` for a family and a model width."""
    shapes = input_shapes(spec)
    m = spec.map_size
    outputs = {OUTPUT_HEATMAP: (1, m, m), OUTPUT_IMAGE_EMBEDDING: (embed_dim, m, m), OUTPUT_AUDIO_EMBEDDING: (embed_dim,)}
    ins, outs = GRAPH_IO[graph]
    return {name: shapes[name] for name in ins} | {name: outputs[name] for name in outs}


def _shape_text(specs) -> str:
    return ", ".join(f"{s.name}{list(s.shape)}" for s in specs)


def check_engine_io(engine: Engine, artifact: Artifact, embed_dim: int) -> None:
    """A loaded graph is the one its manifest entry describes: the graph role of its key, the
    tensors of that role (names and per-sample shapes, so swapped encoders or a graph of another
    width are refused), and the inputs/outputs the exporter recorded. A manifest edited along with
    its hashes still cannot make a graph run in a role it does not fit."""
    entry, graph, file = artifact.entry, artifact.graph, artifact.entry.get("file", artifact.path)
    role = entry.get("graph", graph)
    if role != graph:
        raise SslrtError(f"'{file}' is recorded as the {role} graph, but the manifest lists it as the {graph} graph: re-export")
    want = expected_io(artifact.spec, graph, embed_dim)
    got = {s.name: s for s in [*engine.inputs, *engine.outputs]}
    if set(got) != set(want):
        raise SslrtError(f"'{file}' is not the {graph} graph (its tensors: {_shape_text(got.values())}; the {graph} graph "
                         f"has {', '.join(want)}): the manifest does not describe it: re-export")
    for name, shape in want.items():
        dims = tuple(got[name].shape[1:])
        if len(dims) != len(shape) or any(isinstance(d, int) and d > 0 and d != w for d, w in zip(dims, shape)):
            raise SslrtError(f"'{file}' ({graph} graph) has {name} of shape {list(got[name].shape)}, this model's is "
                             f"{[None, *shape]}: the manifest does not describe it: re-export")
    for side in ("inputs", "outputs"):
        recorded = entry.get(side)
        if recorded is None:
            continue
        try:
            rec = {r["name"]: [d if isinstance(d, int) else None for d in r["shape"]] for r in recorded}
        except (TypeError, KeyError):
            raise SslrtError(f"manifest entry of '{file}' has malformed {side}: re-export") from None
        actual = {s.name: [d if isinstance(d, int) and d > 0 else None for d in s.shape]
                  for s in (engine.inputs if side == "inputs" else engine.outputs)}
        if set(rec) != set(actual) or any(len(rec[n]) != len(actual[n]) or any(
                a is not None and r is not None and a != r for a, r in zip(rec[n], actual[n])) for n in rec):
            raise SslrtError(f"'{file}' has {side} {actual}, its manifest entry records {rec}: re-export")


def cuda_device_count() -> int:
    """CUDA devices visible, without torch (see sslrt.engines.cuda)."""
    from sslrt.engines.cuda import cuda_device_count as count

    return count()


__all__ = ["Artifact", "BackendRow", "Engine", "EngineOptions", "TensorSpec", "PRECISIONS", "MAX_BATCH_SIZE",
           "available_backends", "check_batch_size", "check_threads", "max_threads",
           "backend_names", "backend_table", "choose_backend", "create_engine", "cuda_device_count", "get_row",
           "graphs_for", "resolve_backend", "row_artifact_key"]
