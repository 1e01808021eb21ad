"""Checking a generated caption before it is kept; a rejected caption is asked for again.

:func:`clean_caption` removes harmless wrapping (quotes, a "Caption:" label, line breaks);
:func:`caption_rejection` then names the first problem, or returns None:

==================  ==========================================================================
``empty``           nothing left after cleaning
``refusal``         the model declined ("I'm sorry, I can't ...")
``placeholder``     a template placeholder such as ``[top]`` was left in
``bracket``         any other square, curly or angle bracket
``too_short``       fewer than ``min_words`` words
``too_long``        more than ``max_words`` words
``not_english``     letters outside a-z, or almost no English function words
``no_person_word``  no word naming a person (man, woman, person, she, ...)
``template_copy``   the template's own words, nearly unchanged (placeholders dropped)
==================  ==========================================================================

The pipeline adds ``duplicate`` (caption 2 equal to caption 1), and the backends
``truncated`` (the reply hit the token limit) and ``malformed_reply``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from gadms_cli.curate.templates import PLACEHOLDER, PLACEHOLDERS

CAPTION_REJECTIONS: tuple[str, ...] = (
    "malformed_reply", "truncated", "empty", "refusal", "placeholder", "bracket", "too_short", "too_long",
    "not_english", "no_person_word", "template_copy", "duplicate",
)  # fmt: skip

PERSON_WORDS = frozenset(
    "man men woman women person people persons lady ladies gentleman gentlemen girl girls boy boys guy guys "
    "child children kid kids teen teenager teenagers adult adults pedestrian pedestrians male female individual "
    "someone he she him his her hers they student worker".split()
)
ENGLISH_FUNCTION_WORDS = frozenset(
    "a an the and or with without in on of to at by for from is are was has have wears wearing carries carrying "
    "who which that his her their he she it its this also".split()
)
_REFUSALS = re.compile(r"^(i'?m sorry|i am sorry|sorry,|i can(no|')t|i cannot|as an ai|i am unable|i'm unable)", re.IGNORECASE)
_LABEL = re.compile(r"^(caption|description|answer)\s*\d*\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_WORD = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)*")


@dataclass(frozen=True)
class CaptionRules:
    """Caption checks. Words are whitespace-separated tokens; ``min_english_letters`` is the share of
    letters that must be a-z/A-Z and ``min_function_words`` the share of words that must be common
    English function words; ``max_template_similarity`` is the word-sequence similarity (difflib
    ratio, 0..1) above which a caption counts as a copy of its template."""

    min_words: int = 8
    max_words: int = 100
    min_english_letters: float = 0.97
    min_function_words: float = 0.1
    max_template_similarity: float = 0.9

    def problem(self) -> str | None:
        """The first invalid setting as a one-line message naming its flag, or None."""
        if not 1 <= self.min_words <= self.max_words:
            return f"--min-words ({self.min_words}) must be >= 1 and <= --max-words ({self.max_words})"
        return None


def clean_caption(text: str) -> str:
    """Collapse whitespace and strip wrapping quotes and a leading "Caption:"-style label."""
    text = " ".join(text.split())
    text = _LABEL.sub("", text)
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


def words_of(text: str) -> list[str]:
    """Lower-case words (letters, with inner hyphens/apostrophes) of ``text``."""
    return [word.lower() for word in _WORD.findall(text)]


def looks_english(text: str, rules: CaptionRules) -> bool:
    """Nearly all letters are a-z/A-Z and enough words are English function words."""
    letters = [char for char in text if char.isalpha()]
    if not letters:
        return False
    if sum(char.isascii() for char in letters) / len(letters) < rules.min_english_letters:
        return False
    words = words_of(text)
    return bool(words) and sum(word in ENGLISH_FUNCTION_WORDS for word in words) / len(words) >= rules.min_function_words


def template_similarity(caption: str, template: str) -> float:
    """How close the caption's words are to the template's own words (difflib ratio, 0..1).

    The template is read twice, with its placeholders dropped and with them replaced by their
    bare names ("[top]" -> "top"); the higher ratio counts, so both a caption that only drops
    the placeholders and one that just removes the brackets are copies.
    """
    words = words_of(caption)
    variants = (PLACEHOLDER.sub(" ", template), PLACEHOLDER.sub(lambda match: f" {match.group(1)} ", template))
    return max(difflib.SequenceMatcher(a=words, b=words_of(variant), autojunk=False).ratio() for variant in variants)


def caption_rejection(caption: str, template: str | None, rules: CaptionRules) -> str | None:
    """The first problem of a cleaned ``caption`` (a name from the module table), or None when it is kept."""
    if not caption:
        return "empty"
    if _REFUSALS.match(caption):
        return "refusal"
    if any(name in PLACEHOLDERS for name in (m.group(1).strip().lower() for m in PLACEHOLDER.finditer(caption))):
        return "placeholder"
    if re.search(r"[\[\]{}<>]", caption):
        return "bracket"
    count = len(caption.split())
    if count < rules.min_words:
        return "too_short"
    if count > rules.max_words:
        return "too_long"
    if not looks_english(caption, rules):
        return "not_english"
    if not PERSON_WORDS.intersection(words_of(caption)):
        return "no_person_word"
    if template is not None and template_similarity(caption, template) >= rules.max_template_similarity:
        return "template_copy"
    return None
