"""Token scores for dual masking: the gradient-attention (GA) score and a plain similarity score.

GA score (docs/method.md "The GA score"), for B image-caption pairs with
tokens [B, T] and the last L text layers (``layers``: a count, clamped to the
depth; ``"all"``; or a fraction of the depth, see :func:`resolve_score_layers`):

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

Calibrations (recipe switches; the paper's score is ``relu=True, normalize="batch"``):

- ``relu=False`` keeps the SIGN of the layer sum: a word that pulls the caption
  away from its image (a wrong colour) scores below a neutral word instead of
  tying with it at 0;
- ``normalize="rank"``: per caption, each content token's rank among the
  caption's content tokens, scaled to [0, 1] (ties share their mean rank; a
  caption with one content token scores 0.5), so the masking schedule sees the
  same spread of scores in every caption, whatever the raw scale;
- ``normalize="centered"`` (with ``relu=False``): per caption, ``0.5 + 0.5 s / max|s|``
  over the caption's content tokens, so a neutral word (raw 0) stays at 0.5, the word
  that argues most against the image goes to 0 and the one most for it to 1. Min-max
  moves the zero point to the caption's minimum, so a caption with no wrong word still
  has a word at 0 that the masking formula treats as noise; this keeps the sign's meaning.

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

Normalize = Literal["batch", "sample", "rank", "centered"]
ScoreLayers = int | float | str  # a count >= 1, a fraction in (0, 1), or "all"
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


def resolve_score_layers(layers: ScoreLayers, depth: int) -> int:
    """How many of the last text layers the GA score taps, for a tower of ``depth`` blocks.

    ``layers``: an int (clamped to 1..depth), ``"all"``, or a fraction in (0, 1) of the depth
    (rounded, at least 1: the paper's 8 of 12 is ``0.67``)."""
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"score layers must be a count, a fraction or 'all', got {layers!r}")
        return depth
    if isinstance(layers, bool) or not isinstance(layers, (int, float)):
        raise ValueError(f"score layers must be a count, a fraction or 'all', got {layers!r}")
    if isinstance(layers, float) and not layers.is_integer():
        if not 0.0 < layers < 1.0:
            raise ValueError(f"a fraction of score layers must lie in (0, 1), got {layers}")
        return max(1, min(depth, round(layers * depth)))
    if layers < 1:
        raise ValueError(f"score layers must be >= 1, got {layers}")
    return min(int(layers), depth)


def rank_normalize(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, each masked entry's rank among the row's masked entries scaled to [0, 1].

    rank = (number of strictly lower entries + half the number of OTHER equal entries) / (n - 1)
    for a row of n masked entries; a row with one entry gets 0.5; entries outside ``mask`` get 0.
    ``scores``, ``mask``: [B, T]. O(B * T^2), fine for captions (T <= 77)."""
    valid = mask.bool()
    lower = (scores.unsqueeze(1) < scores.unsqueeze(2)) & valid.unsqueeze(1)  # [B, i, j]: s_j < s_i
    equal = (scores.unsqueeze(1) == scores.unsqueeze(2)) & valid.unsqueeze(1)
    count = valid.sum(dim=1, keepdim=True).to(scores.dtype)  # [B, 1]
    rank = lower.sum(dim=2).to(scores.dtype) + 0.5 * (equal.sum(dim=2).to(scores.dtype) - 1)
    out = torch.where(count > 1, rank / (count - 1).clamp_min(1), torch.full_like(rank, 0.5))
    return torch.where(valid, out, torch.zeros_like(out))


def centered_normalize(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row, ``0.5 + 0.5 * s / max|s|`` over the row's masked entries: [0, 1] with raw 0 at 0.5.

    A row whose masked entries are all 0 gives 0.5 everywhere in the mask; entries outside
    ``mask`` get 0. ``scores``, ``mask``: [B, T]."""
    valid = mask.bool()
    peak = torch.where(valid, scores.abs(), torch.zeros_like(scores)).amax(dim=1, keepdim=True)  # [B, 1]
    scaled = torch.where(peak > _EPS, scores / peak.clamp_min(_EPS), torch.zeros_like(scores))
    return torch.where(valid, 0.5 + 0.5 * scaled, torch.zeros_like(scores))


def normalize_scores(scores: torch.Tensor, mask: torch.Tensor, normalize: Normalize = "batch") -> torch.Tensor:
    """Map raw token scores [B, T] to [0, 1] over the entries of ``mask``: ``batch``/``sample``
    min-max (:func:`minmax_normalize`), per-caption ``rank`` (:func:`rank_normalize`) or
    per-caption ``centered`` scaling that keeps 0 at 0.5 (:func:`centered_normalize`)."""
    if normalize == "rank":
        return rank_normalize(scores, mask)
    if normalize == "centered":
        return centered_normalize(scores, mask)
    return minmax_normalize(scores, mask, normalize)


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
    signed: torch.Tensor  # sum_l Sg^l * Sa^l before the ReLU, zero on BOS/EOS/padding [B, T]

    def layer_products(self) -> list[torch.Tensor]:
        """Sg^l * Sa^l per tapped layer [B, T]: each layer's contribution to the sum."""
        return [g * a for g, a in zip(self.gradient_scores, self.attention_scores)]


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


def ga_score_terms(model: nn.Module, images_or_features: torch.Tensor, tokens: torch.Tensor, num_layers: ScoreLayers = 8) -> GATerms:
    """Compute every term of the GA score (see the module docstring); nothing is normalised batch-wise yet.

    ``images_or_features``: images [B, 3, H, W] or image embeddings [B, E]
    (detached either way). ``tokens`` [B, T] with T <= the model's context.
    ``num_layers``: see :func:`resolve_score_layers`.
    """
    clip = _clip_of(model)
    image = _image_features(model, images_or_features)
    taps = resolve_score_layers(num_layers, len(clip.transformer.resblocks))
    with torch.enable_grad():
        out = run_text_tower(clip, tokens, tap_layers=taps, grad_before_taps=False)
        similarity = F.cosine_similarity(out.embedding.float(), image.float(), dim=-1)  # [B]
        # Captions are independent (LayerNorm, causal attention per row), so the gradient of the
        # sum gives every caption's own d c_b / d O_b.
        grads = torch.autograd.grad(similarity.sum(), [tap.out for tap in out.taps])
    eos = out.eos
    lengths = eos + 1
    content = content_mask(tokens).to(torch.float32)
    terms = GATerms([], [], [], [], [], similarity.detach(), torch.zeros_like(content), torch.zeros_like(content))
    total = torch.zeros_like(content)
    for tap, grad_out in zip(out.taps, grads):
        gradient, spatial, gradient_score, attention = _layer_terms(tap, grad_out, eos, lengths, content)
        terms.layers.append(tap.layer)
        terms.gradients.append(gradient)
        terms.spatial.append(spatial)
        terms.gradient_scores.append(gradient_score)
        terms.attention_scores.append(attention)
        total = total + gradient_score * attention
    terms.signed = total * content
    terms.raw = torch.relu(total) * content
    return terms


def ga_token_scores(
    model: nn.Module,
    images_or_features: torch.Tensor,
    tokens: torch.Tensor,
    num_layers: ScoreLayers = 8,
    normalize: Normalize = "batch",
    relu: bool = True,
) -> torch.Tensor:
    """GA score per token: FloatTensor [B, T] in [0, 1], 0 on BOS, EOS and padding, detached.

    ``relu=True, normalize="batch"`` is the paper's score; see the module docstring for the
    calibrations ``relu=False`` and ``normalize="sample"`` / ``"rank"`` / ``"centered"``."""
    terms = ga_score_terms(model, images_or_features, tokens, num_layers)
    raw = terms.raw if relu else terms.signed
    return normalize_scores(raw, content_mask(tokens), normalize).detach()


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
    return normalize_scores(similarity, content_mask(tokens), normalize).detach()
