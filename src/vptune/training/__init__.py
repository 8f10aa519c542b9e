"""Training: settings (`TrainConfig`), the loop (`train`), and the stem cache it uses."""
from .config import TrainConfig, load_train_config, read_settings
from .loop import train, warmup_cosine

__all__ = ["TrainConfig", "load_train_config", "read_settings", "train", "warmup_cosine"]
