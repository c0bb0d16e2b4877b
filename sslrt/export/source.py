"""What the user points at (an export directory or a checkpoint) -> the files each backend needs.

A checkpoint is exported once into a cache keyed by its sha256, so `sslrt run ckpt.pth` is slow
only the first time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sslrt.errors import SslrtError
from sslrt.export.manifest import MANIFEST, ExportedModel, read_export, sha256_file


def cache_root() -> Path:
    env = os.environ.get("SSLRT_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sslrt"


@dataclass
class ModelSource:
    """`checkpoint`: a .pth file (or None); `export_dir`: an export directory (or None, made on demand)."""

    checkpoint: str | None = None
    export_dir: str | None = None
    _export: ExportedModel | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "ModelSource":
        path = os.fspath(path)
        if os.path.isdir(path):
            exported = read_export(path)
            return cls(checkpoint=exported.checkpoint_path, export_dir=exported.directory, _export=exported)
        if os.path.isfile(path):
            if os.path.getsize(path) == 0:
                raise SslrtError(f"model file is empty: {path}")
            return cls(checkpoint=os.path.abspath(path))
        raise SslrtError(f"model not found: {path} (give an export directory or a checkpoint file)")

    def exported(self, progress=None) -> ExportedModel:
        """The export directory, exporting the checkpoint into the cache first if need be."""
        if self._export is None:
            if self.export_dir is None:
                sha = sha256_file(self.checkpoint)
                self.export_dir = str(cache_root() / "exports" / sha[:24])
            if os.path.isfile(os.path.join(self.export_dir, MANIFEST)):
                self._export = read_export(self.export_dir)
            else:
                from sslrt.export.onnx import export_checkpoint

                self._export = export_checkpoint(self.checkpoint, self.export_dir, progress=progress)
        return self._export

    def checkpoint_for_reference(self) -> str:
        """The checkpoint behind this model, checked to be the one that was exported."""
        if self.checkpoint is None:
            raise SslrtError("the torch backend needs the checkpoint; this export directory records none")
        if not os.path.isfile(self.checkpoint):
            raise SslrtError(f"the torch backend needs the checkpoint this model was exported from, which is gone: {self.checkpoint}")
        if self._export is not None and self._export.checkpoint_sha256 and sha256_file(self.checkpoint) != self._export.checkpoint_sha256:
            raise SslrtError(f"checkpoint {self.checkpoint} changed since it was exported to {self._export.directory}: re-export")
        return self.checkpoint
