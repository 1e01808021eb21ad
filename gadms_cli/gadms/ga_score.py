"""Token scores for dual masking: the gradient-attention (GA) score and a plain similarity score.

GA score (METHOD.md "Gradient-attention similarity score"), for B image-caption
pairs with tokens [B, T] and the last L text layers (L = 8 by default, clamped
to the depth):

- c_b = cos(image_b, text_b): only the matching pairs;
- per tapped layer l, on the model's REAL multi-head forward (text_taps.py):
  O^l [B, T, D] attention output before the output projection (heads
  concatenated), V^l [B, T, D] values (heads concatenated), Q^l, K^l queries
  and keys (heads concatenated), A^l [B, H, T, T] attention probabilities;
- g^l_b = d c_b / d O^l_b at the EOS row (a D-vector);
- w^l_{b,i} = cos( MSP(Q^l)_b[eos], MSP(K^l)_b[i] ), min-max normalised over the
  caption's own tokens (BOS..EOS). MSP = multi-scale pooling: average-pool
  adjacent tokens in windows of 1 and 2 (stride = window), interpolate back
  linearly (align_corners=False) and average the scales. We pool each caption
  over ITS OWN length (BOS..EOS), so padding never leaks into a score;
- Sg^l_{b,i} = w^l_{b,i} * (g^l_b . V^l_{b,i});
- Sa^l_{b,i} = attention of EOS to token i, mean over heads, 0 on BOS, EOS and
  padding, divided by its sum over the remaining tokens;
- S_{b,i} = ReLU( sum_l Sg^l_{b,i} * Sa^l_{b,i} ), 0 on BOS, EOS and padding,
  then min-max normalised to [0, 1] over the content tokens of the whole batch
  (``normalize="batch"``, the public code) or of each caption (``"sample"``).
  A set whose scores are all equal normalises to 0.

Scores are detached (no gradient flows into them). Image features may be
passed precomputed ([B, E]) so the image tower need not run twice.

The similarity score (ablation "noise masking by a plain similarity score"):
s_{b,i} = cos( text token feature_{b,i}, image_b ), where the token feature is
the token's final hidden state through ``ln_final`` and ``text_projection`` (the
same map that makes the EOS row the caption embedding), zeroed and min-max
normalised exactly like the GA score. The text tower is causal, so token i's
feature summarises tokens 0..i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gadms_cli.model.text_taps import AttentionTap, run_text_tower

Normalize = Literal["batch", "sample"]
MSP_WINDOWS = (1, 2)
_EPS = 1e-12


def _clip_of(model: nn.Module) -> nn.Module:
    """The open_clip CLIP inside a PersonCLIP (or a DDP wrapper of one), or the model itself."""
    model = getattr(model, "module", model)
    return getattr(model, "clip", model)


def content_mask(tokens: torch.Tensor) -> torch.Tensor:
    """Bool [B, T]: True on the tokens strictly between BOS (position 0) and EOS (argmax id)."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    eos = tokens.argmax(dim=-1, keepdim=True)
    return (positions > 0) & (positions < eos)


def _pool_interpolate(x: torch.Tensor, lengths: torch.Tensor, window: int) -> torch.Tensor:
    """Per caption b: average-pool x[b, :n_b] in windows of ``window`` (stride = window, the
    remainder dropped), then linearly interpolate back to n_b positions (align_corners=False).
    x [B, T, D], lengths [B] -> [B, T, D]; rows at positions >= n_b are zero."""
    batch, length, width = x.shape
    if window == 1:
        return x * (torch.arange(length, device=x.device)[None, :, None] < lengths[:, None, None])
    usable = (length // window) * window
    pooled = x[:, :usable].reshape(batch, length // window, window, width).mean(dim=2)  # [B, T//w, D]
    pooled_len = torch.clamp(lengths // window, min=1).to(x.dtype)  # [B]
    positions = torch.arange(length, device=x.device, dtype=x.dtype)[None, :]  # [1, T]
    # F.interpolate(mode="linear", align_corners=False): src = (dst + 0.5) * in/out - 0.5, clamped at 0.
    source = ((positions + 0.5) * (pooled_len[:, None] / lengths[:, None].to(x.dtype)) - 0.5).clamp(min=0)
    low = source.floor().long()
    last = (pooled_len.long() - 1)[:, None]
    low = torch.minimum(low, last)
    high = torch.minimum(low + 1, last)
    frac = (source - low.to(x.dtype)).unsqueeze(-1)
    gather = lambda index: torch.gather(pooled, 1, index.unsqueeze(-1).expand(-1, -1, width))  # noqa: E731
    out = gather(low) * (1 - frac) + gather(high) * frac
    return out * (torch.arange(length, device=x.device)[None, :, None] < lengths[:, None, None])


def multi_scale_pool(x: torch.Tensor, lengths: torch.Tensor, windows: tuple[int, ...] = MSP_WINDOWS) -> torch.Tensor:
    """MSP: the mean over ``windows`` of pool-then-interpolate (see :func:`_pool_interpolate`). [B, T, D] -> [B, T, D]."""
    return torch.stack([_pool_interpolate(x, lengths, w) for w in windows]).mean(dim=0)


def minmax_normalize(scores: torch.Tensor, mask: torch.Tensor, normalize: Normalize = "batch") -> torch.Tensor:
    """Min-max normalise ``scores`` [B, T] over the entries where ``mask`` is True, per batch or per
    sample; entries outside the mask become 0, and so does a set whose values are all equal."""
    if normalize not in ("batch", "sample"):
        raise ValueError(f"normalize must be 'batch' or 'sample', got {normalize!r}")
    dims = (0, 1) if normalize == "batch" else (1,)
    inf = torch.tensor(float("inf"), device=scores.device, dtype=scores.dtype)
    low = torch.where(mask, scores, inf).amin(dim=dims, keepdim=True)
    high = torch.where(mask, scores, -inf).amax(dim=dims, keepdim=True)
    span = high - low
    safe_span = torch.where(span > _EPS, span, torch.ones_like(span))
    out = torch.where(span > _EPS, (scores - torch.where(torch.isfinite(low), low, 0)) / safe_span, torch.zeros_like(scores))
    return torch.where(mask, out, torch.zeros_like(out))


@dataclass
class GATerms:
    """The pieces of the GA score, per tapped layer (for inspection and tests); all detached."""

    layers: list[int]  # block indices of the tapped layers
    gradients: list[torch.Tensor]  # g^l [B, D]: d c_b / d O^l_b at EOS
    spatial: list[torch.Tensor]  # w^l [B, T], min-max normalised over BOS..EOS
    gradient_scores: list[torch.Tensor]  # Sg^l [B, T]
    attention_scores: list[torch.Tensor]  # Sa^l [B, T]
    similarity: torch.Tensor  # c [B]
    raw: torch.Tensor  # ReLU(sum_l Sg^l * Sa^l), zero on BOS/EOS/padding [B, T]


def _image_features(model: nn.Module, images_or_features: torch.Tensor) -> torch.Tensor:
    if images_or_features.dim() == 2:
        return images_or_features.detach()
    with torch.no_grad():
        return _clip_of(model).encode_image(images_or_features).detach()


def _layer_terms(tap: AttentionTap, grad_out: torch.Tensor, eos: torch.Tensor, lengths: torch.Tensor, content: torch.Tensor):
    batch = eos.shape[0]
    rows = torch.arange(batch, device=eos.device)
    gradient = grad_out[rows, eos]  # [B, D]
    values = AttentionTap.concat_heads(tap.v.detach()).float()  # [B, T, D]
    queries = multi_scale_pool(AttentionTap.concat_heads(tap.q.detach()).float(), lengths)
    keys = multi_scale_pool(AttentionTap.concat_heads(tap.k.detach()).float(), lengths)
    spatial = F.cosine_similarity(queries[rows, eos].unsqueeze(1), keys, dim=-1, eps=1e-8)  # [B, T]
    valid = torch.arange(values.shape[1], device=eos.device)[None, :] < lengths[:, None]
    spatial = minmax_normalize(spatial, valid, "sample")
    gradient_score = spatial * (values * gradient.float().unsqueeze(1)).sum(dim=-1)
    attention = tap.attn.detach().float()[rows, :, eos].mean(dim=1) * content  # [B, T]
    attention = attention / attention.sum(dim=-1, keepdim=True).clamp_min(_EPS)
    return gradient.float(), spatial, gradient_score, attention


def ga_score_terms(model: nn.Module, images_or_features: torch.Tensor, tokens: torch.Tensor, num_layers: int = 8) -> GATerms:
    """Compute every term of the GA score (see the module docstring); nothing is normalised batch-wise yet.

    ``images_or_features``: images [B, 3, H, W] or image embeddings [B, E]
    (detached either way). ``tokens`` [B, T] with T <= the model's context.
    """
    clip = _clip_of(model)
    image = _image_features(model, images_or_features)
    with torch.enable_grad():
        out = run_text_tower(clip, tokens, tap_layers=num_layers, grad_before_taps=False)
        similarity = F.cosine_similarity(out.embedding.float(), image.float(), dim=-1)  # [B]
        # Captions are independent (LayerNorm, causal attention per row), so the gradient of the
        # sum gives every caption's own d c_b / d O_b.
        grads = torch.autograd.grad(similarity.sum(), [tap.out for tap in out.taps])
    eos = out.eos
    lengths = eos + 1
    content = content_mask(tokens).to(torch.float32)
    terms = GATerms([], [], [], [], [], similarity.detach(), torch.zeros_like(content))
    total = torch.zeros_like(content)
    for tap, grad_out in zip(out.taps, grads):
        gradient, spatial, gradient_score, attention = _layer_terms(tap, grad_out, eos, lengths, content)
        terms.layers.append(tap.layer)
        terms.gradients.append(gradient)
        terms.spatial.append(spatial)
        terms.gradient_scores.append(gradient_score)
        terms.attention_scores.append(attention)
        total = total + gradient_score * attention
    terms.raw = torch.relu(total) * content
    return terms


def ga_token_scores(
    model: nn.Module,
    images_or_features: torch.Tensor,
    tokens: torch.Tensor,
    num_layers: int = 8,
    normalize: Normalize = "batch",
) -> torch.Tensor:
    """GA score per token: FloatTensor [B, T] in [0, 1], 0 on BOS, EOS and padding, detached."""
    terms = ga_score_terms(model, images_or_features, tokens, num_layers)
    return minmax_normalize(terms.raw, content_mask(tokens), normalize).detach()


def similarity_token_scores(
    model: nn.Module,
    images_or_features: torch.Tensor,
    tokens: torch.Tensor,
    normalize: Normalize = "batch",
) -> torch.Tensor:
    """Plain similarity score per token (see the module docstring): [B, T] in [0, 1], detached."""
    clip = _clip_of(model)
    image = _image_features(model, images_or_features)
    with torch.no_grad():
        out = run_text_tower(clip, tokens, token_features=True)
        similarity = F.cosine_similarity(out.token_features.float(), image.float().unsqueeze(1), dim=-1)  # [B, T]
    return minmax_normalize(similarity, content_mask(tokens), normalize).detach()
