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
from sslrt.errors import SslrtError
from sslrt.spec import ModelSpec, spec_from_manifest

MANIFEST = "manifest.json"
FORMAT = "sslrt-export"
FORMAT_VERSION = 1


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def artifact_entry(directory: str, filename: str, **info) -> dict:
    path = os.path.join(directory, filename)
    return {"file": filename, "bytes": os.path.getsize(path), "sha256": sha256_file(path), **info}


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
        except (KeyError, TypeError, ValueError) as exc:
            raise SslrtError(f"manifest 'model' is malformed ({type(exc).__name__}: {exc}): re-export: {self.directory}") from None
        self.spec = spec_from_manifest(self.manifest.get("spec"))

    @property
    def artifacts(self) -> dict[str, dict]:
        return self.manifest["artifacts"]

    def artifact_path(self, key: str) -> str | None:
        entry = self.artifacts.get(key)
        return os.path.join(self.directory, entry["file"]) if entry else None

    def verified_path(self, key: str) -> str:
        """The artifact's path, after checking its sha256 against the manifest (once per open)."""
        path = self.artifact_path(key)
        if path is None:
            raise SslrtError(f"{self.directory} has no artifact '{key}'")
        if key not in self._verified:
            if sha256_file(path) != self.artifacts[key].get("sha256"):
                raise SslrtError(f"export directory does not match its manifest: sha256 of '{self.artifacts[key]['file']}' differs: re-export")
            self._verified.add(key)
        return path

    @property
    def checkpoint_path(self) -> str | None:
        """Absolute path of the source checkpoint; a relative one is relative to the directory
        (how a shipped export names the checkpoint beside it)."""
        path = self.manifest.get("checkpoint", {}).get("path")
        return os.path.normpath(os.path.join(self.directory, path)) if path else None

    @property
    def checkpoint_sha256(self) -> str | None:
        return self.manifest.get("checkpoint", {}).get("sha256")


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
        file = os.path.join(directory, entry["file"])
        # An export is one folder: a manifest must not reach files outside it.
        if os.path.isabs(entry["file"]) or os.path.dirname(os.path.realpath(file)) != os.path.realpath(directory):
            raise SslrtError(f"manifest artifact '{key}' points outside the export folder ({entry['file']!r}): refused: {path}")
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
