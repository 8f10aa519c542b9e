"""vptune: Visual Prompt Tuning for frozen timm Vision Transformers.

    import vptune
    backbone = vptune.create_backbone()                                    # offline DINOv2 ViT-S/14
    model = vptune.build_model("vpt-deep", backbone, vptune.PromptConfig(num_tokens=10), num_classes=10)
    ...train model.trainable_parameters(), or vptune.train(vptune.TrainConfig(data=..., method=...))...
    vptune.save_task(model, "runs/my-task")
    model = vptune.load_task("runs/my-task", backbone=backbone)
    vptune.Predictor(model).predict_files(["cat.jpg"])
"""
from . import backbones, data, methods, model, tasks  # noqa: F401  (vptune.backbones.create_backbone etc.)
from ._io import package_version
from .backbones import create_backbone
from .data import DataError, load_data
from .errors import BackboneError, CheckpointError, ConfigError, TrainingError, VptuneError, WriteError
from .inference import MultiTaskModel, Predictor, evaluate
from .methods import METHODS, build_model, get_method
from .model import ParameterCount, PromptConfig, PromptedModel, PromptedViT, auto_num_tokens, count_parameters
from .rundir import RunDir
from .tasks import load_task, save_task
from .training import TrainConfig, load_train_config, train

__version__ = package_version()

__all__ = ["PromptConfig", "PromptedModel", "PromptedViT", "count_parameters", "ParameterCount", "auto_num_tokens",
           "create_backbone", "build_model",
           "get_method", "METHODS", "save_task", "load_task", "TrainConfig", "load_train_config", "train",
           "load_data", "Predictor", "MultiTaskModel", "evaluate", "RunDir", "VptuneError", "ConfigError", "BackboneError",
           "CheckpointError", "DataError", "TrainingError", "WriteError", "__version__"]
