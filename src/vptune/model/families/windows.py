"""Windows of a (B, H, W, C) token grid, as Swin and SAM's encoder attend within them: the grid padded with zeros to
whole windows, cut into windows kept per image (B, windows, area, C), and put back. Prompts are shared by every
window (each window attends over its own tokens plus the block's prompts), and a prompt slot's output is the mean
of its outputs over an image's windows."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
