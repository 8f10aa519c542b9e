"""The one place that knows VPT's semantics and the backbones' insides: the prompt config, the prompts, where they go
(`locations`), one adapter per timm backbone family (`families`), the prefix attention fast path, and the prompted
model. Imports only torch, timm and its own files: no file I/O, no training, no methods."""
from .config import INITS, LOCATIONS, MERGES, MODES, POOLINGS, PromptConfig
from .length import auto_num_tokens
from .families import FAMILIES, BackboneAdapter, adapter_for, family_of, supported_families
from .prompted import FeatureNorm, ParameterCount, PromptedModel, PromptedViT, backbone_data_config, count_parameters
from .prompts import Prompts
from .segmentation import HEADS, LEGACY_PUP_CHANNELS, PromptedSegmenter, check_feature_map, pup_channels
from .pruning import SEGMENTS, PruningPlan, plan_pruning, prompt_importance, prune_prompts, pruned_count

__all__ = ["PromptConfig", "MODES", "LOCATIONS", "INITS", "POOLINGS", "MERGES", "PromptedModel", "PromptedViT", "FeatureNorm",
           "Prompts", "ParameterCount", "count_parameters", "backbone_data_config", "BackboneAdapter", "adapter_for",
           "family_of", "supported_families", "FAMILIES", "PruningPlan", "plan_pruning", "prompt_importance",
           "prune_prompts", "pruned_count", "SEGMENTS", "PromptedSegmenter", "HEADS", "LEGACY_PUP_CHANNELS",
           "pup_channels", "check_feature_map", "auto_num_tokens"]
