"""The CLIP text tower run by hand, with taps on the attention of chosen layers.

:func:`run_text_tower` computes exactly what open_clip's ``CLIP.encode_text``
computes (token + position embedding, causal transformer, ``ln_final``, the
EOS row picked by ``tokens.argmax(-1)``, ``text_projection``) but

- accepts token tensors SHORTER than the model's context (positions and the
  causal mask are sliced; the causal mask makes this exact), so a batch can be
  trimmed to its longest caption;
- on the last ``tap_layers`` blocks computes the multi-head attention itself
  from the block's own weights and records, per layer, Q, K, V [B, H, T, Dh],
  the attention probabilities [B, H, T, T] and the attention output O before
  the output projection [B, T, D] (heads concatenated). O stays in the
  autograd graph, so ``torch.autograd.grad(score, tap.out)`` gives d score / d O.

Both of open_clip's block types are handled: ``ResidualAttentionBlock``
(``nn.MultiheadAttention``) and ``CustomResidualAttentionBlock`` (open_clip's
``Attention`` with optional qk-norm, scaled-cosine attention, head scaling and
inner norm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from open_clip.transformer import Attention, CustomResidualAttentionBlock, ResidualAttentionBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from gadms_cli.errors import GadmsError


@dataclass
class AttentionTap:
    """What one tapped text layer computed (B captions, H heads, T tokens, D = H * Dh width).

    ``q`` and ``k`` are the vectors the attention logits are made of (after
    qk-norm when the block has it, before the 1/sqrt(Dh) scale).
    """

    layer: int  # index of the block in transformer.resblocks
    q: torch.Tensor  # [B, H, T, Dh]
    k: torch.Tensor  # [B, H, T, Dh]
    v: torch.Tensor  # [B, H, T, Dh]
    attn: torch.Tensor  # [B, H, T, T] softmax probabilities, rows = queries
    out: torch.Tensor  # [B, T, D] attention output before the output projection (in the graph)

    @staticmethod
    def concat_heads(x: torch.Tensor) -> torch.Tensor:
        """[B, H, T, Dh] -> [B, T, H * Dh] (head h occupies columns h*Dh .. (h+1)*Dh - 1)."""
        batch, heads, length, head_dim = x.shape
        return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


@dataclass
class TextTowerOutput:
    """Result of :func:`run_text_tower`."""

    embedding: torch.Tensor  # [B, E] projected EOS feature, NOT normalised
    eos: torch.Tensor  # [B] EOS position per caption (argmax of the token ids)
    token_features: torch.Tensor | None = None  # [B, T, E] every token through ln_final + projection
    taps: list[AttentionTap] = field(default_factory=list)  # the tapped layers, in depth order


def check_text_tower(clip: nn.Module) -> None:
    """Raise :class:`GadmsError` unless ``clip`` has open_clip's built-in CLIP text tower."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection", "attn_mask")
    missing = [name for name in needed if not hasattr(clip, name)]
    if missing:
        raise GadmsError(
            f"model has no open_clip CLIP text tower (missing {', '.join(missing)}): "
            "use an open_clip architecture with the built-in text transformer (e.g. ViT-B-16)"
        )
    if getattr(clip, "text_pool_type", "argmax") != "argmax":
        raise GadmsError(
            f"text tower pools with '{clip.text_pool_type}': gadms needs CLIP's argmax (EOS) pooling"
        )
    for block in clip.transformer.resblocks:
        if not isinstance(block, (ResidualAttentionBlock, CustomResidualAttentionBlock)):
            raise GadmsError(f"unsupported text block type {type(block).__name__}: use an open_clip CLIP text tower")


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = x.shape
    return x.reshape(batch, length, heads, width // heads).transpose(1, 2)


def _tapped_block(
    block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, layer: int
) -> tuple[torch.Tensor, AttentionTap]:
    """One residual block on x [B, T, D] with the attention computed by hand; returns (x, tap)."""
    hidden = block.ln_1(x)
    attn_module = block.attn
    if isinstance(attn_module, nn.MultiheadAttention):
        if not attn_module._qkv_same_embed_dim or attn_module.bias_k is not None or attn_module.add_zero_attn:
            raise GadmsError("text attention with separate q/k/v projections or bias_k is not supported")
        heads = attn_module.num_heads
        q, k, v = F.linear(hidden, attn_module.in_proj_weight, attn_module.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (_split_heads(t, heads) for t in (q, k, v))
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
        scaled_cosine, head_scale, inner_norm = False, None, None
    elif isinstance(attn_module, Attention):
        heads = attn_module.num_heads
        q, k, v = F.linear(hidden, attn_module.in_proj_weight, attn_module.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (_split_heads(t, heads) for t in (q, k, v))
        scaled_cosine = attn_module.logit_scale is not None
        if scaled_cosine:
            logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
            logits = logits * torch.clamp(attn_module.logit_scale, max=attn_module.logit_scale_max).exp()
        else:
            q, k = attn_module.ln_q(q), attn_module.ln_k(k)
            logits = (q * attn_module.scale) @ k.transpose(-1, -2)
        head_scale, inner_norm = attn_module.head_scale, attn_module.ln_inner
    else:  # check_text_tower rules this out
        raise GadmsError(f"unsupported attention module {type(attn_module).__name__}")

    if mask is not None:
        logits = logits + mask.to(logits.dtype)
    probs = logits.softmax(dim=-1)
    per_head = probs @ v  # [B, H, T, Dh]
    if head_scale is not None:
        per_head = per_head * head_scale
    out = AttentionTap.concat_heads(per_head)
    if not out.requires_grad:
        # Frozen weights and no grad upstream: make O a graph leaf so d score / d O still exists.
        out = out.detach().requires_grad_(True)
    tap = AttentionTap(layer=layer, q=q, k=k, v=v, attn=probs, out=out)

    projected = attn_module.out_proj(inner_norm(out) if inner_norm is not None else out)
    if isinstance(block, CustomResidualAttentionBlock):
        projected = block.ln_attn(projected)
    x = x + block.ls_1(projected)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, tap


def _plain_block(
    block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, batch_first: bool, use_checkpoint: bool
) -> torch.Tensor:
    """One untapped block on x [B, T, D], through the block's own forward."""
    if not batch_first:
        x = x.transpose(0, 1)
    if use_checkpoint and torch.is_grad_enabled():
        x = checkpoint(lambda t: block(t, attn_mask=mask), x, use_reentrant=False)
    else:
        x = block(x, attn_mask=mask)
    return x.transpose(0, 1) if not batch_first else x


def project_text(clip: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Apply the text projection to features [..., width] -> [..., E]."""
    projection = clip.text_projection
    if projection is None:
        return features
    if isinstance(projection, nn.Linear):
        return projection(features)
    return features @ projection


def run_text_tower(
    clip: nn.Module,
    tokens: torch.Tensor,
    tap_layers: int = 0,
    token_features: bool = False,
    grad_before_taps: bool = True,
) -> TextTowerOutput:
    """Encode ``tokens`` [B, T] (T <= the model's context) with open_clip CLIP ``clip``.

    ``tap_layers``: how many of the LAST blocks to tap (clamped to the depth).
    ``token_features``: also return every token's projected feature [B, T, E].
    ``grad_before_taps=False`` runs the untapped blocks under ``torch.no_grad``
    (enough when only gradients with respect to the taps are wanted).
    """
    batch, length = tokens.shape
    max_length = clip.positional_embedding.shape[0]
    if length > max_length:
        raise ValueError(f"tokens have {length} positions but the model's text context is {max_length}")
    blocks = clip.transformer.resblocks
    num_taps = max(0, min(tap_layers, len(blocks)))
    first_tap = len(blocks) - num_taps
    batch_first = getattr(clip.transformer, "batch_first", True)
    use_checkpoint = bool(getattr(clip.transformer, "grad_checkpointing", False))
    mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None

    cast_dtype = clip.transformer.get_cast_dtype()
    with torch.set_grad_enabled(torch.is_grad_enabled() and (grad_before_taps or num_taps == 0)):
        x = clip.token_embedding(tokens).to(cast_dtype)
        x = x + clip.positional_embedding[:length].to(cast_dtype)
        for block in blocks[:first_tap]:
            x = _plain_block(block, x, mask, batch_first, use_checkpoint)

    taps: list[AttentionTap] = []
    for index in range(first_tap, len(blocks)):
        x, tap = _tapped_block(blocks[index], x, mask, index)
        taps.append(tap)

    x = clip.ln_final(x)
    eos = tokens.argmax(dim=-1)
    pooled = x[torch.arange(batch, device=x.device), eos]
    return TextTowerOutput(
        embedding=project_text(clip, pooled),
        eos=eos,
        token_features=project_text(clip, x) if token_features else None,
        taps=taps,
    )


def trim_to_longest(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding columns after the last EOS of the batch: [B, T] -> [B, T'].

    Embeddings are unchanged by the trim (the text tower is causal and pools at EOS).
    """
    if tokens.numel() == 0:
        return tokens
    return tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
