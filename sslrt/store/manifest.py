"""manifest.json of an export directory: what was exported from what, and how well it matches.

Read by the runtime (no torch). Every artifact is listed with its size and sha256, so a directory
whose files were swapped, truncated or re-exported halfway is refused instead of run. Opening an
export checks the manifest and every file's size once; a file's sha256 is checked when it is
loaded (`verified_path`), so a run hashes exactly the graphs it runs.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from sslrt.config import ModelConfig
from sslrt.errors import SslrtError, first_line
from sslrt.spec import ModelSpec, spec_from_manifest

MANIFEST = "manifest.json"
FORMAT = "sslrt-export"
FORMAT_VERSION = 1


def sha256_file(path: str, chunk: int = 1 << 20, data: bytes | None = None) -> str:
    """sha256 of the file at `path`; `data`: its bytes where the caller has read them already
    (an ONNX graph is read once, for its hash and for its summary)."""
    if data is not None:
        return hashlib.sha256(data).hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def artifact_entry(directory: str, filename: str, **info) -> dict:
    """The manifest entry of a file the exporter wrote: size and sha256, and for an ONNX graph
    the size and sha256 of every external-data file it loads."""
    path = os.path.join(directory, filename)
    entry = {"file": filename, "bytes": os.path.getsize(path), "sha256": sha256_file(path), **info}
    if filename.endswith(".onnx"):
        from sslrt.store.onnxfile import summarize_onnx

        external = {}
        for location in summarize_onnx(path).external_data:
            file = _inside(directory, location, f"graph '{filename}' loads external data")
            external[location] = {"bytes": os.path.getsize(file), "sha256": sha256_file(file)}
        if external:
            entry["external_data"] = external
    return entry


@dataclass
class ExportedModel:
    """A validated export directory."""

    directory: str
    manifest: dict
    config: ModelConfig = field(init=False)
    spec: ModelSpec = field(init=False)
    _verified: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.config = ModelConfig.from_dict(self.manifest["model"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SslrtError(f"manifest 'model' is malformed ({type(exc).__name__}: {first_line(exc)[:100]}): "
                             f"re-export: {self.directory}") from None
        if not 1 <= self.config.width <= 4096:
            raise SslrtError(f"manifest 'model' is malformed (width {self.config.width}): re-export: {self.directory}")
        self.spec = spec_from_manifest(self.manifest.get("spec"))

    @property
    def artifacts(self) -> dict[str, dict]:
        return self.manifest["artifacts"]

    def artifact_path(self, key: str) -> str | None:
        entry = self.artifacts.get(key)
        return os.path.join(self.directory, entry["file"]) if entry else None

    def verified_path(self, key: str) -> str:
        """The artifact's path, after checking its sha256 against the manifest (once per open);
        for an ONNX graph also every external-data file it loads (each must be in the folder and
        hashed in the manifest), and that the graph is what its entry says: its precision (int8
        graphs hold quantized operators, fp16 graphs float16 weights, fp32 graphs neither) and the
        model's width (the widest convolution has model.width * 8 channels)."""
        path = self.artifact_path(key)
        if path is None:
            raise SslrtError(f"{self.directory} has no artifact '{key}'")
        if key not in self._verified:
            entry = self.artifacts[key]
            onnx_graph = entry["file"].endswith(".onnx")
            data = _read(path) if onnx_graph else None  # one read serves the hash and the summary
            if sha256_file(path, data=data) != entry.get("sha256"):
                raise SslrtError(f"export directory does not match its manifest: sha256 of '{entry['file']}' differs: re-export")
            if onnx_graph:
                self._check_onnx(key, path, entry, data)
            self._verified.add(key)
        return path

    def _check_onnx(self, key: str, path: str, entry: dict, data: bytes) -> None:
        from sslrt.store.onnxfile import summarize_onnx

        summary = summarize_onnx(path, data)
        recorded = entry.get("external_data") or {}
        if not isinstance(recorded, dict):
            raise SslrtError(f"manifest artifact '{key}' has a malformed 'external_data': re-export")
        for location in summary.external_data:
            file = _inside(self.directory, location, f"graph '{entry['file']}' loads external data")
            info = recorded.get(location)
            if not isinstance(info, dict):
                raise SslrtError(f"graph '{entry['file']}' loads external data '{location}' that the manifest does not "
                                 "record: refused: re-export")
            if not os.path.isfile(file) or os.path.getsize(file) != info.get("bytes") or sha256_file(file) != info.get("sha256"):
                raise SslrtError(f"export directory does not match its manifest: external data '{location}' of "
                                 f"'{entry['file']}' is missing or differs: re-export")
        label, found = entry.get("precision"), summary.precision()
        if label in ("fp32", "fp16", "int8") and found != label:
            raise SslrtError(f"graph '{entry['file']}' ({key}) is labelled {label} but is an {found} graph: "
                             "the manifest does not describe it: re-export")
        width = self.config.embed_dim
        if summary.conv_out_channels and summary.conv_out_channels != width:
            raise SslrtError(f"graph '{entry['file']}' ({key}) has {summary.conv_out_channels}-channel features, the manifest's "
                             f"model (width {self.config.width}) has {width}: the manifest does not describe it: re-export")

    @property
    def checkpoint_path(self) -> str | None:
        """Absolute path of the source checkpoint; a relative one is relative to the directory
        (how a shipped export names the checkpoint beside it)."""
        path = self._checkpoint_field("path")
        return os.path.normpath(os.path.join(self.directory, path)) if path and "\x00" not in path else None

    @property
    def checkpoint_sha256(self) -> str | None:
        return self._checkpoint_field("sha256")

    def _checkpoint_field(self, name: str) -> str | None:
        """A string field of the manifest's 'checkpoint' record; None where it is absent or malformed."""
        record = self.manifest.get("checkpoint")
        value = record.get(name) if isinstance(record, dict) else None
        return value if isinstance(value, str) else None


def _inside(directory: str, name: str, what: str) -> str:
    """directory/name, refused (one line) unless it is a plain relative name of a file directly in
    `directory`, also after symlinks are followed: an export is one folder, and its manifest and
    graphs must not reach files outside it."""
    bad = not name or "\x00" in name or os.path.isabs(name)
    file = os.path.join(directory, name)
    if not bad:
        try:
            bad = os.path.dirname(os.path.realpath(file)) != os.path.realpath(directory)
        except (OSError, ValueError):
            bad = True
    if bad:
        raise SslrtError(f"{what} points outside the export folder ({name[:200]!r}): refused: {directory}")
    return file


def read_export(directory: str, verify_hashes: bool = False) -> ExportedModel:
    """Open an export directory; refuse it (one line, naming the file) if anything does not match.

    Sizes are checked here for every artifact; sha256 for every artifact only with `verify_hashes`
    (otherwise when each is loaded, see ExportedModel.verified_path)."""
    directory = os.path.abspath(directory)
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise SslrtError(f"not an sslrt export directory (no {MANIFEST}): {directory}")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise SslrtError(f"manifest is unreadable: {path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SslrtError(f"not an sslrt manifest: {path}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise SslrtError(f"manifest version {manifest.get('format_version')} is not supported by this sslrt "
                         f"(expects {FORMAT_VERSION}): re-export: {path}")
    for key in ("model", "artifacts"):
        if not isinstance(manifest.get(key), dict):
            raise SslrtError(f"manifest lacks '{key}': {path}")
    for key, entry in manifest["artifacts"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise SslrtError(f"manifest artifact '{key}' is malformed (expected an object with a 'file'): re-export: {path}")
        file = _inside(directory, entry["file"], f"manifest artifact '{key}'")
        if not os.path.isfile(file):
            raise SslrtError(f"export directory does not match its manifest: '{entry.get('file')}' ({key}) is missing in {directory}")
        if os.path.getsize(file) != entry.get("bytes"):
            raise SslrtError(f"export directory does not match its manifest: '{entry['file']}' has {os.path.getsize(file)} bytes, "
                             f"manifest says {entry.get('bytes')}: re-export")
    exported = ExportedModel(directory, manifest)
    if verify_hashes:
        for key in manifest["artifacts"]:
            exported.verified_path(key)
    return exported
