"""The GA score against a brute-force reference written here, its invariances, and a constructed case."""

import pytest
import torch
import torch.nn.functional as F

from gadms_cli.gadms.ga_score import (
    ga_score_terms,
    ga_token_scores,
    multi_scale_pool,
    similarity_token_scores,
)
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer

CAPTIONS = ["a man in a red coat", "a woman with a black bag and white shoes", "child in blue"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_person_clip(arch="gadms-tiny").eval()


@pytest.fixture(scope="module")
def tokens():
    return Tokenizer(24)(CAPTIONS)


def hand_text_forward(clip, tokens):
    """The CLIP text tower written out with plain tensor ops; returns (embedding, token features, per-layer
    (q, k, v, probs, out)) where out is each layer's attention output before the output projection."""
    batch, length = tokens.shape
    x = clip.token_embedding.weight[tokens] + clip.positional_embedding[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    layers = []
    for block in clip.transformer.resblocks:
        width, heads = x.shape[-1], block.attn.num_heads
        h = F.layer_norm(x, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
        q, k, v = (h @ w[i * width : (i + 1) * width].T + b[i * width : (i + 1) * width] for i in range(3))
        split = lambda t: t.reshape(batch, length, heads, width // heads).transpose(1, 2)  # noqa: E731
        probs = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (width // heads) ** 0.5 + causal, dim=-1)
        out = (probs @ split(v)).transpose(1, 2).reshape(batch, length, width)
        layers.append((q, k, v, probs, out))
        x = x + out @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        x = x + block.mlp(F.layer_norm(x, (width,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps))
    x = F.layer_norm(x, (x.shape[-1],), clip.ln_final.weight, clip.ln_final.bias, clip.ln_final.eps)
    features = x @ clip.text_projection
    embedding = features[torch.arange(batch), tokens.argmax(-1)]
    return embedding, features, layers


def reference_msp(x, n):
    """MSP of one caption's first n rows with torch's own pooling and interpolation."""
    rows = x[:n].T.unsqueeze(0)  # [1, D, n]
    scales = [rows, F.interpolate(F.avg_pool1d(rows, 2), size=n, mode="linear", align_corners=False)]
    return torch.stack(scales).mean(0)[0].T  # [n, D]


def reference_ga(clip, image, tokens):
    """GA score of docs/method.md, caption by caption, from the hand-written forward."""
    embedding, _, layers = hand_text_forward(clip, tokens)
    cos = F.cosine_similarity(embedding, image, dim=-1)
    grads = torch.autograd.grad(cos.sum(), [layer[4] for layer in layers])
    raw = torch.zeros(tokens.shape)
    for b in range(tokens.shape[0]):
        eos = int(tokens[b].argmax())
        total = torch.zeros(eos + 1)
        for (q, k, v, probs, _), grad in zip(layers, grads):
            mq, mk = reference_msp(q[b].detach(), eos + 1), reference_msp(k[b].detach(), eos + 1)
            w = F.cosine_similarity(mq[eos][None], mk, dim=-1)
            w = (w - w.min()) / (w.max() - w.min())
            sg = w * (v[b, : eos + 1].detach() @ grad[b, eos])
            sa = probs[b, :, eos, : eos + 1].detach().mean(0)
            sa[0] = sa[eos] = 0
            sa = sa / sa.sum()
            total += sg * sa
        raw[b, : eos + 1] = torch.relu(total)
        raw[b, 0] = raw[b, eos] = 0
    return raw, grads


def test_msp_matches_torch_pooling_per_caption():
    x = torch.randn(3, 11, 5)
    lengths = torch.tensor([11, 6, 3])
    out = multi_scale_pool(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(out[b, :n], reference_msp(x[b], n), atol=1e-6)
        assert torch.all(out[b, n:] == 0)


def test_terms_equal_the_brute_force_reference(model, tokens):
    image = torch.randn(3, 64)
    raw, grads = reference_ga(model.clip, image, tokens)
    terms = ga_score_terms(model, image, tokens, num_layers=8)
    assert terms.layers == [0, 1]  # 8 clamped to the depth
    eos = tokens.argmax(-1)
    for layer_grad, ours in zip(grads, terms.gradients):
        expected = layer_grad[torch.arange(3), eos]
        assert torch.allclose(ours, expected, atol=1e-6, rtol=1e-4)
    assert torch.allclose(terms.raw, raw, atol=1e-7, rtol=1e-4)
    mask = torch.zeros_like(raw, dtype=torch.bool)
    for b, e in enumerate(eos.tolist()):
        mask[b, 1:e] = True
    content = raw[mask]
    expected_batch = torch.where(mask, (raw - content.min()) / (content.max() - content.min()), torch.zeros_like(raw))
    assert torch.allclose(ga_token_scores(model, image, tokens), expected_batch, atol=1e-6)


def test_only_the_last_layers_are_scored(model, tokens):
    image = torch.randn(3, 64)
    terms = ga_score_terms(model, image, tokens, num_layers=1)
    assert terms.layers == [1]
    _, grads = reference_ga(model.clip, image, tokens)
    assert torch.allclose(terms.gradients[0], grads[1][torch.arange(3), tokens.argmax(-1)], atol=1e-6, rtol=1e-4)


def test_range_zeros_and_detached(model, tokens):
    images = torch.randn(3, 3, 96, 32)
    with torch.no_grad():  # scoring works inside no_grad blocks too
        batch = ga_token_scores(model, images, tokens, normalize="batch")
        sample = ga_token_scores(model, images, tokens, normalize="sample")
    eos = tokens.argmax(-1)
    for scores in (batch, sample):
        assert not scores.requires_grad and scores.dtype == torch.float32
        assert scores.min() >= 0 and scores.max() <= 1
        for b, e in enumerate(eos.tolist()):
            assert scores[b, 0] == 0 and torch.all(scores[b, e:] == 0)
    assert batch.max() == 1
    assert torch.all((sample.amax(dim=1) == 1) | (sample.amax(dim=1) == 0))
    assert all(p.grad is None for p in model.parameters())
    features = model.encode_image(images).detach()
    assert torch.allclose(ga_token_scores(model, features, tokens, normalize="sample"), sample, atol=1e-6)


def test_padding_does_not_change_per_sample_scores(model):
    image = torch.randn(1, 64)
    long = Tokenizer(77)(["a woman with a black bag and white shoes"])
    short = Tokenizer(77)(["a woman with a black bag and white shoes"])[:, :14]
    scores_long = ga_token_scores(model, image, long, normalize="sample")
    scores_short = ga_token_scores(model, image, short, normalize="sample")
    assert torch.allclose(scores_long[:, :14], scores_short, atol=1e-6)
    assert torch.all(scores_long[:, 14:] == 0)
    # Other captions in the batch do not matter either in per-sample mode.
    others = Tokenizer(77)(["x", "a woman with a black bag and white shoes", "a man"])
    in_batch = ga_token_scores(model, torch.cat([torch.randn(1, 64), image, torch.randn(1, 64)]), others, normalize="sample")
    assert torch.allclose(in_batch[1], scores_long[0], atol=1e-6)


def constructed_model():
    """A text tower whose EOS reads exactly one word: layer 0 is the identity, and in layer 1 the EOS
    query is the (normalised) embedding of "red", keys and values are the normalised token embeddings."""
    torch.manual_seed(5)
    model = create_person_clip(arch="gadms-tiny").eval()
    clip = model.clip
    tokenizer = Tokenizer(16)
    red = tokenizer.encode("red")[0]
    with torch.no_grad():
        clip.positional_embedding.zero_()
        first, last = clip.transformer.resblocks
        for block in (first, last):
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
        first.attn.out_proj.weight.zero_()
        first.attn.out_proj.bias.zero_()
        width = 64
        normed = lambda t: F.layer_norm(t, (width,))  # noqa: E731
        eot_dir = normed(clip.token_embedding.weight[tokenizer.eot_id])
        red_dir = normed(clip.token_embedding.weight[red])
        w_q = 3.0 * torch.outer(red_dir, eot_dir) / eot_dir.dot(eot_dir)  # maps the EOT row onto "red"
        last.attn.in_proj_weight.copy_(torch.cat([w_q, torch.eye(width), torch.eye(width)]))
        last.attn.in_proj_bias.zero_()
        last.attn.out_proj.weight.copy_(torch.eye(width))
        last.attn.out_proj.bias.zero_()
        clip.text_projection.copy_(torch.eye(width))
    return model, red_dir


def test_constructed_case_the_matching_word_scores_highest():
    model, red_dir = constructed_model()
    tokenizer = Tokenizer(16)
    tokens = tokenizer(["a man in a red coat"])
    position = tokens[0].tolist().index(tokenizer.encode("red")[0])
    image = red_dir[None]
    # Ground truth by occlusion, independent of the scoring code: replacing which word hurts the match most?
    base = F.cosine_similarity(model.encode_text(tokens), image).item()
    drops = {}
    for p in range(1, int(tokens.argmax()) ):
        occluded = tokens.clone()
        occluded[0, p] = tokenizer.encode("blue")[0]
        drops[p] = base - F.cosine_similarity(model.encode_text(occluded), image).item()
    assert max(drops, key=drops.get) == position and drops[position] > 0.3
    scores = ga_token_scores(model, image, tokens, normalize="sample")[0]
    assert int(scores.argmax()) == position and scores[position] == 1
    others = [scores[p].item() for p in drops if p != position]
    assert max(others) < 0.5


def test_similarity_score_by_hand(model, tokens):
    image = torch.randn(3, 64)
    with torch.no_grad():
        _, features, _ = hand_text_forward(model.clip, tokens)
        sim = F.cosine_similarity(features, image[:, None, :], dim=-1)
    scores = similarity_token_scores(model, image, tokens, normalize="sample")
    for b, e in enumerate(tokens.argmax(-1).tolist()):
        content = sim[b, 1:e]
        expected = (content - content.min()) / (content.max() - content.min())
        assert torch.allclose(scores[b, 1:e], expected, atol=1e-5)
        assert scores[b, 0] == 0 and torch.all(scores[b, e:] == 0)
