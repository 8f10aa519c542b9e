"""`BackboneAdapter`: what the prompted model needs to know of one timm model family, and the registry of families.

The prompted model (`prompted.py`) knows VPT's semantics; an adapter knows a backbone's insides. It answers:
- how an image becomes tokens: `embed` (patch embedding, [CLS] and register tokens, absolute positions);
- how one block runs with prompt tokens in its sequence (`block`, the reference "tokens" path) and, where the
  family allows, with prompt keys/values only (`prompt_kv` + `prefix_block`, the fast path);
- the final norms and the poolings that make sense (`pool`), the patch grid, width and depth;
- which prompt locations it supports, and what the methods that tune backbone tensors may touch.
Token layout in every family: [prefix tokens ([CLS], registers), prompt slots (p), patch tokens (m)].

Adapters are found by the backbone's class (`adapter_for`): the first registered family whose timm class the
backbone is an instance of, so a user's subclass of a timm model works. A new family is one file: subclass
`BackboneAdapter`, set `family` and `timm_classes`, decorate with `@register_family`.
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import nn

from ..attention import kv_width, prompt_key_values
from ..config import LOCATIONS, POOLINGS

FAMILIES: dict[str, type["BackboneAdapter"]] = {}


def register_family(cls: type["BackboneAdapter"]) -> type["BackboneAdapter"]:
    if cls.family in FAMILIES:
        raise RuntimeError(f"backbone family {cls.family!r} is registered twice")
    FAMILIES[cls.family] = cls
    return cls


def family_of(backbone: nn.Module) -> type["BackboneAdapter"] | None:
    """The adapter class for this backbone's class (or a parent class of it), None if no family knows it."""
    return next((cls for cls in FAMILIES.values() if isinstance(backbone, cls.timm_classes)), None)


def adapter_for(backbone: nn.Module) -> "BackboneAdapter":
    """The adapter for a timm backbone; TypeError in one line naming the supported families otherwise."""
    cls = family_of(backbone)
    if cls is None:
        raise TypeError(f"vptune has no adapter for {type(backbone).__name__}; supported backbone families: "
                        f"{supported_families()}")
    return cls(backbone)


def supported_families() -> str:
    """'vit (timm VisionTransformer), eva (timm Eva: ...)' for error messages and --help."""
    return ", ".join(f"{name} ({cls.description})" for name, cls in FAMILIES.items())


class BackboneAdapter:
    """One timm family's insides, behind the few calls the prompted model makes. Holds the backbone (a reference,
    not a submodule: the prompted model owns it as `backbone`)."""

    family: ClassVar[str]
    description: ClassVar[str]
    timm_classes: ClassVar[tuple[type, ...]]
    locations: ClassVar[tuple[str, ...]] = LOCATIONS

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone

    # ------------------------------------------------------------------------------------------- shape
    @property
    def blocks(self) -> Sequence[nn.Module]:
        """The transformer blocks in order (a hierarchical backbone's stages, one after the other)."""
        return self.backbone.blocks

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def width_at(self, index: int) -> int:
        """Width of the tokens entering block `index` (a prompt there has this width)."""
        return self.embed_dim

    def merges_after(self, index: int) -> bool:
        """Whether patch merging follows block `index` (a hierarchical backbone's stage ends there)."""
        return False

    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def num_prefix_tokens(self) -> int:
        """[CLS] and register tokens in front of the patches (prompts go right after them)."""
        return self.backbone.num_prefix_tokens

    @property
    def has_class_token(self) -> bool:
        return getattr(self.backbone, "cls_token", None) is not None

    @property
    def patch_embed(self) -> nn.Module:
        return self.backbone.patch_embed

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.patch_size)

    @property
    def img_size(self) -> tuple[int, int]:
        """The input size the backbone is built for (height, width)."""
        return tuple(self.patch_embed.img_size)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def attended_tokens(self, index: int) -> int:
        """Image tokens one attention of block `index` sees at the input size the backbone is built for: every
        patch in a global block (windowed families: one window's worth)."""
        return self.num_patches

    @property
    def final_grid(self) -> tuple[int, int]:
        """The feature map (h, w) that `dense` gives at the input size the backbone is built for."""
        return tuple(size // patch for size, patch in zip(self.img_size, self.patch_size))

    @property
    def dense_stride(self) -> int:
        """Image pixels a side per feature of `dense`'s map."""
        return self.patch_size[0]

    @property
    def dynamic_img_size(self) -> bool:
        """True when the backbone takes images of any size (timm's dynamic_img_size)."""
        return bool(getattr(self.backbone, "dynamic_img_size", False))

    @property
    def dtype(self) -> torch.dtype:
        """The frozen weights' dtype (float32, or 16 bits with `--half-backbone`)."""
        return self.patch_embed.proj.weight.dtype

    @property
    def poolings(self) -> tuple[str, ...]:
        """What the head may read: [CLS] only where there is one."""
        return POOLINGS if self.has_class_token else tuple(p for p in POOLINGS if p != "cls")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.backbone.parameters())

    def summary(self) -> str:
        """One line for `vptune info`."""
        return (f"{self.family} ({type(self.backbone).__name__}): {self.depth} blocks, width {self.embed_dim}, "
                f"patch {self.patch_size}, {self.num_prefix_tokens} prefix token(s)")

    # -------------------------------------------------------------------------------------------- forward
    def embed(self, images: torch.Tensor, patches: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens (B, prefix + m, d): patch embedding (or the given `patches`, the patch
        embedding's output), prefix tokens, absolute positions, pre-norm."""
        raise NotImplementedError

    supports_extra_kv: ClassVar[bool] = False  # `block` takes learned key-value prompts (E2VPT)

    def block(self, index: int, x: torch.Tensor, prompts: int = 0, extra_kv: torch.Tensor | None = None
              ) -> torch.Tensor:
        """Block `index` on the full sequence x (B, prefix + prompts + m, d), prompts as ordinary tokens; with
        `extra_kv` (1, l, kv width), learned keys and values every token also attends to (no queries, no outputs)."""
        raise NotImplementedError

    def supports_prefix(self, index: int) -> bool:
        """Whether `prefix_block` reproduces block `index` exactly (its classes are known to us)."""
        return False

    def prompt_kv(self, index: int, prompts: torch.Tensor) -> torch.Tensor:
        """Prompt tokens (B or 1, p, d) entering block `index` -> their keys|values (B or 1, p, kv_width). This
        default fits pre-norm blocks with `norm1` and `attn`, as timm's ViT and Eva blocks are."""
        block = self.blocks[index]
        return prompt_key_values(block.attn, block.norm1(prompts))

    def kv_width(self, index: int) -> int:
        """Width of one token's keys|values row at block `index`."""
        return kv_width(self.blocks[index].attn)

    def prefix_block(self, index: int, x: torch.Tensor, prompt_kv: torch.Tensor | None, queries: int | None = None,
                     prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Block `index` on the real tokens x (B, prefix + m, d) with prompt keys/values as a prefix; the first
        `queries` tokens' outputs only, if set."""
        raise NotImplementedError

    def pool(self, x: torch.Tensor, pooling: str, prompt_outputs: torch.Tensor | None = None) -> torch.Tensor:
        """Final tokens (B, prefix + m, d) (or [CLS] alone, (B, 1, d)) -> what the head reads (B, d), after the
        backbone's final norms: [CLS], or the mean of the image tokens, the prompts' outputs, or all of them."""
        bb = self.backbone
        if pooling == "cls":
            return bb.fc_norm(bb.norm(x[:, 0]))
        tokens = {"image-pool": lambda: x[:, self.num_prefix_tokens:], "prompt-pool": lambda: prompt_outputs,
                  "global-pool": lambda: x if prompt_outputs is None else torch.cat([x, prompt_outputs], dim=1)}
        return bb.fc_norm(bb.norm(tokens[pooling]()).mean(dim=1))

    def dense(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Final tokens (B, prefix + m, d) -> the final normed image tokens as a feature map (B, d, h, w), the
        `grid` of patches (what timm's `forward_features` gives, without the prefix tokens)."""
        tokens = self.backbone.norm(x[:, self.num_prefix_tokens:])
        return tokens.transpose(1, 2).unflatten(-1, grid)

    def grid_of(self, images: torch.Tensor) -> tuple[int, int]:
        """The patch grid (h, w) of images (B, 3, H, W)."""
        (height, width), (ph, pw) = images.shape[-2:], self.patch_size
        return height // ph, width // pw

    # ------------------------------------------------------------------------- what methods may tune
    def last_blocks(self, k: int) -> Sequence[nn.Module]:
        """The last k blocks and the final norms (partial-k fine-tuning)."""
        return [*self.backbone.blocks[-k:], self.backbone.norm, self.backbone.fc_norm]

    def lora_targets(self) -> list[str]:
        """Names of the linear layers LoRA adapts (the attention's input projections)."""
        return ["qkv"]
