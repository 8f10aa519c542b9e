"""The one place that knows VPT's semantics: the prompt config, the prompts, the prompted ViT, and the prefix
attention fast path. Imports only torch, timm and its own files: no file I/O, no training, no methods."""
from .config import INITS, LOCATIONS, MODES, POOLINGS, PromptConfig
from .prompted_vit import FeatureNorm, ParameterCount, PromptedViT, count_parameters
from .prompts import Prompts

__all__ = ["PromptConfig", "MODES", "LOCATIONS", "INITS", "POOLINGS", "PromptedViT", "FeatureNorm", "Prompts", "ParameterCount",
           "count_parameters"]
