"""Read every family's released checkpoint into its reference network, safely, checked in one place.

Safety: `torch.load(weights_only=True)`, with only the non-tensor types the families' files are
known to pickle allowed by name (the numpy.float64 metric scalars of EZ-VSL, SLAVC, FNAC and
SSL-TIE; `CheckpointSpec.allowed_globals`). A file pickling anything else is refused with one
line naming it, before anything is unpickled; code in a pickle never runs.

Family: recognised from the tensors (sslrt.spec `CheckpointSpec.required` / `forbidden` key
groups, after stripping DataParallel's `module.`), never from the file name; `family=` overrides.
When several families fit, the one whose required groups strictly contain the others' wins: an
lvs file (all three stems, no training heads) and an ssltie file (vision_fc1/conv3/norm3, no
projections) also fit ours' looser rule (the lvs-style towers). ours and lvs run the same network
on the same inputs; what tells their files apart is ours' training-only heads (img_proj/aud_proj
Linear, vision_fc1, conv3, norm3), which LVS's released DataParallel state dict lacks; the prefix
is not used (an ours file with 'module.' keys is still ours). A file with the towers alone
(sslrt's compact layout) is ours. EZ-VSL and FNAC files hold the
same 244 tensors under the same top-level layout ({'model', 'optimizer', 'epoch', 'best_cIoU',
'best_Auc'}); only the released key prefix differs by convention (FNAC's single-GPU training
saved no 'module.'), which no file guarantees, so such a file is reported as ambiguous and the
user passes the family.

Layouts: {'model_state_dict': ...} (ours, lvs), {'model': ...} (EZ-VSL, SLAVC, FNAC),
{'state_dict': ...} (SSL-TIE), or a bare state dict; with or without `module.`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from sslrt.config import ModelConfig
from sslrt.errors import SslrtError

STATE_DICT_ENTRIES = ("model_state_dict", "model", "state_dict")
PAPER_MODEL = "not a checkpoint of the paper's model or of a known peer family"


@dataclass(frozen=True)
class CheckpointInfo:
    """What the loader found, for the export manifest."""

    family: str
    detected: bool  # False when the caller named the family
    entry: str | None  # the top-level entry holding the state dict (None: a bare state dict)
    prefix: str  # "module." when the keys carried DataParallel's prefix, else ""
    width: int
    ignored: tuple[str, ...] = ()  # tensors present that inference does not read (training-only, unused stems)
    unexpected: tuple[str, ...] = ()  # tensors unknown to the family, ignored as its official (non-strict) loader does
    metadata: dict = field(default_factory=dict)  # top-level scalars (epoch, best_* metrics) as plain Python


class LoadedCheckpoint(NamedTuple):
    model: torch.nn.Module
    cfg: ModelConfig
    spec: object  # sslrt.spec.ModelSpec
    info: CheckpointInfo


def _numpy_globals(names) -> list:
    """Objects for the allowed names, each as (object, name) so that a numpy 1.x file's
    numpy.core.* name resolves to numpy 2's numpy._core.* object."""
    import numpy as np

    try:
        scalar = np._core.multiarray.scalar
    except AttributeError:  # numpy 1.x
        scalar = np.core.multiarray.scalar
    known = {"numpy.core.multiarray.scalar": scalar, "numpy._core.multiarray.scalar": scalar, "numpy.dtype": np.dtype}
    if hasattr(np, "dtypes"):  # numpy >= 1.25: a float64 dtype is an instance of this class
        known["numpy.dtypes.Float64DType"] = np.dtypes.Float64DType
    out = []
    for name in names:
        if name == "numpy.dtypes.Float64DType" and name not in known:
            continue  # older numpy: plain np.dtype
        if name not in known:
            raise RuntimeError(f"a model spec allows {name!r}, which sslrt does not know how to allow")
        out.append((known[name], name))
    return out


def _allowed_global_names() -> tuple[str, ...]:
    from sslrt.spec import all_specs

    return tuple(sorted({name for spec in all_specs() for name in spec.checkpoint.allowed_globals}))


def read_checkpoint_file(path: str | os.PathLike):
    """torch.load(weights_only=True) of the whole file with only the families' allowed globals."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SslrtError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise SslrtError(f"checkpoint is empty: {path}")
    allowed = _allowed_global_names()
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        found = []  # not a zip checkpoint: torch.load below says so
    others = sorted(set(found) - set(allowed))
    if others:
        raise SslrtError(f"checkpoint pickles {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}, "
                         f"which sslrt does not unpickle (it loads weights only): {path}")
    try:
        with torch.serialization.safe_globals(_numpy_globals(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on foreign files (KeyError, UnpicklingError, ...)
        # torch's own message runs over many lines of advice about weights_only; its type says enough.
        raise SslrtError(f"not a PyTorch checkpoint (or it holds more than weights): {path} ({type(exc).__name__})") from None


def _split(obj, path: str) -> tuple[dict, str | None, dict]:
    """(raw state dict, its entry, top-level metadata) of a loaded file."""
    entry, metadata = None, {}
    if isinstance(obj, dict):
        for key in STATE_DICT_ENTRIES:
            if isinstance(obj.get(key), dict) and obj[key]:
                entry = key
                break
        if entry is not None:
            metadata = {k: _plain_scalar(v) for k, v in obj.items()
                        if k != entry and _plain_scalar(v) is not None}
            obj = obj[entry]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SslrtError(f"checkpoint holds no state dict of tensors: {path}")
    return obj, entry, metadata


def _plain_scalar(value):
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy / torch scalars (np.float64 is a float)
        return value.item()
    if isinstance(value, (bool, int, float, str)):
        return value
    return None


def _strip_prefix(state: dict) -> tuple[dict, str]:
    prefixed = [k.startswith("module.") for k in state]
    out = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    return out, ("module." if all(prefixed) else "" if not any(prefixed) else "mixed")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint file (weights only) and return its raw, un-prefixed state dict."""
    path = os.fspath(path)
    return _strip_prefix(_split(read_checkpoint_file(path), path)[0])[0]


def _has(keys, group: str) -> bool:
    return any(k.startswith(group) for k in keys)


def fitting_families(keys) -> list[str]:
    """The families whose key rules the keys fit, the most specific only (see the module doc)."""
    from sslrt.spec import all_specs

    fits = [s for s in all_specs()
            if all(_has(keys, g) for g in s.checkpoint.required) and not any(_has(keys, g) for g in s.checkpoint.forbidden)]
    return [s.name for s in fits
            if not any(set(s.checkpoint.required) < set(o.checkpoint.required) for o in fits)]


def detect_family(state: dict, path: str = "checkpoint") -> str:
    """The one family a state dict (un-prefixed) belongs to; one line otherwise."""
    from sslrt.spec import families

    names = fitting_families(state)
    if len(names) == 1:
        return names[0]
    if len(names) > 1:
        return _ambiguous(names, path)
    groups = sorted({k.split(".")[0] + ("." + k.split(".")[1] if k.split(".")[0] in ("imgnet", "audnet") and
                                         k.split(".")[1].startswith("conv") else "") for k in state})
    shown = ", ".join(groups[:8]) + (" ..." if len(groups) > 8 else "")
    raise SslrtError(f"{path}: {PAPER_MODEL} (found tensor groups {shown}; known families: {', '.join(families())})")


def _ambiguous(names: list[str], path: str):
    raise SslrtError(f"{path}: the tensors fit the families {' and '.join(names)} alike and nothing in the file tells "
                     f"them apart: pass --family {'|'.join(names)}")


def infer_config(state: dict[str, torch.Tensor], path: str = "checkpoint", spec=None) -> ModelConfig:
    """Read the base width from the vision stem; everything else is fixed by the architecture."""
    from sslrt.model.network import config_for

    key = "imgnet.conv1.weight"
    if key not in state:
        raise SslrtError(f"{path}: missing tensor '{key}': not a checkpoint of the paper's model")
    shape = tuple(state[key].shape)
    if len(shape) != 4 or shape[1:] != (3, 7, 7) or shape[0] < 1:
        raise SslrtError(f"{path}: tensor '{key}' has shape {list(shape)}, expected [width, 3, 7, 7]")
    if spec is None:
        return ModelConfig(width=shape[0])
    return config_for(spec, width=shape[0])


def select_inference_weights(state: dict[str, torch.Tensor], cfg: ModelConfig, path: str, spec=None,
                             ) -> dict[str, torch.Tensor]:
    """The tensors the network needs, each checked for presence, shape and finiteness by name."""
    from sslrt.model.network import SoundLocalizer, build_network

    expected = (SoundLocalizer(cfg) if spec is None else build_network(spec, cfg)).state_dict()
    what = "the paper's model" if spec is None or spec.name == "ours" else f"a {spec.name} model"
    out = {}
    for key, ref in expected.items():
        if key not in state:
            raise SslrtError(f"{path}: missing tensor '{key}': not a checkpoint of {what}")
        got = state[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise SslrtError(f"{path}: tensor '{key}' has shape {list(got.shape)}, expected {list(ref.shape)}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise SslrtError(f"{path}: tensor '{key}' contains NaN or infinite values")
        out[key] = got.to(ref.dtype)
    return out


def load_family_checkpoint(path: str | os.PathLike, family: str | None = None) -> LoadedCheckpoint:
    """Checkpoint file -> LoadedCheckpoint(model in eval mode, ModelConfig, ModelSpec, CheckpointInfo).

    `family` None: recognised from the tensors (module doc); else that family's spec is used
    and the file must hold its tensors. Tensors the family's released files carry but inference
    never reads are ignored and listed in `info.ignored`; unknown tensors are refused for
    families whose official loader is strict and listed in `info.unexpected` otherwise (ours).
    """
    from sslrt.model.network import create_model
    from sslrt.spec import get_spec

    path = os.fspath(path)
    raw, entry, metadata = _split(read_checkpoint_file(path), path)
    state, prefix = _strip_prefix(raw)
    if prefix == "mixed":
        raise SslrtError(f"{path}: some tensor names carry DataParallel's 'module.' prefix and others do not")
    detected = family is None
    spec = get_spec(detect_family(state, path) if detected else family)
    cfg = infer_config(state, path, spec)
    weights = select_inference_weights(state, cfg, path, spec)
    rest = sorted(k for k in state if k not in weights)
    ignored = tuple(k for k in rest if k.startswith(spec.checkpoint.ignored))
    unexpected = tuple(k for k in rest if k not in ignored)
    if unexpected and spec.checkpoint.strict:
        raise SslrtError(f"{path}: tensor '{unexpected[0]}'{f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''} "
                         f"is not part of a {spec.name} model")
    info = CheckpointInfo(family=spec.name, detected=detected, entry=entry, prefix=prefix, width=cfg.width,
                          ignored=ignored, unexpected=unexpected, metadata=metadata)
    return LoadedCheckpoint(create_model(cfg, weights, spec), cfg, spec, info)


def identify_checkpoint(path: str | os.PathLike, family: str | None = None):
    """The ModelSpec of a checkpoint file (recognised from its tensors, or the named family),
    without building the network: what resolving a checkpoint for the PyTorch reference needs."""
    from sslrt.spec import get_spec

    path = os.fspath(path)
    if family is not None:
        return get_spec(family)
    raw, _, _ = _split(read_checkpoint_file(path), path)
    state, prefix = _strip_prefix(raw)
    if prefix == "mixed":
        raise SslrtError(f"{path}: some tensor names carry DataParallel's 'module.' prefix and others do not")
    return get_spec(detect_family(state, path))


def load_checkpoint(path: str | os.PathLike, family: str | None = None):
    """Checkpoint file -> (network in eval mode, ModelConfig), for callers that need no more;
    `load_family_checkpoint` also returns the family's spec and what was ignored."""
    loaded = load_family_checkpoint(path, family)
    return loaded.model, loaded.cfg


def save_checkpoint(path: str | os.PathLike, model_state: dict[str, torch.Tensor], epoch: int = 0, **extra) -> None:
    """Write the released layout: {'epoch', 'model_state_dict', 'optimizer_state_dict'}."""
    torch.save({"epoch": epoch, "model_state_dict": model_state, "optimizer_state_dict": extra.pop("optimizer", {}), **extra}, path)
