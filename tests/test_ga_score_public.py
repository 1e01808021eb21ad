"""The public GA-DMS code's GA score (``method.score_variant: public``) against a reference written
here from its description, caption by caption with plain loops, on a tiny model."""

import math

import pytest
import torch
import torch.nn.functional as F

from gadms_cli.gadms.ga_score_public import public_ga_token_scores, public_multi_scale_pool
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer
from gadms_cli.recipe import load_recipe

CAPTIONS = ["a man in a red coat", "a woman with a black bag and white shoes", "child in blue"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return create_person_clip(arch="gadms-tiny").eval()


def lerp_back(rows: list[torch.Tensor], length: int) -> list[torch.Tensor]:
    """Linear interpolation of len(rows) vectors to `length` positions, align_corners=False, by hand."""
    n = len(rows)
    out = []
    for i in range(length):
        src = max((i + 0.5) * n / length - 0.5, 0.0)
        low = min(int(math.floor(src)), n - 1)
        high = min(low + 1, n - 1)
        frac = src - low
        out.append(rows[low] * (1 - frac) + rows[high] * frac)
    return out


def msp_by_hand(x: torch.Tensor) -> torch.Tensor:
    """x [T, D]: window 1 is x itself; window 2 averages pairs, an odd last row alone, then back to T."""
    length = x.shape[0]
    pairs = [x[i : i + 2].mean(0) for i in range(0, length, 2)]  # the last is a single row when T is odd
    return (x + torch.stack(lerp_back(pairs, length))) / 2


def test_multi_scale_pool_keeps_an_odd_leftover_as_its_own_segment():
    x = torch.randn(2, 7, 5)
    ours = public_multi_scale_pool(x)
    for b in range(2):
        assert torch.allclose(ours[b], msp_by_hand(x[b]), atol=1e-6)


def reference(model, image: torch.Tensor, tokens: torch.Tensor, layers: int) -> torch.Tensor:
    clip = model.clip
    context = clip.positional_embedding.shape[0]
    full = F.pad(tokens, (0, context - tokens.shape[1]))
    blocks = clip.transformer.resblocks
    maps = []
    for b in range(full.shape[0]):
        ids = full[b : b + 1]
        eos = int(ids[0].argmax())
        x = clip.token_embedding(ids) + clip.positional_embedding
        with torch.no_grad():
            for block in blocks[: len(blocks) - layers]:
                x = block(x, attn_mask=clip.attn_mask)
        x = x.detach().requires_grad_(True)
        kept = []
        for block in blocks[len(blocks) - layers :]:
            width = x.shape[-1]
            h = block.ln_1(x)[0]
            w, bias = block.attn.in_proj_weight, block.attn.in_proj_bias
            q, k, v = (h @ w[i * width : (i + 1) * width].T + bias[i * width : (i + 1) * width] for i in range(3))
            logits = q @ k.T / math.sqrt(width)
            logits = logits + torch.full_like(logits, float("-inf")).triu(1)  # causal, one head of width D
            probs = torch.softmax(logits, dim=-1)
            out = probs @ v
            kept.append((q, k, v, probs, out))
            x = x + (out @ block.attn.out_proj.weight.T + block.attn.out_proj.bias)
            x = x + block.mlp(block.ln_2(x))
        text = clip.ln_final(x)[0, eos] @ clip.text_projection
        c = F.cosine_similarity(text, image[b], dim=0)
        grads = torch.autograd.grad(c, [t[-1] for t in kept])
        total = torch.zeros(context)
        for (q, k, v, probs, _), g in zip(kept, grads):
            qp, kp = msp_by_hand(q.detach()), msp_by_hand(k.detach())
            cos = torch.stack([F.cosine_similarity(qp[eos], kp[i], dim=0) for i in range(context)])
            spatial = (cos - cos.min()) / (cos.max() - cos.min() + 1e-8)
            raw = torch.stack([spatial[i] * (g[eos] @ v[i].detach()) for i in range(context)])
            denominator = raw.sum() + 1e-8  # the sum of the layer's gradient scores, all positions
            for i in range(1, eos):  # content tokens only
                total[i] += raw[i] * probs[eos, i].detach() / denominator
        maps.append(torch.relu(total))
    emap = torch.stack(maps)
    return emap / emap.max()  # batch-wide min-max with the zeros included: the minimum is 0


@pytest.mark.parametrize("layers", [1, 2])
def test_public_score_matches_the_reference(model, layers):
    tokens = Tokenizer(24)(CAPTIONS)
    image = torch.randn(3, 64, generator=torch.Generator().manual_seed(5))
    ours = public_ga_token_scores(model, image, tokens, layers)
    want = reference(model, image, tokens, layers)[:, : tokens.shape[1]]
    assert ours.shape == tokens.shape
    assert torch.allclose(ours, want, atol=1e-5)
    assert ours.max() == pytest.approx(1.0) and ours.min() == 0.0


def test_the_recipe_switch_reaches_the_objective(model):
    from gadms_cli.gadms.objective import RetrievalObjective

    recipe = load_recipe("quickstart", ["method.score_variant=public", "method.score_layers=2", "method.mtp=false", "method.attribute_weight=0"])
    objective = RetrievalObjective(model, recipe.method)
    tokens = Tokenizer(24)(CAPTIONS)[:, :12]
    image = torch.randn(3, 64, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(objective.token_scores(image, tokens), public_ga_token_scores(model, image, tokens, 2))
