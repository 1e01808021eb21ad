"""benchmarks/noise_scores.py: the corrupted words found at the right token positions, and its
tallies against counts made by hand."""

import importlib.util
from pathlib import Path

import pytest
import torch

from gadms_cli.data.synth.noise_words import noise_positions, word_positions
from gadms_cli.model.tokenizer import Tokenizer

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "noise_scores.py"
spec = importlib.util.spec_from_file_location("noise_scores", SCRIPT)
noise_scores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(noise_scores)


def test_written_word_and_phrase_positions_counted_by_hand():
    tokenizer = Tokenizer(64)
    caption = "A woman in a red coat. Street style inspiration."
    # BOS=0, a=1, woman=2, in=3, a=4, red=5, coat=6, .=7, street=8, style=9, inspiration=10, .=11
    assert noise_positions(tokenizer, caption, {"kind": "wrong_colour", "true": "blue", "written": "red"}) == [5]
    assert noise_positions(tokenizer, caption, {"kind": "irrelevant_phrase", "phrase": "Street style inspiration."}) == [8, 9, 10, 11]
    assert noise_positions(tokenizer, caption, {"kind": "dropped_words", "words": ["She"]}) is None
    assert word_positions(tokenizer, caption, ("coat", "dress"), exclude=[5]) == [6]


def test_a_word_written_twice_cannot_be_located():
    tokenizer = Tokenizer(64)
    caption = "A man in a red coat and red shoes."
    assert noise_positions(tokenizer, caption, {"kind": "wrong_colour", "true": "black", "written": "red"}) is None


def test_tallies_against_hand_counts():
    chunk = [
        {"kind": "wrong_colour", "noise": [2], "attr": [4, 5]},
        {"kind": None},  # a clean caption: masked tokens counted, no comparison
        {"kind": "irrelevant_phrase", "noise": [1, 2], "attr": [3]},
    ]
    scores = torch.tensor([
        [0.0, 0.5, 0.1, 0.9, 0.3, 0.1, 0.0],  # noise 0.1 vs attributes 0.3 (lower), 0.1 (tie): 1.5 of 2
        [0.0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.0],
        [0.0, 0.7, 0.2, 0.4, 0.0, 0.0, 0.0],  # noise 0.7 (higher), 0.2 (lower) vs 0.4: 1 of 2
    ])
    tally = noise_scores.Tally()
    tally.rank("s", scores, chunk)
    tally.mask("s", scores, chunk)  # probabilities = the scores themselves, for counting
    result = noise_scores.summarise(tally)
    assert result["P_lower"]["wrong_colour"]["s"] == 0.75
    assert result["P_lower"]["irrelevant_phrase"]["s"] == 0.5
    assert result["P_lower"]["all"]["s"] == pytest.approx(2.5 / 4, abs=1e-3)
    masking = result["masking"]["all"]["s"]
    assert masking["p_noise"] == pytest.approx((0.1 + 0.7 + 0.2) / 3, abs=1e-4)  # the three noise tokens
    assert masking["p_attr"] == pytest.approx((0.3 + 0.1 + 0.4) / 3, abs=1e-4)
    assert masking["masked_per_caption"] == pytest.approx((1.9 + 1.0 + 1.3) / 3, abs=0.01)
