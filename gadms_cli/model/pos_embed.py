"""Resizing position embeddings when weights meet a model of another image size or context.

Image: CLIP ViT-B/16 is trained at 224x224 (a 14x14 patch grid); person
retrieval uses 384x128 (a 24x8 grid). The grid part of the visual position
embedding is resized by bilinear interpolation (``align_corners=False``, no
anti-aliasing), as IRRA does; the class-token row is kept. open_clip's own
helper uses bicubic interpolation with anti-aliasing, which gives different
numbers than the IRRA family, so we do not use it.

Text: a shorter context keeps the first positions (the tokens a caption
actually uses keep their trained embeddings); a longer one is linearly
interpolated (as open_clip does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def square_grid(num_patches: int) -> tuple[int, int] | None:
    """(side, side) when ``num_patches`` is a perfect square, else None."""
    side = math.isqrt(num_patches)
    return (side, side) if side * side == num_patches else None


def resize_visual_pos_embed(
    pos_embed: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a ViT position embedding [1 + h*w, D] from ``old_grid`` (h, w) to ``new_grid``.

    Row 0 (the class token) is copied; the grid rows are reshaped to
    [D, h, w], bilinearly interpolated to the new (h', w') and flattened back
    in row-major order (the order the patch embedding produces).
    """
    old_h, old_w = old_grid
    if pos_embed.shape[0] != 1 + old_h * old_w:
        raise ValueError(f"position embedding has {pos_embed.shape[0]} rows, expected 1 + {old_h}x{old_w}")
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    cls_row, grid = pos_embed[:1], pos_embed[1:]
    dtype = grid.dtype
    grid = grid.float().reshape(1, old_h, old_w, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(dtype)
    return torch.cat([cls_row, grid], dim=0)


def adapt_text_pos_embed(pos_embed: torch.Tensor, context_length: int) -> torch.Tensor:
    """Fit a text position embedding [T_old, D] to ``context_length`` rows (see module doc)."""
    old_length = pos_embed.shape[0]
    if old_length == context_length:
        return pos_embed
    if context_length < old_length:
        return pos_embed[:context_length].clone()
    dtype = pos_embed.dtype
    stretched = F.interpolate(
        pos_embed.float().T.unsqueeze(0), size=context_length, mode="linear", align_corners=False
    )
    return stretched[0].T.contiguous().to(dtype)
