"""Where the prompts go: one small class per `PromptConfig.location`.

A location decides the shape of one prompt row, how the image is embedded, which leading blocks see the image
alone (the stem), and how the blocks after the stem run with the prompts. It works through the prompted model's
calls (`PromptedModel.run_block`, `prompt_tokens`, `prompt_kv`, ...) and the backbone adapter, never a backbone's
insides, so every location works on every family whose adapter lists it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from timm.layers import Format, PatchEmbed, nchw_to
from torch import nn

if TYPE_CHECKING:  # type hints only: the model imports this file, not the other way round
    from .families import BackboneAdapter
    from .prompted import PromptedModel


class Location:
    name: ClassVar[str]
    is_tokens: ClassVar[bool] = False  # prompts are tokens of the sequence (prefix fast path, prompt-pool)

    def prompt_shape(self, adapter: "BackboneAdapter", num_tokens: int, dim: int) -> tuple[int, int]:
        """(length, width) of one block's prompt as learned; `dim` is the token width (or the projection's)."""
        return num_tokens, dim

    def embed(self, model: "PromptedModel", images: torch.Tensor) -> torch.Tensor:
        return model.adapter.embed(images)

    def stem_depth(self, model: "PromptedModel") -> int:
        """Blocks before the first one whose input the prompts change."""
        return model.prompt_blocks[0]

    def to_tokens(self, model: "PromptedModel", prompts: torch.Tensor) -> torch.Tensor:
        """Learned prompts (blocks, B or 1, p, width) -> token-space prompts (blocks, B or 1, p, d)."""
        return prompts

    def run_blocks(self, model: "PromptedModel", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stem output (B, prefix + m, d) -> final real tokens and the prompts' final outputs (or None)."""
        raise NotImplementedError


class Prepend(Location):
    """p extra tokens after the prefix tokens: inserted at the first prompted block, replaced at each later
    prompted block, carried through the blocks between (VPT's default)."""

    name = "prepend"
    is_tokens = True

    def run_blocks(self, model: "PromptedModel", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return _run_tokens(model, x) if model.path == "tokens" else _run_prefix(model, x)


class PrependPixel(Prepend):
    """p learned pixel patches, embedded by the frozen patch embedding (its projection and norm, no position), then
    inserted as `Prepend` inserts tokens."""

    name = "prepend-pixel"

    def prompt_shape(self, adapter: "BackboneAdapter", num_tokens: int, dim: int) -> tuple[int, int]:
        check_plain_patch_embed(adapter.patch_embed, self.name)
        return num_tokens, 3 * adapter.patch_size[0] * adapter.patch_size[1]

    def to_tokens(self, model: "PromptedModel", prompts: torch.Tensor) -> torch.Tensor:
        patch_embed = model.adapter.patch_embed
        proj = patch_embed.proj  # a convolution with stride = kernel = patch: a linear map of each flat patch
        return patch_embed.norm(F.linear(prompts, proj.weight.flatten(1), proj.bias))


class Add(Location):
    """One learned vector per existing token position, added element-wise to the tokens entering each prompted
    block."""

    name = "add"

    def prompt_shape(self, adapter: "BackboneAdapter", num_tokens: int, dim: int) -> tuple[int, int]:
        return adapter.num_prefix_tokens + adapter.num_patches, dim

    def run_blocks(self, model: "PromptedModel", x: torch.Tensor) -> tuple[torch.Tensor, None]:
        prompts = model.prompt_tokens(x.shape[0])
        if prompts.shape[2] != x.shape[1]:
            raise ValueError(f"location='add' learned one prompt vector per token for {prompts.shape[2]} tokens, "
                             f"but these images give {x.shape[1]}; use the image size the model was built for "
                             f"({model.adapter.img_size})")
        for i in model.blocks_after_stem():
            if model.is_prompted(i):
                x = x + prompts[model.prompt_row(i)]
            x = model.run_block(model.adapter.block, i, x)
        return x, None


class ConcatChannel(Location):
    """p learned input channels concatenated to the image: a convolution over 3 + p channels is the image's
    convolution (pretrained weights) plus the prompt channels' (new weights, `Prompts.channel_weight`)."""

    name = "concat-channel"

    def prompt_shape(self, adapter: "BackboneAdapter", num_tokens: int, dim: int) -> tuple[int, int]:
        check_plain_patch_embed(adapter.patch_embed, self.name)
        height, width = adapter.img_size
        return num_tokens, height * width

    def stem_depth(self, model: "PromptedModel") -> int:
        return 0  # the prompt is in the embedding itself

    def embed(self, model: "PromptedModel", images: torch.Tensor) -> torch.Tensor:
        patch_embed, prompts = model.adapter.patch_embed, model.prompts
        height, width = patch_embed.img_size
        if tuple(images.shape[-2:]) != (height, width):
            raise ValueError(f"location='concat-channel' learned prompt channels of {height} x {width} pixels, but "
                             f"these images are {tuple(images.shape[-2:])}; resize them to the model's image size")
        channels = prompts.dropout(prompts.tokens.view(1, -1, height, width))
        x = patch_embed.proj(images) + F.conv2d(channels, prompts.channel_weight, stride=patch_embed.proj.stride)
        if patch_embed.flatten:  # then the layout timm's PatchEmbed gives its blocks
            x = x.flatten(2).transpose(1, 2)
        elif patch_embed.output_fmt != Format.NCHW:
            x = nchw_to(x, patch_embed.output_fmt)
        return model.adapter.embed(images, patches=patch_embed.norm(x))

    def run_blocks(self, model: "PromptedModel", x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return model.run_plain(x), None


LOCATION_TYPES: dict[str, type[Location]] = {cls.name: cls for cls in (Prepend, PrependPixel, Add, ConcatChannel)}


def location_for(name: str) -> Location:
    return LOCATION_TYPES[name]()


def _run_tokens(model: "PromptedModel", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference: prompts are tokens of the sequence, inserted once and replaced at each prompted block (and, on a
    hierarchical backbone with merge "drop", dropped at patch merging). Returns the real tokens (B, prefix + m, d)
    and the prompts' final outputs (B, p, d), or None when they were dropped."""
    batch, start, p = x.shape[0], model.adapter.num_prefix_tokens, model.prompt_config.num_tokens
    prompts = model.prompt_tokens(batch)
    held = False  # whether x holds prompt slots now
    for i in model.blocks_after_stem():
        if model.is_prompted(i):
            rest = x[:, start + p:] if held else x[:, start:]
            x = torch.cat([x[:, :start], prompts[model.prompt_row(i)].expand(batch, -1, -1), rest], dim=1)
            held = True
        model.observe(i, x, p if held else 0)
        entered = x[:, start:start + p]
        # E2VPT's key-value prompts (or None) beside the prompt tokens in the sequence
        x = model.run_block(model.adapter.block, i, x, p if held else 0, model.extra_kv(i))
        if held and model.is_gated(i):
            slots = model.gated_slots(i, entered, x[:, start:start + p])
            x = torch.cat([x[:, :start], slots, x[:, start + p:]], dim=1)
        if held and model.drops_prompts_after(i):
            x, held = torch.cat([x[:, :start], x[:, start + p:]], dim=1), False
    if not held:
        return x, None
    return torch.cat([x[:, :start], x[:, start + p:]], dim=1), x[:, start:start + p]


def _run_prefix(model: "PromptedModel", x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Fast path: real tokens (B, prefix + m, d) flow through; prompt slots are kept on the side. Returns the
    real tokens and the prompts' final outputs (None when the last block did not compute them)."""
    adapter = model.adapter
    batch, start, p = x.shape[0], adapter.num_prefix_tokens, model.prompt_config.num_tokens
    prompts = model.prompt_tokens(batch)
    use_cache = model.kv_cache_usable(x)
    slots = None  # what the prompt slots hold now: (B or 1, p, d); the stem ends at the first prompt
    for i in model.blocks_after_stem():
        model.observe(i, x)
        fresh = model.is_prompted(i)
        if fresh:
            slots = prompts[model.prompt_row(i)]
        if slots is None:  # no prompt any more (dropped at a patch merging)
            x = model.run_plain_block(i, x)
        elif i in model.prefix_blocks:
            kv = model.prompt_kv(i, slots, cache=use_cache and fresh)
            x = model.run_block(adapter.prefix_block, i, x, kv, model.queries_at(i))
            slots = None  # their outputs would be replaced, dropped or never read
        else:  # slot outputs are carried on into the next block (or read by the head): the full sequence
            entered = slots.expand(batch, -1, -1)
            h = model.run_block(adapter.block, i, torch.cat([x[:, :start], entered, x[:, start:]], dim=1), p,
                                model.extra_kv(i))
            x, slots = torch.cat([h[:, :start], h[:, start + p:]], dim=1), h[:, start:start + p]
            slots = model.gated_slots(i, entered, slots) if model.is_gated(i) else slots
    return x, slots


def check_plain_patch_embed(patch_embed: nn.Module, location: str) -> None:
    """Pixel prompts go through the patch embedding by hand: only timm's plain one, whose projection is a linear map
    of each patch, is known to give the same tokens as its own forward."""
    proj = getattr(patch_embed, "proj", None)
    plain = (type(patch_embed) is PatchEmbed and isinstance(proj, nn.Conv2d) and proj.kernel_size == proj.stride
             and proj.padding == (0, 0) and not getattr(patch_embed, "dynamic_img_pad", False))
    if not plain:
        raise ValueError(f"PromptConfig.location={location!r} needs timm's plain PatchEmbed (a stride = kernel "
                         f"convolution without padding); this backbone's is not: use location='prepend'")
