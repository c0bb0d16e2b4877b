"""Read every released checkpoint layout into the network's state dict, checked in one place.

Layouts seen in the wild: {'model_state_dict': ...} (the paper's, with training-only extras),
{'model': ...} (EZ-VSL, SLAVC, FNAC), a bare state dict; any of them with DataParallel's
`module.` prefix.
"""
from __future__ import annotations

import os

import torch

from sslrt.config import ModelConfig
from sslrt.errors import SslrtError

_TOWERS = ("imgnet.", "audnet.")
# Parameters of the released towers that inference never uses: the other stems and the classifier.
_UNUSED_IN_TOWER = ("conv1_flow.", "fc.")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint file (weights only) and return its raw, un-prefixed state dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SslrtError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise SslrtError(f"checkpoint is empty: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on foreign files (KeyError, UnpicklingError, ...)
        # torch's own message runs over many lines of advice about weights_only; its type says enough.
        raise SslrtError(f"not a PyTorch checkpoint (or it holds more than weights): {path} ({type(exc).__name__})") from None
    if isinstance(obj, dict):
        for key in ("model_state_dict", "model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SslrtError(f"checkpoint holds no state dict of tensors: {path}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def infer_config(state: dict[str, torch.Tensor], path: str = "checkpoint") -> ModelConfig:
    """Read the base width from the vision stem; everything else is fixed by the architecture."""
    key = "imgnet.conv1.weight"
    if key not in state:
        raise SslrtError(f"{path}: missing tensor '{key}': not a checkpoint of the paper's model")
    shape = tuple(state[key].shape)
    if len(shape) != 4 or shape[1:] != (3, 7, 7):
        raise SslrtError(f"{path}: tensor '{key}' has shape {list(shape)}, expected [width, 3, 7, 7]")
    return ModelConfig(width=shape[0])


def select_inference_weights(state: dict[str, torch.Tensor], cfg: ModelConfig, path: str) -> dict[str, torch.Tensor]:
    """The tensors the network needs, each checked for presence, shape and finiteness by name."""
    from sslrt.model.network import SoundLocalizer

    expected = SoundLocalizer(cfg).state_dict()
    out = {}
    for key, ref in expected.items():
        if key not in state:
            raise SslrtError(f"{path}: missing tensor '{key}': not a checkpoint of the paper's model")
        got = state[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise SslrtError(f"{path}: tensor '{key}' has shape {list(got.shape)}, expected {list(ref.shape)}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise SslrtError(f"{path}: tensor '{key}' contains NaN or infinite values")
        out[key] = got.to(ref.dtype)
    return out


def load_checkpoint(path: str | os.PathLike):
    """Checkpoint file -> (SoundLocalizer in eval mode, ModelConfig). Extras are ignored."""
    path = os.fspath(path)
    state = read_state_dict(path)
    if not any(k.startswith(_TOWERS) for k in state):
        raise SslrtError(f"{path}: no 'imgnet.*' or 'audnet.*' tensors: not a checkpoint of the paper's model")
    cfg = infer_config(state, path)
    from sslrt.model.network import create_model

    return create_model(cfg, select_inference_weights(state, cfg, path)), cfg


def save_checkpoint(path: str | os.PathLike, model_state: dict[str, torch.Tensor], epoch: int = 0, **extra) -> None:
    """Write the released layout: {'epoch', 'model_state_dict', 'optimizer_state_dict'}."""
    torch.save({"epoch": epoch, "model_state_dict": model_state, "optimizer_state_dict": extra.pop("optimizer", {}), **extra}, path)
