"""The hand-run text tower equals open_clip's encode_text, and its taps equal torch's own attention."""

import open_clip
import pytest
import torch

from gadms_cli.model.factory import register_model_configs, resolve_arch
from gadms_cli.model.text_taps import AttentionTap, run_text_tower, trim_to_longest
from gadms_cli.model.tokenizer import Tokenizer

CAPTIONS = ["a man in a red coat", "a woman with a black bag and white shoes walking", "child"]


def tiny_clip(**text_overrides) -> open_clip.model.CLIP:
    register_model_configs()
    _, config = resolve_arch("gadms-tiny")
    config["text_cfg"]["layers"] = 3
    config["text_cfg"].update(text_overrides)
    torch.manual_seed(0)
    return open_clip.model.CLIP(**config).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return Tokenizer(77)(CAPTIONS)


def test_embedding_equals_open_clip_encode_text(tokens):
    clip = tiny_clip()
    expected = clip.encode_text(tokens)
    for taps in (0, 2, 3, 8):
        out = run_text_tower(clip, tokens, tap_layers=taps)
        assert torch.allclose(out.embedding, expected, atol=1e-5)
        assert len(out.taps) == min(taps, 3)
    trimmed = trim_to_longest(tokens)
    assert trimmed.shape[1] == int(tokens.argmax(-1).max()) + 1
    assert torch.allclose(run_text_tower(clip, trimmed, tap_layers=2).embedding, expected, atol=1e-5)


def test_taps_equal_torch_multihead_attention(tokens):
    clip = tiny_clip()
    out = run_text_tower(clip, tokens, tap_layers=2, token_features=True)
    # Recompute the input of the last block with open_clip's own blocks.
    x = clip.token_embedding(tokens) + clip.positional_embedding
    for block in clip.transformer.resblocks[:2]:
        x = block(x, attn_mask=clip.attn_mask)
    block = clip.transformer.resblocks[2]
    hidden = block.ln_1(x)
    attn_out, weights = block.attn(
        hidden, hidden, hidden, need_weights=True, average_attn_weights=False, attn_mask=clip.attn_mask
    )
    tap = out.taps[-1]
    heads, width = block.attn.num_heads, hidden.shape[-1]
    assert tap.layer == 2
    assert tap.q.shape == (3, heads, 77, width // heads) and tap.attn.shape == (3, heads, 77, 77)
    assert torch.allclose(tap.attn, weights, atol=1e-6)
    assert torch.allclose(block.attn.out_proj(tap.out), attn_out, atol=1e-5)
    value_weight = block.attn.in_proj_weight[2 * width :]
    value_bias = block.attn.in_proj_bias[2 * width :]
    assert torch.allclose(AttentionTap.concat_heads(tap.v), hidden @ value_weight.T + value_bias, atol=1e-5)
    # Causality: no attention to later tokens.
    assert torch.all(tap.attn.triu(1) == 0)
    # Token features: ln_final + projection of every position; the EOS row is the embedding.
    final = clip.ln_final(block(x, attn_mask=clip.attn_mask)) @ clip.text_projection
    assert torch.allclose(out.token_features, final, atol=1e-5)


def test_attention_output_is_in_the_graph(tokens):
    clip = tiny_clip()
    out = run_text_tower(clip, tokens, tap_layers=2)
    grads = torch.autograd.grad(out.embedding.sum(), [t.out for t in out.taps])
    assert all(g.shape == t.out.shape and g.abs().sum() > 0 for g, t in zip(grads, out.taps))
    for p in clip.parameters():  # frozen weights: O still gets a gradient
        p.requires_grad_(False)
    out = run_text_tower(clip, tokens, tap_layers=1, grad_before_taps=False)
    (grad,) = torch.autograd.grad(out.embedding.sum(), [out.taps[0].out])
    assert grad.abs().sum() > 0


def test_custom_attention_blocks(tokens):
    clip = tiny_clip(qk_norm=True, scale_heads=True, scale_attn_inner=True, scale_attn=True)
    assert type(clip.transformer.resblocks[0]).__name__ == "CustomResidualAttentionBlock"
    with torch.no_grad():  # make the optional parts non-trivial
        for block in clip.transformer.resblocks:
            block.attn.head_scale.uniform_(0.5, 1.5)
            block.attn.ln_inner.weight.uniform_(0.5, 1.5)
            block.ln_attn.bias.normal_(0, 0.1)
    out = run_text_tower(clip, tokens, tap_layers=3)
    assert torch.allclose(out.embedding, clip.encode_text(tokens), atol=1e-5)
    assert torch.allclose(out.taps[0].attn.sum(-1), torch.ones(3, 2, 77), atol=1e-5)


def test_too_long_tokens_rejected():
    clip = tiny_clip()
    with pytest.raises(ValueError, match="context"):
        run_text_tower(clip, torch.zeros(1, 78, dtype=torch.long))
