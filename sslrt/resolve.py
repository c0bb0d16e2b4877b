"""Resolve, then load: what the user points at -> one verified exported model.

`resolve_model` takes an export directory, a checkpoint file or nothing (the shipped demo model)
and returns a `ResolvedModel`: a validated export directory, its spec, and the checkpoint behind
it. It is the only place on the run path that may call the exporter (for a checkpoint that has
no cached export yet; the exporter needs torch and is imported only then). Engines are created
from a ResolvedModel and never export.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sslrt.errors import SslrtError
from sslrt.spec import ModelSpec
from sslrt.store.atomic import exclusive_lock
from sslrt.store.cache import cache_root, export_cache_dir
from sslrt.store.manifest import MANIFEST, ExportedModel, read_export, sha256_file

ASSETS = Path(__file__).resolve().parent / "assets" / "demo"
DEMO_CHECKPOINT = ASSETS / "demo_sup.pth.tar"
DEMO_EXPORT = ASSETS / "export"


def demo_model_dir() -> str:
    """The shipped demo export (the paper's network at width 8, trained by sslrt on generated scenes)."""
    if not (DEMO_EXPORT / MANIFEST).is_file():
        raise SslrtError(f"the demo model is missing from this installation ({DEMO_EXPORT}); reinstall sslrt or pass --model")
    return str(DEMO_EXPORT)


@dataclass
class ResolvedModel:
    """A verified export directory and the checkpoint it records; or, for the PyTorch reference
    alone, a checkpoint and its family's spec with no export (`exported` None)."""

    exported: ExportedModel | None
    checkpoint: str | None = None
    checkpoint_spec: ModelSpec | None = None

    @property
    def directory(self) -> str:
        return self.exported.directory if self.exported is not None else os.path.dirname(self.checkpoint or "")

    @property
    def spec(self) -> ModelSpec:
        return self.exported.spec if self.exported is not None else self.checkpoint_spec

    @property
    def artifacts(self) -> dict[str, dict]:
        return self.exported.artifacts if self.exported is not None else {}

    def checkpoint_for_reference(self) -> str:
        """The checkpoint behind this model (the PyTorch reference runs it), checked to be the one
        that was exported."""
        if self.checkpoint is None:
            raise SslrtError("the torch backend needs the checkpoint; this export directory records none")
        if not os.path.isfile(self.checkpoint):
            raise SslrtError(f"the torch backend needs the checkpoint this model was exported from, which is gone: {self.checkpoint}")
        recorded = self.exported.checkpoint_sha256 if self.exported is not None else None
        if recorded and sha256_file(self.checkpoint) != recorded:
            raise SslrtError(f"checkpoint {self.checkpoint} changed since it was exported to {self.directory}: re-export")
        return self.checkpoint


def resolve_model(model: str | os.PathLike | ResolvedModel | None, progress=None, family: str | None = None,
                  export: bool = True) -> ResolvedModel:
    """An export directory, a checkpoint (exported once into the cache, keyed by its sha256) or
    None (the demo model) -> a ResolvedModel. `family` forces the model family of a checkpoint.
    `export` False: a checkpoint is only identified, not exported (what the PyTorch reference
    backends need; identifying it needs torch)."""
    if isinstance(model, ResolvedModel):
        return model
    path = demo_model_dir() if model is None else os.fspath(model)
    if os.path.isdir(path):
        exported = read_export(path)
        return ResolvedModel(exported, exported.checkpoint_path)
    if not os.path.isfile(path):
        raise SslrtError(f"model not found: {path} (give an export directory or a checkpoint file)")
    if os.path.getsize(path) == 0:
        raise SslrtError(f"model file is empty: {path}")
    checkpoint = os.path.abspath(path)
    if not export:
        from sslrt.model.checkpoint import identify_checkpoint  # torch: the reference backends have it

        return ResolvedModel(None, checkpoint, identify_checkpoint(checkpoint, family))
    sha = sha256_file(checkpoint)
    cached = export_cache_dir(sha)
    exported = _cached_export(cached, sha, family)
    if exported is not None:
        return ResolvedModel(exported, checkpoint)
    # One exporter per checkpoint: a second process waits on the lock, then finds the export.
    with exclusive_lock(str(cache_root() / "locks" / f"{cached.name}.lock")):
        exported = _cached_export(cached, sha, family)
        if exported is None:
            from sslrt.export import export_checkpoint  # needs torch: only for a checkpoint not exported yet

            exported = export_checkpoint(checkpoint, str(cached), progress=progress, family=family)
    return ResolvedModel(exported, checkpoint)


def _cached_export(cached: Path, sha: str, family: str | None) -> ExportedModel | None:
    """The cache entry if it is an intact export of the checkpoint with this sha256 (its hashes
    included); None where it must be (re)made. The cache is keyed by content, but a folder is
    trusted only if its manifest records that content, and a damaged entry is ours to redo."""
    if not (cached / MANIFEST).is_file():
        return None
    try:
        exported = read_export(str(cached), verify_hashes=True)
    except SslrtError:
        return None
    if exported.checkpoint_sha256 != sha or (family is not None and exported.spec.name != family):
        return None
    return exported
