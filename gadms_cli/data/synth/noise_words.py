"""Where the noise words and the correct attribute words of a SketchPedes caption are.

SketchPedes records every corruption it made (``attributes.jsonl``: a wrong colour or
garment type written in place of the true one, or an irrelevant phrase). These helpers
turn a caption and its edits into token positions, so a token score can be checked
against the truth: a score that serves noise masking should rank the written-wrong
word BELOW the correct attribute words of the same caption (not merely below "a" and
"the", which a good score also ranks low).

Positions count the start token as 0, as in the ``[B, T]`` token tensors.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from gadms_cli.data.synth.attributes import BAG_TYPES, BOTTOM_TYPES, COLOURS, HAIR_LENGTHS, HAT_TYPES, TOP_TYPES
from gadms_cli.model.tokenizer import Tokenizer

# Words that name a colour in SketchPedes captions (the palette plus the synonyms captions use).
COLOUR_WORDS: tuple[str, ...] = (*COLOURS, "grey", "blond", "blonde")
# Words that name a garment, bag, hat or hair type.
TYPE_WORDS: tuple[str, ...] = (*TOP_TYPES, *BOTTOM_TYPES, *BAG_TYPES, *HAT_TYPES, *HAIR_LENGTHS)
# What a noise word of each kind is compared with: the correct words of the same caption.
COMPARED_WITH: dict[str, tuple[str, ...]] = {
    "wrong_colour": COLOUR_WORDS,
    "wrong_type": TYPE_WORDS,
    "irrelevant_phrase": (*COLOUR_WORDS, *TYPE_WORDS),
}
LOCATABLE_KINDS: tuple[str, ...] = tuple(COMPARED_WITH)


def find_all(haystack: Sequence[int], needle: Sequence[int]) -> list[int]:
    """Start indices of every occurrence of ``needle`` in ``haystack`` (none for an empty needle)."""
    if not needle:
        return []
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if list(haystack[i : i + n]) == list(needle)]


def noise_positions(tokenizer: Tokenizer, caption: str, edit: dict) -> list[int] | None:
    """Token positions of one edit's noise word(s) in ``caption``; None when the written word
    does not occur exactly once (then which occurrence is wrong is unknown) or the kind has no word."""
    if edit["kind"] not in LOCATABLE_KINDS:
        return None
    text = edit["phrase"] if edit["kind"] == "irrelevant_phrase" else edit["written"]
    ids = tokenizer.encode(caption)
    needle = tokenizer.encode(text)
    starts = find_all(ids, needle)
    if len(starts) != 1:
        return None
    return [1 + starts[0] + k for k in range(len(needle))]


def word_positions(tokenizer: Tokenizer, caption: str, words: Iterable[str], exclude: Iterable[int] = ()) -> list[int]:
    """Token positions of every occurrence of any of ``words`` in ``caption``, minus ``exclude``."""
    ids = tokenizer.encode(caption)
    excluded = set(exclude)
    found: set[int] = set()
    for word in words:
        needle = tokenizer.encode(word)
        for start in find_all(ids, needle):
            span = {1 + start + k for k in range(len(needle))}
            if not span & excluded:
                found |= span
    return sorted(found)


def lower_probability(lower: Sequence[float], higher: Sequence[float]) -> tuple[float, int]:
    """Wins and comparisons for "an entry of ``lower`` scores below an entry of ``higher``":
    every pair counts 1 when strictly lower, 0.5 when equal, 0 when higher. Returns
    ``(wins, pairs)``; ``wins / pairs`` is the probability (an AUC)."""
    wins = 0.0
    for a in lower:
        for b in higher:
            wins += 1.0 if a < b else 0.5 if a == b else 0.0
    return wins, len(lower) * len(higher)
