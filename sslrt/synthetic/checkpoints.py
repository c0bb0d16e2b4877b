"""Random checkpoints of the paper's network in the released layouts, for tests and benchmarks
(random weights with randomised BatchNorm statistics; they say nothing about localization quality)."""
from __future__ import annotations


def make_checkpoint(path, width: int = 4, seed: int = 0, layout: str = "released", prefix: str = "", extras: bool = True):
    """A checkpoint of the paper's network at `width`, with randomised BatchNorm statistics."""
    import torch

    from sslrt.config import ModelConfig
    from sslrt.model.network import SoundLocalizer

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, ref in SoundLocalizer(ModelConfig(width=width)).state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(ref.shape, generator=gen) * 1.5 + 0.5
        elif key.endswith("running_mean"):
            state[key] = torch.rand(ref.shape, generator=gen) - 0.5
        elif ref.ndim == 1:
            state[key] = torch.rand(ref.shape, generator=gen) + 0.5 if key.endswith("weight") else (torch.rand(ref.shape, generator=gen) - 0.5) * 0.4
        else:
            fan_in = ref[0].numel()
            state[key] = torch.randn(ref.shape, generator=gen) * (2.0 / fan_in) ** 0.5
    if extras:  # the training-only tensors of the released files, which inference must ignore
        e = 8 * width
        state.update({"img_proj.weight": torch.randn(e, e), "img_proj.bias": torch.zeros(e),
                      "aud_proj.weight": torch.randn(e, e), "aud_proj.bias": torch.zeros(e),
                      "vision_fc1.weight": torch.randn(e, 2 * e, 1, 1), "conv3.weight": torch.randn(1, 1, 1, 1),
                      "norm3.weight": torch.ones(1), "imgnet.fc.weight": torch.randn(1000, e),
                      "audnet.conv1_flow.weight": torch.randn(width, 6, 7, 7)})
    state = {prefix + k: v for k, v in state.items()}
    if layout == "released":
        obj = {"epoch": 3, "model_state_dict": state, "optimizer_state_dict": {}}
    elif layout == "model":
        obj = {"model": state, "epoch": 3}
    else:
        obj = state
    torch.save(obj, path)
    return path
