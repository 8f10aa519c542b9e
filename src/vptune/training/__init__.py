"""Training: settings (`TrainConfig`), the loop (`train`), and the stem cache it uses."""
from .config import TrainConfig, load_train_config, read_settings
from .loop import check_new_run, train, warmup_cosine

__all__ = ["TrainConfig", "check_new_run", "load_train_config", "read_settings", "train", "warmup_cosine"]
