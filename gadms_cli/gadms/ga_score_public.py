"""The GA score as the public GA-DMS code computes it (``method.score_variant: public``).

Our score (``ga_score.py``, the default ``spec`` variant) follows the paper's equations on the
model's real multi-head forward. The public training code differs in these places, each
reproduced here so that a researcher can compare numbers on the same weights:

- the last L text layers are RECOMPUTED as one attention head over the full width
  (``softmax(q k^T / sqrt(D) + causal mask) v`` with q, k, v of width D), in the model's
  dtype, which is not the encoder's own multi-head forward; the caption embedding (and so
  c_b) comes from that recomputed forward;
- every caption is the full context (padding included): multi-scale pooling runs over all
  T positions, and for a window of 2 an odd leftover token is its own segment (T // 2 + 1
  pooled rows, interpolated back to T); the spatial weight w is min-max normalised over all
  T positions with ``+ 1e-8`` in the denominator;
- the attention term is the EOS row of the single head's attention on the content tokens
  (BOS, EOS and padding zeroed), divided by the sum over ALL positions of the layer's raw
  gradient score ``Σ_i w_i (g · v_i)`` (``+ 1e-8``), not by the attention's own sum; when that
  sum is negative the layer's contribution flips sign;
- after ``ReLU(Σ_l ...)`` and zeroing BOS, EOS and padding, the map is min-max normalised over
  the WHOLE batch tensor, zeros included (so the minimum is 0 and s = S / max S).

Only open_clip blocks with ``nn.MultiheadAttention`` (the OpenAI CLIP layout) are supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gadms_cli.errors import GadmsError
from gadms_cli.gadms.ga_score import ScoreLayers, _clip_of, _image_features, resolve_score_layers
from gadms_cli.model.text_taps import _plain_block, project_text

_EPS = 1e-8
WINDOWS = (1, 2)


def public_multi_scale_pool(x: torch.Tensor, windows: tuple[int, ...] = WINDOWS) -> torch.Tensor:
    """x [B, T, D] -> [B, T, D]: per window w, the mean of each run of w positions (an incomplete
    last run is a segment of its own), linearly interpolated back to T (align_corners=False);
    the mean over windows."""
    length = x.shape[1]
    scales = []
    for window in windows:
        full = length // window
        pooled = x[:, : full * window].reshape(x.shape[0], full, window, x.shape[2]).mean(dim=2)
        if full * window < length:
            pooled = torch.cat([pooled, x[:, full * window :].mean(dim=1, keepdim=True)], dim=1)
        scales.append(F.interpolate(pooled.transpose(1, 2), size=length, mode="linear", align_corners=False).transpose(1, 2))
    return torch.stack(scales).mean(dim=0)


def _single_head_block(block: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The public code's recomputation of one residual block: (x out, (q, k, v, attention, attention output))."""
    attn = getattr(block, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention):
        raise GadmsError("method.score_variant 'public' needs open_clip's nn.MultiheadAttention text blocks (the OpenAI CLIP layout)")
    h = block.ln_1(x)
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)  # [B, T, D] each
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(1, 2) + mask
    probs = torch.softmax(scores, dim=-1)  # [B, T, T]
    out = probs @ v  # [B, T, D]
    x = x + block.ls_1(F.linear(out, attn.out_proj.weight, attn.out_proj.bias))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, (q, k, v, probs, out)


def public_ga_token_scores(
    model: nn.Module, images_or_features: torch.Tensor, tokens: torch.Tensor, num_layers: ScoreLayers = 8
) -> torch.Tensor:
    """The public code's GA score (see the module docstring): [B, T] in [0, 1] for the given
    ``tokens`` [B, T] (computed at the full context, returned for the first T positions), detached.
    ``num_layers``: as for :func:`~gadms_cli.gadms.ga_score.resolve_score_layers`."""
    clip = _clip_of(model)
    image = F.normalize(_image_features(model, images_or_features).float(), dim=-1)
    batch, length = tokens.shape
    context = clip.positional_embedding.shape[0]
    full = F.pad(tokens, (0, context - length))  # zero padding, as IRRA's tokenizer writes it
    blocks = clip.transformer.resblocks
    taps = resolve_score_layers(num_layers, len(blocks))
    dtype = clip.token_embedding.weight.dtype
    mask = clip.attn_mask.to(dtype)
    batch_first = getattr(clip.transformer, "batch_first", True)
    with torch.no_grad():
        x = clip.token_embedding(full).to(dtype) + clip.positional_embedding.to(dtype)
        for block in blocks[: len(blocks) - taps]:
            x = _plain_block(block, x, mask, batch_first, use_checkpoint=False)
    eos = full.argmax(dim=-1)
    rows = torch.arange(batch, device=tokens.device)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        recorded = []
        for block in blocks[len(blocks) - taps :]:
            x, tensors = _single_head_block(block, x, mask)
            recorded.append(tensors)
        text = F.normalize(project_text(clip, clip.ln_final(x)[rows, eos]).float(), dim=-1)
        similarity = (text * image).sum(dim=-1)  # c_b
        grads = torch.autograd.grad(similarity.sum(), [out for *_, out in recorded])
    positions = torch.arange(context, device=tokens.device)[None, :]
    content = ((positions > 0) & (positions < eos[:, None])).to(dtype)
    total = torch.zeros(batch, context, device=tokens.device, dtype=dtype)
    for (q, k, v, probs, _), grad in zip(recorded, grads):
        q_pooled = F.normalize(public_multi_scale_pool(q.detach()), dim=-1)
        k_pooled = F.normalize(public_multi_scale_pool(k.detach()), dim=-1)
        cosine = (q_pooled[rows, eos].unsqueeze(1) * k_pooled).sum(dim=-1)  # [B, T]
        low, high = cosine.min(dim=1, keepdim=True).values, cosine.max(dim=1, keepdim=True).values
        spatial = (cosine - low) / (high - low + _EPS)
        raw = (grad[rows, eos].unsqueeze(1) * v.detach() * spatial.unsqueeze(-1)).sum(dim=-1)  # [B, T]
        attention = probs.detach()[rows, eos] * content
        attention = attention / (raw.sum(dim=1, keepdim=True) + _EPS)
        total = total + raw * content * attention
    emap = torch.relu(total) * content
    low, high = emap.min(), emap.max()
    scores = (emap - low) / (high - low) if high > low else torch.zeros_like(emap)
    return scores[:, :length].float().detach()
