"""Property-based fuzzing of the readers of user files: the pairs CSV (`read_pairs_csv`), the
export manifest (`read_export` on a folder with a fuzzed manifest.json or fuzzed artifact
entries) and the ONNX reader of the runtime. Any input gives a result or an SslrtError with a
one-line message, never another exception.

CI runs 50 examples per reader; SSLRT_FUZZ_EXAMPLES=2000 runs a longer fuzz locally.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from sslrt.errors import SslrtError  # noqa: E402

EXAMPLES = int(os.environ.get("SSLRT_FUZZ_EXAMPLES", 50))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)), max_leaves=12)


def _one_line(exc: SslrtError) -> None:
    assert "\n" not in str(exc) and str(exc), repr(exc)


# -- the pairs CSV ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairfiles")
    for name in ("a.jpg", "b.wav", "c d.png", "é.flac"):
        (d / name).write_bytes(b"x")
    return d


def _csv_lines():
    names = st.sampled_from(["a.jpg", "b.wav", "c d.png", "é.flac", "missing.jpg", "", " ", "#x", '"a.jpg"', "image",
                             "audio"])
    line = st.lists(st.one_of(names, st.text(max_size=6)), max_size=4).map(lambda cells: ",".join(cells))
    return st.lists(line, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), _csv_lines(),
                      _csv_lines().map(lambda b: b"\xef\xbb\xbf" + b),
                      st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_read_pairs_csv_never_raises_anything_else(data, pair_files):
    from sslrt.cli import read_pairs_csv

    path = pair_files / "pairs.csv"
    path.write_bytes(data)
    try:
        pairs = read_pairs_csv(str(path))
    except SslrtError as exc:
        _one_line(exc)
        return
    assert pairs and all(os.path.isfile(p) for pair in pairs for p in pair)


# -- the manifest --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def honest(tmp_path_factory, tiny_export):
    d = tmp_path_factory.mktemp("honest") / "export"
    shutil.copytree(tiny_export.directory, d)
    return d


def _read_in_copy(honest, manifest_bytes: bytes, verify: bool = True):
    from sslrt.store.manifest import read_export

    with tempfile.TemporaryDirectory() as d:
        folder = os.path.join(d, "export")
        shutil.copytree(honest, folder, copy_function=os.link if _same_device(honest, d) else shutil.copy2)
        os.unlink(os.path.join(folder, "manifest.json"))
        with open(os.path.join(folder, "manifest.json"), "wb") as f:
            f.write(manifest_bytes)
        try:
            exported = read_export(folder, verify_hashes=verify)
            # what the runtime asks of a model it opened
            exported.checkpoint_path, exported.checkpoint_sha256, exported.spec, exported.config.embed_dim
            for key in list(exported.artifacts):
                exported.verified_path(key)
        except SslrtError as exc:
            _one_line(exc)


def _same_device(a, b) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())))
def test_read_export_on_any_manifest_bytes(data, honest):
    _read_in_copy(honest, data)


def _mutations():
    """A change to one field of the honest manifest: a top-level field, a model field or a field
    of one artifact entry, set to any JSON value (or the entry replaced, or removed)."""
    top = st.tuples(st.just("top"), st.sampled_from(["format", "format_version", "model", "artifacts", "checkpoint",
                                                       "spec", "family"]), json_values)
    model = st.tuples(st.just("model"), st.sampled_from(["width", "blocks", "strides", "params"]), json_values)
    entry = st.tuples(st.just("entry"), st.sampled_from(["file", "bytes", "sha256", "graph", "precision", "inputs",
                                                         "outputs", "external_data", None]), json_values)
    return st.lists(st.one_of(top, model, entry), min_size=1, max_size=3)


@FUZZ
@given(changes=_mutations(), key=st.sampled_from(["onnx_fp32", "onnx_fp32_vision", "onnx_fp32_audio", "onnx_int8"]))
def test_read_export_on_fuzzed_fields(changes, key, honest):
    m = json.loads((honest / "manifest.json").read_text())
    for where, name, value in changes:
        if where == "top":
            m[name] = value
        elif where == "model" and isinstance(m.get("model"), dict):
            m["model"][name] = value
        elif where == "entry" and isinstance(m.get("artifacts"), dict):
            if name is None:
                m["artifacts"][key] = value
            elif isinstance(m["artifacts"].get(key), dict):
                m["artifacts"][key][name] = value
    _read_in_copy(honest, json.dumps(m).encode())


# -- the ONNX reader -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph_bytes(tiny_export):
    with open(tiny_export.artifact_path("onnx_fp32_audio"), "rb") as f:
        return f.read()


@FUZZ
@given(data=st.data())
def test_onnx_reader_on_damaged_graphs(data, graph_bytes):
    from sslrt.store.onnxfile import summarize_onnx_bytes

    kind = data.draw(st.sampled_from(["bytes", "cut", "flip"]))
    if kind == "bytes":
        blob = data.draw(st.binary(max_size=300))
    elif kind == "cut":
        blob = graph_bytes[:data.draw(st.integers(0, len(graph_bytes)))]
    else:
        blob = bytearray(graph_bytes)
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    try:
        summary = summarize_onnx_bytes(blob)
    except SslrtError as exc:
        _one_line(exc)
        return
    summary.precision(), summary.fingerprint()
