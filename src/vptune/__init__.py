"""vptune: Visual Prompt Tuning for frozen timm Vision Transformers.

    import vptune
    model = vptune.PromptedViT(backbone, vptune.PromptConfig(num_tokens=10, mode="deep"), num_classes=10)
    ...train model.trainable_parameters()...
    model.save_task("runs/my-task")
    model = vptune.load_task("runs/my-task", backbone=backbone)
"""
from importlib.metadata import PackageNotFoundError, version

from .checkpoint import CheckpointError, load_task, save_task
from .config import PromptConfig
from .model import ParameterCount, PromptedViT, count_parameters

try:
    __version__ = version("vptune")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["PromptConfig", "PromptedViT", "count_parameters", "ParameterCount", "save_task", "load_task",
           "CheckpointError", "__version__"]
