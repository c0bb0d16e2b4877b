"""Training of the paper's network on generated scenes (see trainer.py)."""
from sslrt.train.trainer import TrainConfig, evaluate, write_released_checkpoint, train

__all__ = ["TrainConfig", "train", "evaluate", "write_released_checkpoint"]
