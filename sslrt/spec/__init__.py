"""Model families as data: one frozen `ModelSpec` per family, a registry, one way to resolve one.

A spec holds everything the engine knows of a family (cf. timm's pretrained configs): how its
checkpoint is laid out and recognised, which network the PyTorch reference builds, the exact
test-time image and audio transforms, the heatmap's size and units, how a test set upsamples it,
and the "no sound source" threshold. Preprocessing is a pure function of (input, spec); an export
records its spec in the manifest, so the torch-free runtime rebuilds it from the manifest alone.

Adding a family = one module in this package defining a `SPEC` plus its line in `_FAMILY_MODULES`
(and, if it needs a network the reference does not have yet, that network in sslrt/model/).
"""
from __future__ import annotations

import importlib

from sslrt.errors import SslrtError
from sslrt.spec.base import AudioSpec, CheckpointSpec, ImageSpec, ModelSpec

# family name -> module defining SPEC; imported on first use.
_FAMILY_MODULES = {
    "ours": "sslrt.spec.ours",
    "lvs": "sslrt.spec.lvs",
    "ezvsl": "sslrt.spec.ezvsl",
    "slavc": "sslrt.spec.slavc",
    "fnac": "sslrt.spec.fnac",
    "ssltie": "sslrt.spec.ssltie",
}
_LOADED: dict[str, ModelSpec] = {}


def families() -> tuple[str, ...]:
    """Names of every registered family, in registry order."""
    return tuple(_FAMILY_MODULES)


def get_spec(name: str) -> ModelSpec:
    """The spec of family `name`; one line naming the known families otherwise."""
    if name not in _FAMILY_MODULES:
        raise SslrtError(f"unknown model family {name!r} (known: {', '.join(_FAMILY_MODULES)})")
    if name not in _LOADED:
        spec = importlib.import_module(_FAMILY_MODULES[name]).SPEC
        if spec.name != name:
            raise RuntimeError(f"{_FAMILY_MODULES[name]} defines spec {spec.name!r}, registered as {name!r}")
        _LOADED[name] = spec
    return _LOADED[name]


def all_specs() -> list[ModelSpec]:
    return [get_spec(name) for name in _FAMILY_MODULES]


def spec_from_manifest(entry: dict | None) -> ModelSpec:
    """The spec an export recorded. Exports written before specs existed record none: they are
    of the paper's family, whose numbers they were made with."""
    if entry is None:
        return get_spec("ours")
    if not isinstance(entry, dict):
        raise SslrtError("manifest 'spec' is not an object: re-export")
    return ModelSpec.from_dict(entry)


DEFAULT_FAMILY = "ours"

__all__ = ["AudioSpec", "CheckpointSpec", "ImageSpec", "ModelSpec", "DEFAULT_FAMILY", "families", "get_spec",
           "all_specs", "spec_from_manifest"]
