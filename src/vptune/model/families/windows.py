"""Windows of a (B, H, W, C) token grid, as Swin and SAM's encoder attend within them: the grid padded with zeros to
whole windows, cut into windows kept per image (B, windows, area, C), and put back. Prompts are shared by every
window (each window attends over its own tokens plus the block's prompts), and a prompt slot's output is the mean
of its outputs over an image's windows."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import project_qkv
from .base import BackboneAdapter


class GridAdapter(BackboneAdapter):
    """A family whose tokens are an image grid with no [CLS] or registers in front (Swin, SAM's encoder), built for
    one image size (its windows, masks and relative positions are): the head reads `num_features`."""

    @property
    def embed_dim(self) -> int:
        return self.backbone.num_features  # what the head reads: the last stage's width, or the neck's channels

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    @property
    def has_class_token(self) -> bool:
        return False

    def check_size(self, images: torch.Tensor) -> None:
        """ValueError in one line for images of another size than the backbone was built for."""
        if tuple(images.shape[-2:]) != self.img_size:
            raise ValueError(f"this {self.family} backbone is built for {self.img_size[0]} x {self.img_size[1]} "
                             f"images, got {images.shape[-2]} x {images.shape[-1]}; resize them, or create the "
                             f"backbone with that image size (--img-size)")

    def grid_of(self, images: torch.Tensor) -> tuple[int, int]:
        """The final grid (h, w): fixed by the size the backbone was built for (`dense` reads it from there)."""
        self.check_size(images)
        return self.final_grid

    @property
    def final_grid(self) -> tuple[int, int]:
        raise NotImplementedError


def partition(grid: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, wh * ww, C), windows in row-major order, the grid zero-padded to whole windows."""
    (wh, ww), (batch, height, width, channels) = window, grid.shape
    grid = F.pad(grid, (0, 0, 0, (ww - width % ww) % ww, 0, (wh - height % wh) % wh))
    rows, cols = grid.shape[1] // wh, grid.shape[2] // ww
    windows = grid.view(batch, rows, wh, cols, ww, channels).permute(0, 1, 3, 2, 4, 5)
    return windows.reshape(batch, rows * cols, wh * ww, channels)


def unpartition(windows: torch.Tensor, window: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(B, nW, wh * ww, C) -> (B, H, W, C): `partition` undone, the padding cut off."""
    (wh, ww), (height, width) = window, size
    rows, cols = -(-height // wh), -(-width // ww)
    batch, channels = windows.shape[0], windows.shape[-1]
    grid = windows.reshape(batch, rows, cols, wh, ww, channels).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(batch, rows * wh, cols * ww, channels)[:, :height, :width]


def per_window(prompts: torch.Tensor, batch: int, windows: int) -> torch.Tensor:
    """Prompt rows (B or 1, p, D) -> (B, nW, p, D): every window of an image sees its image's prompts."""
    return prompts[:, None].expand(batch, windows, -1, -1)


def window_qkv(attn: torch.nn.Module, windows: torch.Tensor, prompts: torch.Tensor | None = None,
               prompt_kv: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values per head of windows (B, nW, A, C) that also see p prompts: (B, nW, heads, Q, hd)
    and twice (B, nW, heads, p + A, hd). prompts: (B or 1, p, C) tokens that ask queries too (Q = p + A, prompts
    first); prompt_kv: (B or 1, p, 2C) their keys|values alone (Q = A). The attention's fused qkv projection."""
    batch, num_windows = windows.shape[:2]
    if prompts is not None:
        prompt_q, prompt_kv = project_qkv(attn, prompts)
    q, kv = project_qkv(attn, windows)
    if prompt_kv is not None:
        kv = torch.cat([per_window(prompt_kv, batch, num_windows), kv], dim=2)
    if prompts is not None:
        q = torch.cat([per_window(prompt_q, batch, num_windows), q], dim=2)
    heads = attn.num_heads
    k, v = kv.unflatten(-1, (2, heads, -1)).permute(3, 0, 1, 4, 2, 5).unbind(0)
    return q.unflatten(-1, (heads, -1)).transpose(2, 3), k, v


def hide_prompts(bias: torch.Tensor, prompt_mask: torch.Tensor | None, area: int) -> torch.Tensor:
    """bias (.., p + A) with -inf for the prompt columns an image must not see (prompt_mask (B, p) False: a batch
    mixing tasks pads shorter prompts); every window always sees its own A tokens."""
    if prompt_mask is None:
        return bias
    hidden = torch.cat([~prompt_mask, prompt_mask.new_zeros(len(prompt_mask), area)], dim=1)[:, None, None, None, :]
    return bias.masked_fill(hidden, float("-inf"))
