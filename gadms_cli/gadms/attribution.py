"""Exact leave-one-out attribution: how much each caption token adds to the match.

For a caption with tokens t and an image embedding v, token i's leave-one-out (LOO)
score is

    loo_i = cos(text(t), v) - cos(text(t with t_i replaced by [MASK]), v)

A token that carries the match has a large positive score; a word that contradicts
the image (a wrong colour) a negative one: the caption matches BETTER without it.
It costs one text forward per content token (all of them in batched passes), so it
is the reference that the GA score approximates from one forward and one backward
(``benchmarks/noise_scores.py`` compares them), and what ``gadms retrieve --explain
--attribution loo`` shows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gadms_cli.gadms.ga_score import _clip_of, content_mask
from gadms_cli.model.text_taps import run_text_tower
from gadms_cli.model.tokenizer import MASK_ID


@torch.no_grad()
def leave_one_out_scores(
    model: nn.Module,
    image_features: torch.Tensor,
    tokens: torch.Tensor,
    mask_id: int = MASK_ID,
    chunk: int = 512,
) -> torch.Tensor:
    """LOO score of every content token (see the module docstring).

    Args:
        model: a ``PersonCLIP`` (or an open_clip CLIP).
        image_features: ``[B, E]`` image embeddings (normalised or not).
        tokens: ``[B, T]`` token ids, one caption per image.
        chunk: captions per text forward.
    Returns:
        ``[B, T]`` float32: ``loo_i`` on content tokens (strictly between start and end), 0 elsewhere.
    """
    clip = _clip_of(model)
    image = F.normalize(image_features.float(), dim=-1)
    content = content_mask(tokens)  # [B, T]
    rows, cols = content.nonzero(as_tuple=True)  # one variant per content token
    variants = tokens[rows].clone()
    variants[torch.arange(len(rows)), cols] = mask_id
    full = F.normalize(run_text_tower(clip, tokens).embedding.float(), dim=-1)
    base = (full * image).sum(-1)  # [B]
    out = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    for start in range(0, len(rows), chunk):
        part = slice(start, start + chunk)
        emb = F.normalize(run_text_tower(clip, variants[part]).embedding.float(), dim=-1)
        cos = (emb * image[rows[part]]).sum(-1)
        out[rows[part], cols[part]] = base[rows[part]] - cos
    return out
