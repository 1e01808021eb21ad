"""Dual masking: probabilities, sampling rates, BERT rule, special tokens, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from gadms_cli.gadms.masking import (
    EOT_ID,
    MASK_ID,
    SOT_ID,
    VOCAB_SIZE,
    apply_bert_replacement,
    informative_mask,
    informative_mask_probability,
    maskable_positions,
    noise_mask,
    noise_mask_probability,
    random_mask,
    random_mask_probability,
    sample_mask,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_id_constants_follow_method_md():
    assert (MASK_ID, SOT_ID, EOT_ID, VOCAB_SIZE) == (49405, 49406, 49407, 49408)


@pytest.mark.parametrize("s", [0.0, 0.05, 0.1, 0.5, 0.9, 1.0])
def test_probabilities_match_the_formulas(s):
    scores = torch.tensor([s], dtype=torch.float64)
    assert noise_mask_probability(scores).item() == pytest.approx(0.2 * sigmoid(20 * ((1 - s) - 0.9)))
    assert informative_mask_probability(scores).item() == pytest.approx(0.3 * sigmoid(20 * (s - 0.1)))
    # the midpoints of the schedules, by hand
    assert noise_mask_probability(torch.tensor(0.1)).item() == pytest.approx(0.1)
    assert informative_mask_probability(torch.tensor(0.1)).item() == pytest.approx(0.15)
    custom = noise_mask_probability(scores, alpha=0.5, lam=4.0, gamma=0.3).item()
    assert custom == pytest.approx(0.5 * sigmoid(4 * ((1 - s) - 0.3)))


def test_random_mask_probability():
    assert random_mask_probability().item() == pytest.approx(0.15)
    like = torch.zeros(3, 5, dtype=torch.long)
    full = random_mask_probability(0.4, like=like)
    assert full.shape == (3, 5) and torch.all(full == 0.4)
    with pytest.raises(ValueError):
        random_mask_probability(1.5)


def captions(num: int, content: int, context: int) -> torch.Tensor:
    """``num`` captions: SOT, ``content`` regular tokens (including id 0, CLIP's "!"), EOT, padding."""
    tokens = torch.zeros(num, context, dtype=torch.long)
    tokens[:, 0] = SOT_ID
    tokens[:, 1 : content + 1] = torch.arange(content) % 1000  # id 0 appears as content
    tokens[:, content + 1] = EOT_ID
    return tokens


def test_maskable_positions_hand_built():
    tokens = torch.tensor(
        [
            [SOT_ID, 320, 0, 1125, EOT_ID, 0, 0],  # "!" (id 0) inside the caption is content
            [SOT_ID, EOT_ID, 0, 0, 0, 0, 0],  # empty caption
            [0, 0, 0, 0, 0, 0, 0],  # all padding
            [SOT_ID, 5, 6, 7, 8, 9, 10],  # truncated without EOT
            [SOT_ID, 5, MASK_ID, 7, EOT_ID, 0, 0],  # an already masked token stays unmaskable
        ]
    )
    expected = torch.tensor(
        [
            [0, 1, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 1, 1, 1],
            [0, 1, 0, 1, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(maskable_positions(tokens), expected)


@pytest.mark.parametrize("s", [0.0, 0.08, 0.1, 0.15, 0.5, 1.0])
def test_empirical_rates_match_formula_and_specials_are_never_masked(s):
    tokens = captions(num=2000, content=100, context=110)  # 200,000 content tokens
    scores = torch.full(tokens.shape, s)  # specials and padding too: they must still be skipped
    content = maskable_positions(tokens)
    n = int(content.sum())
    assert n == 200_000
    for masking, formula in (
        (noise_mask, 0.2 * sigmoid(20 * ((1 - s) - 0.9))),
        (informative_mask, 0.3 * sigmoid(20 * (s - 0.1))),
    ):
        generator = torch.Generator().manual_seed(1234)
        out = masking(tokens, scores, generator=generator, at_least_one=False)
        assert not out.selected[~content].any()
        assert torch.equal(out.tokens[~content], tokens[~content])
        rate = out.selected.sum().item() / n
        std = math.sqrt(formula * (1 - formula) / n)
        assert abs(rate - formula) <= 5 * std + 1e-9, (masking.__name__, s, rate, formula)


def test_bert_rule_80_10_10_and_labels():
    tokens = captions(num=2000, content=100, context=110)
    selected = maskable_positions(tokens)
    generator = torch.Generator().manual_seed(0)
    masked, labels = apply_bert_replacement(tokens, selected, generator=generator)
    n = int(selected.sum())
    became_mask = (masked == MASK_ID) & selected
    changed_to_other = (masked != tokens) & (masked != MASK_ID)
    unchanged = (masked == tokens) & selected
    for observed, p in ((became_mask, 0.8), (changed_to_other, 0.1), (unchanged, 0.1)):
        # a random token equal to the original (p = 1/49404) counts as unchanged: far below tolerance
        assert abs(observed.sum().item() / n - p) <= 5 * math.sqrt(p * (1 - p) / n)
    assert not changed_to_other[~selected].any()
    random_ids = masked[changed_to_other]
    # regular vocabulary only: never padding (0) nor a special id
    assert random_ids.min() >= 1 and random_ids.max() <= MASK_ID - 1
    # roughly uniform over 1..49404: mean (1 + 49404) / 2, std of the mean from the uniform law
    uniform_std = (MASK_ID - 1) / math.sqrt(12) / math.sqrt(len(random_ids))
    assert abs(random_ids.float().mean().item() - MASK_ID / 2) < 5 * uniform_std
    assert torch.equal(labels[selected], tokens[selected])
    assert torch.all(labels[~selected] == -100)


def test_random_replacement_skips_excluded_ids_anywhere_in_the_vocabulary():
    tokens = torch.zeros(1, 20000, dtype=torch.long)
    selected = torch.ones_like(tokens, dtype=torch.bool)
    generator = torch.Generator().manual_seed(3)
    # tiny vocabulary with excluded ids in the middle: draws must cover exactly the rest
    masked, _ = apply_bert_replacement(
        tokens, selected, mask_id=9, vocab_size=10, generator=generator, excluded_ids=(0, 4, 9)
    )
    drawn = set(masked[masked != 9].tolist()) - {0}
    assert drawn == {1, 2, 3, 5, 6, 7, 8}


def test_at_least_one_token_per_caption():
    tokens = torch.cat([captions(500, content=12, context=20), captions(3, content=0, context=20)])
    scores = torch.zeros(tokens.shape)  # informative p = 0.3 * sigmoid(-2) ~ 0.036: many rows draw none
    generator = torch.Generator().manual_seed(5)
    free = informative_mask(tokens, scores, generator=generator, at_least_one=False)
    assert (free.selected[:500].sum(dim=1) == 0).sum() > 50  # the guarantee has work to do
    forced = informative_mask(tokens, scores, generator=torch.Generator().manual_seed(5))
    per_caption = forced.selected.sum(dim=1)
    assert torch.all(per_caption[:500] >= 1)
    assert torch.all(per_caption[500:] == 0)  # captions without content stay untouched
    assert not forced.selected[~maskable_positions(tokens)].any()
    assert torch.all((forced.labels != -100).sum(dim=1)[:500] >= 1)


def test_forced_token_is_sampled_proportionally_to_probability():
    rows = 40_000
    maskable = torch.zeros(rows, 4, dtype=torch.bool)
    maskable[:, 1:3] = True
    prob = torch.zeros(rows, 4)
    prob[:, 1], prob[:, 2] = 1e-9, 3e-9  # practically never drawn: the forced choice decides
    prob[:, 3] = 0.5  # not maskable: never chosen
    selected = sample_mask(prob, maskable, torch.Generator().manual_seed(0), at_least_one=True)
    assert torch.all(selected.sum(dim=1) == 1)
    share = selected[:, 2].float().mean().item()
    assert abs(share - 0.75) < 5 * math.sqrt(0.75 * 0.25 / rows)
    # all probabilities zero: uniform among the maskable tokens
    zero = sample_mask(torch.zeros(rows, 4), maskable, torch.Generator().manual_seed(0))
    assert torch.all(zero.sum(dim=1) == 1) and not zero[:, [0, 3]].any()
    assert abs(zero[:, 1].float().mean().item() - 0.5) < 5 * math.sqrt(0.25 / rows)


def test_seeded_generator_is_deterministic():
    tokens = captions(64, content=30, context=40)
    scores = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1))
    runs = [
        informative_mask(tokens, scores, generator=torch.Generator().manual_seed(42)) for _ in range(2)
    ]
    assert torch.equal(runs[0].tokens, runs[1].tokens) and torch.equal(runs[0].labels, runs[1].labels)
    other = informative_mask(tokens, scores, generator=torch.Generator().manual_seed(43))
    assert not torch.equal(runs[0].selected, other.selected)


def test_random_mask_rate_and_no_forced_token():
    tokens = captions(2000, content=100, context=110)
    out = random_mask(tokens, p=0.15, generator=torch.Generator().manual_seed(9))
    rate = out.selected.sum().item() / 200_000
    assert abs(rate - 0.15) <= 5 * math.sqrt(0.15 * 0.85 / 200_000)
    empty = random_mask(captions(10, content=5, context=10), p=0.0)
    assert not empty.selected.any() and torch.all(empty.labels == -100)


def test_irra_forcing_masks_the_first_word_of_a_caption_that_drew_nothing():
    """IRRA's rule, written out: with probability 0 nothing is drawn, so position 1 of every caption
    with content becomes [MASK] with its label; captions without content are left alone."""
    from gadms_cli.gadms.masking import random_mask
    from gadms_cli.model.tokenizer import EOT_ID, MASK_ID, SOT_ID

    tokens = torch.tensor([[SOT_ID, 320, 1929, 530, EOT_ID, 0], [SOT_ID, EOT_ID, 0, 0, 0, 0]])
    out = random_mask(tokens, p=0.0, at_least_one=True, force_first=True, generator=torch.Generator().manual_seed(0))
    assert out.tokens.tolist() == [[SOT_ID, MASK_ID, 1929, 530, EOT_ID, 0], [SOT_ID, EOT_ID, 0, 0, 0, 0]]
    assert out.labels.tolist() == [[-100, 320, -100, -100, -100, -100], [-100] * 6]
    # four content words at p = 0.15: without forcing 0.85^4 = 52% of captions stay unmasked; with it none
    many = torch.tensor([[SOT_ID, 320, 1929, 530, 2308, EOT_ID]] * 4000)
    free = random_mask(many, p=0.15, generator=torch.Generator().manual_seed(1))
    forced = random_mask(many, p=0.15, at_least_one=True, force_first=True, generator=torch.Generator().manual_seed(1))
    assert abs((~free.selected.any(1)).float().mean().item() - 0.85**4) < 0.03
    assert forced.selected.any(1).all()
