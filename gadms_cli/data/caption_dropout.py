"""Caption dropout: train on shorter, partial versions of a caption (a text augmentation).

A benchmark caption describes most of the outfit, and a model trained on whole outfits
matches on whatever tells them apart (usually colours). Dropping whole phrases now and
then trains the model on partial descriptions, as users type them: "A woman in a red coat
with long black hair. She carries a backpack." may become "She carries a backpack."

Phrases are the caption's sentences, and within a sentence its comma-separated parts
(CUHK-PEDES captions list items with commas). Each phrase is dropped with probability
``p``; at least one always stays. The draw depends only on (seed, epoch, caption index),
so a resumed run sees the same captions.
"""

from __future__ import annotations

import random
import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_COMMA = re.compile(r",\s+")


def phrases(caption: str) -> list[str]:
    """The caption's phrases: sentences, split again at commas (the separators are kept with the phrase before)."""
    parts: list[str] = []
    for sentence in _SENTENCE_END.split(caption.strip()):
        pieces = _COMMA.split(sentence)
        parts += [piece + "," for piece in pieces[:-1]] + pieces[-1:]
    return [p for p in parts if p]


def drop_phrases(caption: str, p: float, rng: random.Random) -> str:
    """``caption`` with each phrase dropped with probability ``p`` (at least one kept); p = 0 returns it unchanged."""
    if p <= 0:
        return caption
    parts = phrases(caption)
    if len(parts) < 2:
        return caption
    kept = [part for part in parts if rng.random() >= p]
    if not kept:
        kept = [parts[rng.randrange(len(parts))]]
    text = " ".join(kept).rstrip(",")
    return text[:1].upper() + text[1:]
