"""The one place that knows VPT's semantics: prompts, the prompted ViT, and the prefix attention fast path."""
from .prompted_vit import ParameterCount, PromptedViT, count_parameters
from .prompts import Prompts

__all__ = ["PromptedViT", "Prompts", "ParameterCount", "count_parameters"]
