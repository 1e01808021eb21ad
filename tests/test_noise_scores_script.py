"""benchmarks/noise_scores.py locates SketchPedes' corrupted words at the right token positions."""

import importlib.util
from pathlib import Path

from gadms_cli.model.tokenizer import Tokenizer

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "noise_scores.py"
spec = importlib.util.spec_from_file_location("noise_scores", SCRIPT)
noise_scores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(noise_scores)


def test_written_word_and_phrase_positions_counted_by_hand():
    tokenizer = Tokenizer(64)
    caption = "A woman in a red coat. Street style inspiration."
    # BOS=0, a=1, woman=2, in=3, a=4, red=5, coat=6, .=7, street=8, style=9, inspiration=10, .=11
    edits = [
        {"kind": "wrong_colour", "slot": "top", "true": "blue", "written": "red"},
        {"kind": "irrelevant_phrase", "phrase": "Street style inspiration."},
        {"kind": "dropped_words", "words": ["She"]},  # nothing written: no position
    ]
    assert noise_scores.noise_positions(tokenizer, caption, edits) == [5, 8, 9, 10, 11]


def test_a_word_written_twice_cannot_be_located():
    tokenizer = Tokenizer(64)
    caption = "A man in a red coat and red shoes."
    edits = [{"kind": "wrong_colour", "slot": "shoes", "true": "black", "written": "red"}]
    assert noise_scores.noise_positions(tokenizer, caption, edits) is None
    assert noise_scores.find_once([1, 2, 3, 2, 3], [2, 3]) is None
    assert noise_scores.find_once([1, 2, 3], [2, 3]) == 1
