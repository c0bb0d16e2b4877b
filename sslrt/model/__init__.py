"""The PyTorch reference: the paper's two-tower network and its checkpoint loader (needs torch)."""
from sslrt.model.checkpoint import load_checkpoint, read_state_dict
from sslrt.model.network import SoundLocalizer, create_model

__all__ = ["SoundLocalizer", "create_model", "load_checkpoint", "read_state_dict"]
