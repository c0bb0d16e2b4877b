"""The structure the rest stands on: no import cycle, a run path without torch or the exporter,
exactly the sessions that run, and the tables (families, backends, export targets) as data."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

PACKAGE = Path(__file__).resolve().parents[1] / "sslrt"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """sslrt module -> the sslrt modules it imports (at any depth of its code: lazy imports count,
    a cycle through a function-level import is still a cycle of responsibilities)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                # the longest sslrt module the name refers to (a package's __init__ or a submodule)
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("sslrt"):
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    # Importing `a.b` runs `a/__init__` first: a package depends on nothing by being a parent, so
    # only explicit imports are edges. A module importing its own parent package is an edge too.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 40 and "sslrt.engines" in graph["sslrt.runtime.pipeline"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["sslrt.store.manifest"] = graph["sslrt.store.manifest"] | {"sslrt.runtime.pipeline"}
    assert find_cycle(graph) is not None


def test_run_path_layers():
    """The torch-free rooms never reach the exporter, the model or the measurement package."""
    graph = import_graph()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for dep in graph.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    for room in ("sslrt.store.manifest", "sslrt.preprocess", "sslrt.runtime.localization", "sslrt.engines.onnxruntime",
                 "sslrt.spec"):
        bad = {m for m in reach(room) if m.startswith(("sslrt.export", "sslrt.model", "sslrt.measure", "sslrt.train"))}
        assert not bad, f"{room} reaches {sorted(bad)}"
    # the runtime reaches the exporter only through the resolve step
    assert "sslrt.export" in graph["sslrt.resolve"]
    assert not any(d.startswith("sslrt.export") for d in graph["sslrt.runtime.pipeline"] | graph["sslrt.engines"])


RUN_SCRIPT = r"""
import json, sys
from sslrt.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split('.')[0] if m.startswith(('torch', 'ray')) else m for m in sys.modules
                if m in ('torch', 'ray') or m.startswith(('torch.', 'ray.', 'sslrt.export', 'sslrt.model', 'sslrt.train',
                                                          'sslrt.scale', 'onnx.'))
                or m in ('onnx', 'openvino', 'rich', 'pydantic')})
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def test_sslrt_run_on_an_export_imports_neither_torch_nor_the_exporter(tiny_export, media):
    """... nor Ray (sslrt.scale is imported only by --ray and `sslrt serve`)."""
    proc = subprocess.run([sys.executable, "-c", RUN_SCRIPT, "run", str(media / "scene.jpg"), str(media / "sound.wav"),
                           "--model", tiny_export.directory, "--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] in (0, None), proc.stderr
    assert json.loads(proc.stdout)["peak"]
    assert report["heavy"] == [], f"the run path imported {report['heavy']}"


@pytest.mark.parametrize("args", [
    ["a.jpg", "b.wav"],
    ["a.jpg", "b.wav", "--json", "-m", "x", "--backend=openvino", "--threads", "2", "--no-reuse-embeddings",
     "--sounding-threshold", "-0.5", "--precision", "int8", "--cuda-graph", "--batch-size", "4", "--save", "o.png"],
    ["--pairs", "p.csv", "--save-dir", "d", "--family", "ours", "--reuse-embeddings"],
    ["--pairs", "p.csv", "--workers", "3", "--worker-processes", "--threads", "1"],
    ["--pairs", "p.csv", "--worker-threads", "--save-dir", "d", "--overlay-format", "jpg"],
])
def test_quick_parse_of_sslrt_run_equals_the_frameworks(args):
    """`sslrt run` skips the CLI framework's pydantic coercion (rich and pydantic stay out of the run
    path, see above); what it parses must be what the framework would."""
    import typer

    from sslrt.cli import app, fast_parse

    callback, kwargs = fast_parse(["run", *args])
    assert callback.__name__ == "run"
    assert kwargs == typer.main.get_command(app).commands["run"].make_context("run", list(args)).params


@pytest.mark.parametrize("args", [["--help"], ["a", "b", "c"], ["--threads", "x"], ["--bogus"], ["a", "--json=1"], ["--model"]])
def test_quick_parse_leaves_the_rest_to_the_framework(args):
    from sslrt.cli import fast_parse

    assert fast_parse(["run", *args]) is None


def test_sslrt_run_opens_exactly_the_sessions_that_run(media, capsys, monkeypatch):
    """The demo model has encoder graphs: a run opens the vision and audio sessions, once each,
    and hashes only those files."""
    import onnxruntime

    from sslrt.store import manifest

    opened, hashed = [], []
    real_session, real_hash = onnxruntime.InferenceSession, manifest.sha256_file

    def counting_session(path, *a, **k):
        opened.append(Path(path).name)
        return real_session(path, *a, **k)

    def counting_hash(path, *a, **k):
        hashed.append(Path(path).name)
        return real_hash(path, *a, **k)

    monkeypatch.setattr(onnxruntime, "InferenceSession", counting_session)
    monkeypatch.setattr(manifest, "sha256_file", counting_hash)
    for precision in ([], ["--precision", "fp32"], ["--precision", "int8"]):
        opened.clear(), hashed.clear()
        code, out, err = run_cli(["run", media / "scene.jpg", media / "sound.wav", "--json", *precision], capsys)
        assert code == 0, err
        p = "int8" if precision[-1:] == ["int8"] else "fp32"
        assert sorted(opened) == [f"sslrt_{p}_audio.onnx", f"sslrt_{p}_vision.onnx"], opened
        assert sorted(hashed) == sorted(opened), hashed


def test_backend_table_is_data_declared_by_the_adapters():
    from sslrt import engines
    from sslrt.engines import backend_table, choose_backend

    table = backend_table()
    assert set(table) == {"onnxruntime", "onnxruntime-cuda", "onnxruntime-trt", "openvino", "tensorrt", "torch", "torch-cuda"}
    for name, row in table.items():
        module = {"onnx": ("onnxruntime", "openvino"), "tensorrt": ("tensorrt",), "checkpoint": ("torch",)}[row.artifact]
        assert row.factory.__module__.rsplit(".", 1)[-1] in module, name
        assert row.install_hint and set(row.precisions) <= set(engines.PRECISIONS)
    # auto is a pure function of (installed, artifacts, precision)
    fp32 = {"onnx_fp32", "onnx_fp32_vision", "onnx_fp32_audio"}
    assert choose_backend({"onnxruntime"}, fp32) == ("onnxruntime", "fp32")
    assert choose_backend({"onnxruntime", "tensorrt"}, fp32 | {"tensorrt_fp16"}) == ("tensorrt", "fp16")
    assert choose_backend({"onnxruntime", "onnxruntime-cuda"}, fp32 | {"onnx_fp16"}, "fp16") == ("onnxruntime-cuda", "fp16")
    assert choose_backend({"onnxruntime"}, fp32 | {"onnx_int8"}, "int8") == ("onnxruntime", "int8")
    # OpenVINO is the faster CPU backend where installed (docs/ARCHITECTURE.md, measured CPU ranking)
    assert choose_backend({"onnxruntime", "openvino"}, fp32 | {"onnx_int8"}, "int8") == ("openvino", "int8")
    assert choose_backend({"onnxruntime", "openvino", "tensorrt"}, fp32 | {"tensorrt_fp16"}) == ("tensorrt", "fp16")


def test_choose_backend_ranks_per_precision(monkeypatch):
    """A row's rank may differ by precision (BackendRow.precision_ranks); auto takes the best
    (row, precision) pair, the row's auto_precisions breaking ties in their order."""
    import dataclasses

    from sslrt import engines
    from sslrt.engines import backend_table, choose_backend

    table = dict(backend_table())
    table["onnxruntime"] = dataclasses.replace(table["onnxruntime"], auto_rank=30, precision_ranks={"int8": 24})
    table["openvino"] = dataclasses.replace(table["openvino"], auto_rank=25, precision_ranks={},
                                            auto_precisions=("fp32",))
    monkeypatch.setattr(engines, "_TABLE", table)
    arts = {"onnx_fp32", "onnx_int8"}
    both = {"onnxruntime", "openvino"}
    assert choose_backend(both, arts, "int8") == ("onnxruntime", "int8")
    assert choose_backend(both, arts, "fp32") == ("openvino", "fp32")
    assert choose_backend(both, arts) == ("openvino", "fp32")  # no precision asked: the rows' auto precisions
    assert choose_backend({"onnxruntime"}, arts, "fp32") == ("onnxruntime", "fp32")
    assert table["onnxruntime"].rank("int8") == 24 and table["onnxruntime"].rank("fp32") == 30
    assert dataclasses.replace(table["onnxruntime"], auto_rank=None).rank("int8") is None


def test_export_targets_table_and_list(capsys):
    from sslrt.export import EXPORT_TARGETS, select_targets

    assert [t.key for t in EXPORT_TARGETS][:3] == ["onnx_fp32", "onnx_fp16", "onnx_int8"]
    assert select_targets("onnx", "fp16", int8=True) == ["onnx_fp32", "onnx_fp16", "onnx_int8"]
    assert select_targets("tensorrt", "fp16") == ["onnx_fp32", "onnx_fp16", "tensorrt_fp16"]
    code, out, err = run_cli(["export", "--list", "--json"], capsys)
    assert code == 0, err
    table = {t["key"]: t for t in json.loads(out)}
    assert table["onnx_fp32"]["available"] is True
    assert table["tensorrt_fp16"]["available"] is False and "tensorrt" in table["tensorrt_fp16"]["missing"]


def test_spec_round_trips_through_the_manifest(tiny_export):
    from sslrt.spec import ModelSpec, get_spec

    recorded = tiny_export.manifest["spec"]
    assert ModelSpec.from_dict(json.loads(json.dumps(recorded))) == get_spec("ours") == tiny_export.spec


@pytest.mark.parametrize("bad", [{"map_size": "abc"}, {"audio": {"n_fft": "x"}}, {"unknown_field": 1}, {"audio": [1]}])
def test_a_malformed_spec_is_one_line(bad):
    from sslrt.errors import SslrtError
    from sslrt.spec import ModelSpec, get_spec

    d = get_spec("ours").to_dict()
    for k, v in bad.items():
        if isinstance(v, dict):
            d[k] = d[k] | v
        else:
            d[k] = v
    with pytest.raises(SslrtError, match="manifest 'spec"):
        ModelSpec.from_dict(d)
