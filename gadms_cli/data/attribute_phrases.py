"""Attribute phrases read from a caption, and short queries written from them (docs/method.md "Phrase alignment").

A caption such as "A lady with long black hair is wearing a red coat and blue jeans,
carrying a rucksack." names a few attributes of one person. :func:`parse_caption` finds
them with a small lexicon of person-description words:

- the **gender** of the subject noun ("lady" -> female; pronouns count too),
- the **hair** (its length and colour words before "hair"),
- each **item** (a garment, bag or hat noun, longest match first, e.g. "shoulder bag"),
  with the colour word written just before it, if any ("red coat"; "a pair of black shoes").

Every attribute gives *keys*: ``gender:female``, ``hair:long``, ``hair-colour:black``,
``item:coat``, ``item:red coat``. :func:`sample_query` writes a short, query-like text about
1..N of the caption's attributes from the caption's own words ("a lady in a red coat",
"a person carrying a rucksack") and returns the keys that text asserts. Another image
matches that query when its caption's keys contain all of them: that is how the phrase
alignment loss (:func:`gadms_cli.gadms.losses.phrase_alignment_loss`) knows that "a woman"
is true of every woman in the batch, not only of the image it was written for.

The lexicon covers the usual words of CUHK-PEDES-style descriptions; a word it does not
know is simply not an attribute (the query then uses the attributes it found).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from typing import Callable, Sequence

import torch

# Canonical colour -> the words that write it.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black",), "white": ("white",), "gray": ("gray", "grey"), "red": ("red",), "blue": ("blue",),
    "green": ("green",), "yellow": ("yellow",), "purple": ("purple",), "pink": ("pink",), "orange": ("orange",),
    "brown": ("brown",), "beige": ("beige",), "navy": ("navy",), "khaki": ("khaki",), "blond": ("blond", "blonde"),
}  # fmt: skip
# Canonical item type -> the nouns that name it (a multi-word noun is matched before its last word).
ITEM_NOUNS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("t-shirt", "t shirt", "tee", "tshirt", "short-sleeved t-shirt"),
    "tank top": ("tank top", "sleeveless top", "vest top"),
    "shirt": ("shirt", "long-sleeved shirt", "button-up shirt", "collared shirt", "blouse"),
    "sweater": ("sweater", "jumper", "pullover", "hoodie"),
    "jacket": ("jacket", "zip-up jacket", "light jacket"),
    "coat": ("coat", "long coat", "overcoat"),
    "dress": ("dress", "knee-length dress", "short-sleeved dress"),
    "trousers": ("trousers", "pants", "slacks"),
    "jeans": ("jeans", "denim jeans"),
    "shorts": ("shorts",),
    "skirt": ("skirt", "knee-length skirt"),
    "shoes": ("shoes", "sneakers", "boots", "sandals"),
    "backpack": ("backpack", "rucksack"),
    "handbag": ("handbag", "purse"),
    "shoulder bag": ("shoulder bag", "messenger bag", "crossbody bag"),
    "cap": ("cap", "baseball cap"),
    "beanie": ("beanie", "knit hat", "woolly hat"),
    "hat": ("hat", "wide-brimmed hat", "sun hat"),
}
PLURAL_ITEMS = frozenset({"trousers", "jeans", "shorts", "shoes"})
BAG_ITEMS = frozenset({"backpack", "handbag", "shoulder bag"})
HAT_ITEMS = frozenset({"cap", "beanie", "hat"})
HAIR_LENGTHS: dict[str, tuple[str, ...]] = {"short": ("short",), "medium": ("shoulder-length", "medium-length"), "long": ("long",)}
GENDER_NOUNS: dict[str, tuple[str, ...]] = {
    "male": ("man", "men", "guy", "gentleman", "boy", "male", "he", "his", "him"),
    "female": ("woman", "women", "lady", "girl", "female", "she", "her"),
}
NEUTRAL_SUBJECTS: tuple[str, ...] = ("person", "pedestrian")
# Gender words that can be a query's subject ("a lady ..."); the others ("male", "she") become "man"/"woman".
_SUBJECT_NOUNS = frozenset({"man", "guy", "gentleman", "boy", "woman", "lady", "girl"})
# How far before a noun a colour word may stand ("a red long coat", "a red and white ... " is not parsed).
COLOUR_REACH = 2

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def _invert(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {word: key for key, words in table.items() for word in words}


_COLOUR_OF = _invert(COLOUR_WORDS)
_ITEM_OF = {tuple(noun.split()): item for item, nouns in ITEM_NOUNS.items() for noun in nouns}
_LONGEST_NOUN = max(len(words) for words in _ITEM_OF)
_LENGTH_OF = _invert(HAIR_LENGTHS)
_GENDER_OF = _invert(GENDER_NOUNS)


def key_vocabulary() -> tuple[str, ...]:
    """Every key :func:`parse_caption` can produce, in a fixed order (the columns of :func:`multi_hot`)."""
    keys = [f"gender:{g}" for g in GENDER_NOUNS] + [f"hair:{length}" for length in HAIR_LENGTHS]
    keys += [f"hair-colour:{c}" for c in COLOUR_WORDS] + [f"item:{item}" for item in ITEM_NOUNS]
    keys += [f"item:{c} {item}" for item in ITEM_NOUNS for c in COLOUR_WORDS]
    return tuple(keys)


KEYS: tuple[str, ...] = key_vocabulary()
KEY_INDEX: dict[str, int] = {key: i for i, key in enumerate(KEYS)}
# The keys an attribute head predicts from an image (method.attribute_weight): the gender, the
# hair length and each item type, without colours (the contrastive losses already learn colours).
HEAD_KEYS: tuple[str, ...] = tuple(k for k in KEYS if k.startswith(("gender:", "hair:")) or k.removeprefix("item:") in ITEM_NOUNS)
_HEAD_COLUMNS = [KEY_INDEX[k] for k in HEAD_KEYS]
# Head columns whose value a caption may leave unsaid: the gender, the hair length.
_HEAD_GROUPS = [torch.tensor([k.startswith(prefix) for k in HEAD_KEYS]) for prefix in ("gender:", "hair:")]


def head_targets(caption_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and known-mask of the attribute head, both ``[B, len(HEAD_KEYS)]``, from ``caption_keys`` ``[B, K]`` bool.

    ``caption_keys`` may be one caption's keys or an identity's (:func:`identity_keys`, the recipe's
    ``method.attribute_targets: identity``). An item the keys do not name counts as absent. The gender and the hair length are
    unknown (masked) when the caption names neither value: "a person in a red coat" says
    nothing about either.
    """
    targets = caption_keys[:, _HEAD_COLUMNS]
    known = torch.ones_like(targets)
    for group in _HEAD_GROUPS:
        group = group.to(targets.device)
        stated = targets[:, group].any(dim=1, keepdim=True)
        known = known & (~group[None, :] | stated)
    return targets, known


def identity_keys(captions: Sequence[str], identities: Sequence[int]) -> list[torch.Tensor]:
    """For each caption, the union of the keys of every caption of its identity: one ``[len(KEYS)]`` bool each.

    Partial captions name a few attributes each ("a man carrying a backpack", "a man in a grey
    coat"); read one at a time, the second says the man has no bag. The union over the identity's
    captions is what the descriptions of that person say together.
    """
    union: dict[int, set[str]] = {}
    for caption, identity in zip(captions, identities):
        union.setdefault(identity, set()).update(caption_keys(parse_caption(caption)))
    tables = {identity: torch.tensor(multi_hot(keys), dtype=torch.bool) for identity, keys in union.items()}
    return [tables[identity] for identity in identities]


@dataclass(frozen=True)
class Attribute:
    """One attribute a caption states, with the words it used.

    ``kind``: ``gender``, ``hair`` or ``item``. ``value``: the canonical gender or item type,
    or the hair length (None: hair named without a length). ``colour``: canonical colour or None.
    ``noun`` / ``colour_word``: the caption's own words ("rucksack", "grey").
    """

    kind: str
    value: str | None
    colour: str | None = None
    noun: str = ""
    colour_word: str = ""

    def keys(self, with_colour: bool = True) -> tuple[str, ...]:
        """The keys a query about this attribute asserts (``with_colour``: the colour is written)."""
        if self.kind == "gender":
            return (f"gender:{self.value}",)
        colour = self.colour if with_colour else None
        if self.kind == "hair":
            return tuple(k for k in ((f"hair:{self.value}" if self.value else None), (f"hair-colour:{colour}" if colour else None)) if k)
        return (f"item:{self.value}",) + ((f"item:{colour} {self.value}",) if colour else ())


def parse_caption(caption: str) -> list[Attribute]:
    """The attributes ``caption`` states, in order of appearance (at most one gender and one hair).

    Example: "A lady with long black hair is wearing a red coat." -> gender female (noun "lady"),
    hair long/black, item coat/red.
    """
    words = _WORD.findall(caption.lower())
    found: list[Attribute] = []
    gender: Attribute | None = None
    hair: Attribute | None = None
    i = 0
    while i < len(words):
        match = next(
            ((n, _ITEM_OF[tuple(words[i : i + n])]) for n in range(_LONGEST_NOUN, 0, -1) if tuple(words[i : i + n]) in _ITEM_OF),
            None,
        )
        if match is not None:
            n, item = match
            colour_word = next((w for w in reversed(words[max(0, i - COLOUR_REACH) : i]) if w in _COLOUR_OF), "")
            found.append(Attribute("item", item, _COLOUR_OF.get(colour_word), " ".join(words[i : i + n]), colour_word))
            i += n
            continue
        word = words[i]
        if word == "hair" and hair is None:
            before = words[max(0, i - 3) : i]
            length = next((_LENGTH_OF[w] for w in reversed(before) if w in _LENGTH_OF), None)
            colour_word = next((w for w in reversed(before) if w in _COLOUR_OF), "")
            hair = Attribute("hair", length, _COLOUR_OF.get(colour_word), "hair", colour_word)
            if length or colour_word:
                found.append(hair)
        elif word in _GENDER_OF and gender is None:
            gender = Attribute("gender", _GENDER_OF[word], noun=word)
            found.append(gender)
        i += 1
    return found


def caption_keys(attributes: list[Attribute]) -> set[str]:
    """All keys the caption asserts (every attribute with its colour)."""
    return {key for attribute in attributes for key in attribute.keys()}


def multi_hot(keys: set[str] | tuple[str, ...]) -> list[bool]:
    """``keys`` as a row over :data:`KEYS` (length ``len(KEYS)``)."""
    row = [False] * len(KEYS)
    for key in keys:
        row[KEY_INDEX[key]] = True
    return row


def _with_article(phrase: str, plural: bool) -> str:
    return phrase if plural else ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _phrase(attribute: Attribute, with_colour: bool, rng: random.Random) -> str:
    """The words of a query about one hair or item attribute: "with long black hair", "carrying a rucksack"."""
    colour = f"{attribute.colour_word} " if with_colour and attribute.colour_word else ""
    if attribute.kind == "hair":
        length = f"{HAIR_LENGTHS[attribute.value][0]} " if attribute.value else ""
        return f"with {length}{colour}hair"
    np = _with_article(f"{colour}{attribute.noun}", attribute.value in PLURAL_ITEMS)
    if attribute.value in BAG_ITEMS:
        verb = rng.choice(("carrying", "with"))
    elif attribute.value in HAT_ITEMS:
        verb = rng.choice(("wearing", "with"))
    else:
        verb = rng.choice(("in", "wearing"))
    return f"{verb} {np}"


def sample_query(attributes: list[Attribute], max_attributes: int, rng: random.Random) -> tuple[str, set[str]] | None:
    """A short query about 1..``max_attributes`` of ``attributes`` and the keys it asserts.

    The gender, when drawn, is the subject ("a lady ..."), else the subject is "a person".
    An item keeps its colour word with probability 1/2 (hair: its colour), so both
    "a person carrying a backpack" and "a person carrying a black backpack" occur.
    Returns None when the caption states no attribute.
    """
    if not attributes:
        return None
    count = rng.randint(1, min(max_attributes, len(attributes)))
    chosen = rng.sample(attributes, count)
    keys: set[str] = set()
    gender = next((a for a in chosen if a.kind == "gender"), None)
    if gender is not None:
        keys |= set(gender.keys())
        noun = gender.noun if gender.noun in _SUBJECT_NOUNS else {"male": "man", "female": "woman"}[gender.value or "male"]
    else:
        noun = rng.choice(NEUTRAL_SUBJECTS)
    parts = []
    for attribute in chosen:
        if attribute.kind == "gender":
            continue
        with_colour = attribute.colour is not None and rng.random() < 0.5
        if attribute.kind == "hair" and attribute.value is None:
            with_colour = True  # "with black hair": the colour is all it says
        keys |= set(attribute.keys(with_colour))
        parts.append(_phrase(attribute, with_colour, rng))
    subject = _with_article(noun, plural=False)
    text = subject if not parts else f"{subject} {' and '.join(parts)}"
    return text, keys


def attribute_query(
    caption: str, max_attributes: int, rng: random.Random, tokenize: Callable[[list[str]], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """One caption's training tensors: ``query_tokens`` [T] int64 (a query from :func:`sample_query`),
    ``query_keys`` and ``caption_keys`` [len(KEYS)] bool.

    A caption in which the lexicon finds no attribute is its own query, with no keys
    (the phrase alignment loss then matches it to its own image only).
    """
    attributes = parse_caption(caption)
    drawn = sample_query(attributes, max_attributes, rng)
    text, keys = drawn if drawn is not None else (caption, set())
    return {
        "query_tokens": tokenize([text])[0],
        "query_keys": torch.tensor(multi_hot(keys), dtype=torch.bool),
        "caption_keys": torch.tensor(multi_hot(caption_keys(attributes)), dtype=torch.bool),
    }
