"""Caption dropout (data.augment.caption_dropout): phrases by hand, the drop rate, and the recipe checks."""

from __future__ import annotations

import random

import pytest

from gadms_cli.data.caption_dropout import drop_phrases, phrases
from gadms_cli.errors import GadmsError
from gadms_cli.recipe import load_recipe

CAPTION = "A woman in a red coat, black jeans and white shoes. She has long hair. She carries a backpack."


def test_phrases_are_sentences_split_at_commas():
    assert phrases(CAPTION) == [
        "A woman in a red coat,",
        "black jeans and white shoes.",
        "She has long hair.",
        "She carries a backpack.",
    ]
    assert phrases("a man in a green jacket") == ["a man in a green jacket"]


def test_zero_keeps_the_caption_and_one_phrase_always_stays():
    assert drop_phrases(CAPTION, 0.0, random.Random(0)) == CAPTION
    assert drop_phrases("a man in a green jacket", 0.9, random.Random(0)) == "a man in a green jacket"
    for seed in range(50):
        text = drop_phrases(CAPTION, 0.99, random.Random(seed))
        assert text and text in {p.rstrip(",")[:1].upper() + p.rstrip(",")[1:] for p in phrases(CAPTION)}


def test_each_phrase_is_dropped_with_the_given_probability():
    kept = {phrase: 0 for phrase in phrases(CAPTION)}
    trials = 4000
    rng = random.Random(1)
    for _ in range(trials):
        text = drop_phrases(CAPTION, 0.3, rng)
        for phrase in kept:
            core = phrase.rstrip(",.").lower()
            kept[phrase] += core in text.lower()
    for phrase, count in kept.items():  # kept with p 0.7 (a little more: one phrase always stays); sd about 0.007
        assert 0.67 < count / trials < 0.74, (phrase, count / trials)


def test_recipe_range_and_the_cached_score_conflict_are_one_line_errors():
    recipe = load_recipe("quickstart", ["data.augment.caption_dropout=0.2"])
    assert recipe.data.augment.caption_dropout == 0.2
    with pytest.raises(GadmsError, match=r"'data.augment.caption_dropout' must be in \[0, 1\)"):
        load_recipe("quickstart", ["data.augment.caption_dropout=1.0"])
    with pytest.raises(GadmsError, match=r"'data.augment.caption_dropout' must be in \[0, 1\)"):
        load_recipe("quickstart", ["data.augment.caption_dropout=-0.1"])
    with pytest.raises(GadmsError, match="score_timing"):
        load_recipe("quickstart", ["data.augment.caption_dropout=0.2", "method.score_timing=cached"])
