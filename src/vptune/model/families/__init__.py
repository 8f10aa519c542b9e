"""One adapter per timm backbone family (see `base.py`); importing this package registers them all."""
from .base import FAMILIES, BackboneAdapter, adapter_for, family_of, register_family, supported_families
from .vit import ViTAdapter  # noqa: I001  (registration order: the families are listed in this order)
from .eva import EvaAdapter
from .swin import SwinAdapter
from .sam import SamAdapter

__all__ = ["FAMILIES", "BackboneAdapter", "adapter_for", "family_of", "register_family", "supported_families",
           "ViTAdapter", "EvaAdapter", "SwinAdapter", "SamAdapter"]
