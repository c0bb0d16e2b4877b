"""The PyTorch reference: every family's network and the checkpoint loader (needs torch)."""
from sslrt.model.checkpoint import CheckpointInfo, LoadedCheckpoint, load_checkpoint, load_family_checkpoint, read_state_dict
from sslrt.model.network import ProjectedLocalizer, SoundLocalizer, build_network, config_for, create_model

__all__ = ["CheckpointInfo", "LoadedCheckpoint", "ProjectedLocalizer", "SoundLocalizer", "build_network", "config_for",
           "create_model", "load_checkpoint", "load_family_checkpoint", "read_state_dict"]
