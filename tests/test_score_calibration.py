"""Score calibrations, layer counts, leave-one-out attribution and the noise-word helpers,
each against a hand computation or a brute-force reference written here."""

import pytest
import torch
import torch.nn.functional as F

from gadms_cli.data.synth.noise_words import find_all, lower_probability, noise_positions, word_positions
from gadms_cli.errors import GadmsError
from gadms_cli.gadms.attribution import leave_one_out_scores
from gadms_cli.gadms.ga_score import (
    centered_normalize,
    ga_score_terms,
    ga_token_scores,
    minmax_normalize,
    rank_normalize,
    resolve_score_layers,
)
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import MASK_ID, Tokenizer
from gadms_cli.recipe import load_recipe


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_person_clip(arch="gadms-tiny").eval()


def test_resolve_score_layers_by_hand():
    assert resolve_score_layers(8, 12) == 8
    assert resolve_score_layers(8, 3) == 3  # clamped
    assert resolve_score_layers("all", 3) == 3
    assert resolve_score_layers(0.67, 12) == 8  # the paper's 8 of 12
    assert resolve_score_layers(0.67, 3) == 2
    assert resolve_score_layers(0.1, 3) == 1  # at least one
    assert resolve_score_layers(2.0, 12) == 2  # a whole float is a count
    for bad in (0, -3, 1.5, "most", True):
        with pytest.raises(ValueError):
            resolve_score_layers(bad, 12)


def test_recipe_score_layers_errors_name_the_key():
    assert load_recipe("quickstart", ["method.score_layers=all"]).method.score_layers == "all"
    with pytest.raises(GadmsError, match=r"'method.score_layers'.*>= 1"):
        load_recipe("quickstart", ["method.score_layers=-3"])
    with pytest.raises(GadmsError, match=r"'method.score_normalize' must be 'batch' \| 'sample' \| 'rank' \| 'centered'"):
        load_recipe("quickstart", ["method.score_normalize=zscore"])


def test_rank_normalize_by_hand():
    scores = torch.tensor([[0.0, 3.0, 1.0, 1.0, 5.0, 9.0], [0.0, 2.0, 7.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, True, True, True, False], [False, True, False, False, False, False]])
    out = rank_normalize(scores, mask)
    # row 0 content values 3, 1, 1, 5 -> ranks 2, 0.5, 0.5, 3 over n - 1 = 3; row 1 has one token -> 0.5
    expected = torch.tensor([[0, 2 / 3, 0.5 / 3, 0.5 / 3, 1.0, 0], [0, 0.5, 0, 0, 0, 0]])
    assert torch.allclose(out, expected)


def test_centered_normalize_by_hand():
    scores = torch.tensor([[9.0, -2.0, 1.0, 4.0, 0.0, 7.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 1.5, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[False, True, True, True, True, False], [False, True, True, False, False, False],
                         [False, True, True, False, False, False]])
    out = centered_normalize(scores, mask)
    # row 0: content -2, 1, 4, 0, max |s| = 4 -> 0.5 + 0.5 * s / 4 = 0.25, 0.625, 1.0, 0.5 (0 stays at 0.5)
    # row 1: all zero -> 0.5 on the content tokens; row 2: 3, 1.5 -> 1.0, 0.75 (no word goes to 0)
    expected = torch.tensor([[0, 0.25, 0.625, 1.0, 0.5, 0], [0, 0.5, 0.5, 0, 0, 0], [0, 1.0, 0.75, 0, 0, 0]])
    assert torch.allclose(out, expected)


def test_recipe_centered_needs_the_signed_score():
    assert load_recipe("quickstart", ["method.score_normalize=centered", "method.score_relu=false"]).method.score_normalize == "centered"
    with pytest.raises(GadmsError, match=r"'method.score_normalize: centered'.*set method.score_relu: false"):
        load_recipe("quickstart", ["method.score_normalize=centered", "method.score_relu=true"])


def test_signed_score_keeps_the_sign_that_relu_drops(model):
    tokens = Tokenizer(24)(["a man in a red coat", "a woman with a black bag"])
    image = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    terms = ga_score_terms(model, image, tokens, "all")
    by_hand = sum(g * a for g, a in zip(terms.gradient_scores, terms.attention_scores))
    content = (torch.arange(tokens.shape[1])[None] > 0) & (torch.arange(tokens.shape[1])[None] < tokens.argmax(-1, keepdim=True))
    assert torch.allclose(terms.signed, by_hand * content, atol=1e-7)
    assert len(terms.layers) == 2  # gadms-tiny has 2 text layers: "all" taps both
    signed = ga_token_scores(model, image, tokens, "all", normalize="sample", relu=False)
    assert torch.allclose(signed, minmax_normalize(by_hand * content, content, "sample"), atol=1e-6)
    # with the ReLU every negative token ties at 0; without it, they keep their order
    negative = (terms.signed < 0) & content
    assert negative.any()
    relu_scores = ga_token_scores(model, image, tokens, "all", normalize="sample")
    assert torch.all(relu_scores[negative] == 0)


def test_leave_one_out_against_one_forward_per_variant(model):
    tokenizer = Tokenizer(model.clip.positional_embedding.shape[0])  # open_clip's encode_text wants the full context
    captions = ["a man in a red coat", "blue jeans"]
    tokens = tokenizer(captions)
    image = torch.randn(2, 64, generator=torch.Generator().manual_seed(2))
    loo = leave_one_out_scores(model, image, tokens, chunk=3)  # small chunks: the chunking is exercised
    clip = model.clip
    with torch.no_grad():
        for b in range(2):
            eos = int(tokens[b].argmax())
            base = F.cosine_similarity(clip.encode_text(tokens[b : b + 1]), image[b : b + 1]).item()
            for i in range(tokens.shape[1]):
                if 0 < i < eos:
                    variant = tokens[b : b + 1].clone()
                    variant[0, i] = MASK_ID
                    want = base - F.cosine_similarity(clip.encode_text(variant), image[b : b + 1]).item()
                    assert loo[b, i].item() == pytest.approx(want, abs=1e-5)
                else:
                    assert loo[b, i].item() == 0.0


def test_noise_and_word_positions_by_hand():
    tokenizer = Tokenizer(77)
    caption = "A man in a blue coat and black jeans. Stock photo, royalty free."
    ids = tokenizer.encode(caption)
    assert find_all([1, 2, 1, 2, 3], [1, 2]) == [0, 2]
    assert find_all([1, 2], []) == []
    blue = noise_positions(tokenizer, caption, {"kind": "wrong_colour", "written": "blue"})
    assert [ids[p - 1] for p in blue] == tokenizer.encode("blue")
    assert blue == [5]  # BOS a man in a blue: "blue" is the 5th word, position 5 with BOS at 0
    phrase = noise_positions(tokenizer, caption, {"kind": "irrelevant_phrase", "phrase": "Stock photo, royalty free."})
    assert len(phrase) == len(tokenizer.encode("Stock photo, royalty free.")) and phrase[-1] == len(ids)
    assert noise_positions(tokenizer, "a red coat and red shoes", {"kind": "wrong_colour", "written": "red"}) is None
    assert noise_positions(tokenizer, caption, {"kind": "dropped_words"}) is None
    colours = word_positions(tokenizer, caption, ("blue", "black", "red"), exclude=blue)
    assert colours == [8]  # "black" only: blue is the noise word, red does not occur


def test_lower_probability_counts_by_hand():
    # 0.1 < 0.5, 0.1 < 0.9; 0.5 == 0.5 (half), 0.5 < 0.9 -> 3.5 of 4
    assert lower_probability([0.1, 0.5], [0.5, 0.9]) == (3.5, 4)
    assert lower_probability([], [1.0]) == (0.0, 0)
