"""SketchPedes captions: 24 sentence templates, synonyms, and CUHK-PEDES style tokens.

A caption is rendered from a :class:`CaptionPlan` (which template, and one
number in [0, 1) per word choice) and a :class:`CaptionView` (the attributes
the caption describes). Keeping the two apart makes caption noise precise:
``caption_noise`` changes the view (say, the top's colour) and renders the
same plan again, so exactly the corrupted words differ from the clean caption.

Conventions every template keeps (tests and docs rely on them): a colour word
always comes right before its garment noun, or before it with at most one
modifier in between ("a red t-shirt", "a blue knit hat", "long black hair");
the person's gender noun is always in the first sentence.

Templates are lists of sentences; each sentence is a tuple of alternatives,
the first whose placeholders are all available is used (``{bottom}`` is not
available for a dress, ``{bag...}``/``{hat...}`` not for a person without
one), and a sentence with no usable alternative is left out.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, replace
from functools import lru_cache

from gadms_cli.data.synth.attributes import Garment, Identity

SUBJECT_NOUNS = {
    "male": ("man", "young man", "guy", "gentleman", "male pedestrian", "boy"),
    "female": ("woman", "young woman", "lady", "girl", "female pedestrian", "woman"),
}
PRONOUNS = {"male": ("he", "his", "him"), "female": ("she", "her", "her")}

TYPE_NOUNS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("t-shirt", "tee", "short-sleeved t-shirt"),
    "tank top": ("tank top", "sleeveless top", "vest top"),
    "shirt": ("shirt", "long-sleeved shirt", "button-up shirt", "collared shirt"),
    "sweater": ("sweater", "jumper", "pullover"),
    "jacket": ("jacket", "zip-up jacket", "light jacket"),
    "coat": ("coat", "long coat", "overcoat"),
    "dress": ("dress", "knee-length dress", "short-sleeved dress"),
    "trousers": ("trousers", "pants", "slacks"),
    "jeans": ("jeans", "denim jeans"),
    "shorts": ("shorts",),
    "skirt": ("skirt", "knee-length skirt"),
    "shoes": ("shoes", "sneakers"),
    "backpack": ("backpack", "rucksack"),
    "handbag": ("handbag", "purse"),
    "shoulder bag": ("shoulder bag", "messenger bag", "crossbody bag"),
    "cap": ("cap", "baseball cap"),
    "beanie": ("beanie", "knit hat", "woolly hat"),
    "hat": ("hat", "wide-brimmed hat", "sun hat"),
}
PLURAL_TYPES = frozenset({"trousers", "jeans", "shorts", "shoes"})
HAIR_LENGTH_WORDS = {"short": ("short",), "medium": ("shoulder-length", "medium-length"), "long": ("long",)}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {"gray": ("gray", "grey")}  # other colours use their own name
HAIR_COLOUR_WORDS: dict[str, tuple[str, ...]] = {"yellow": ("blond", "blonde"), "gray": ("gray", "grey")}

# How a bag is carried (present participle phrase) and where it sits ("with ..." phrase).
_BAG_ING = {
    "backpack": ("carrying {np}", "wearing {np}", "carrying {np} on {poss} back"),
    "handbag": ("carrying {np}", "holding {np}", "carrying {np} in {poss} hand"),
    "shoulder bag": ("carrying {np}", "carrying {np} over {poss} shoulder", "wearing {np} across {poss} body"),
}
_BAG_WITH = {
    "backpack": ("{np} on {poss} back", "{np}"),
    "handbag": ("{np} in {poss} hand", "{np}"),
    "shoulder bag": ("{np} over {poss} shoulder", "{np}"),
}

# Each template: sentences; each sentence: alternatives, first usable one wins.
TEMPLATES: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("{A_subj} with {hair} is wearing {clothes}.",), ("{Pron} is {bag_ing}.",), ("{Pron} also has {hat} on {poss} head.",)),
    (("{A_subj} wearing {hat}, {clothes}.", "{A_subj} wearing {clothes}."), ("{Pron} has {hair} and is {bag_ing}.", "{Pron} has {hair}.")),
    (("The {noun} has {hair} and wears {top}.",), ("{Pron} is also wearing {bottom} and {shoes}.", "{Pron} is also wearing {shoes}."), ("{Pron} carries {bag}.",), ("{Pron} wears {hat}.",)),
    (("{A_subj} in {outfit} is walking down the street.",), ("{Pron} has {hair} and is wearing {shoes}.",), ("{Pron} has {bag_with}.",), ("{Pron} is wearing {hat}.",)),
    (("This {noun} is wearing {top}, {bottom} and {shoes}.", "This {noun} is wearing {top} and {shoes}."), ("{Pron} has {hair}{hat_and}.",), ("{Pron} is {bag_ing}.", "{Pron} is not carrying a bag.")),
    (("There is {a_subj} with {hair} who is wearing {outfit}.",), ("On {poss} feet are {shoes}.",), ("{Pron} is {bag_ing}.",), ("{Pron} has {hat} on.",)),
    (("{A_subj} who is {bag_ing} walks forward.", "{A_subj} walks forward."), ("{Pron} is dressed in {clothes}.",), ("{Pron} has {hair}.",), ("{Pron} wears {hat}.",)),
    (("Wearing {outfit}, {a_subj} with {hair} is walking.",), ("{Pron} has on {shoes} and carries {bag}.", "{Pron} has on {shoes}."), ("{Pron} also wears {hat}.",)),
    (("{A_subj} has {hair} and is wearing {hat}.", "{A_subj} has {hair}."), ("{Pron} is wearing {top} with {bottom}.", "{Pron} is wearing {top}."), ("{Pron} has {shoes} on {poss} feet.",), ("{Pron} has {bag_with}.",)),
    (("In the picture, {a_subj} is wearing {clothes}.",), ("{Pron} has {hair} and {bag_with}.", "{Pron} has {hair}."), ("{Pron} is also wearing {hat}.",)),
    (("{A_subj} dressed in {outfit}.",), ("{Pron} has {hair} and is wearing {shoes}.",), ("{Pron} is {bag_ing} and wearing {hat}.", "{Pron} is {bag_ing}.", "{Pron} is wearing {hat}.")),
    (("The {noun} is wearing {top}.",), ("{Pron} is also wearing {bottom}.",), ("{Pron} has {hair}, {shoes} and {bag_with}.", "{Pron} has {hair} and {shoes}."), ("{Pron} wears {hat}.",)),
    (("{A_subj} with {hair} walks in {clothes}.",), ("{Pron} is {bag_ing}.",), ("On {poss} head is {hat}.",)),
    (("{A_subj} is walking while {bag_ing}.", "{A_subj} is walking."), ("{Pron} is wearing {top} and {bottom}.", "{Pron} is wearing {top}."), ("{Pron} has {hair} and {shoes}.",), ("{Pron} has {hat} on {poss} head.",)),
    (("{A_subj} wearing {top} and {bottom} stands on the street.", "{A_subj} wearing {top} stands on the street."), ("{Pron} has {hair} and wears {shoes}.",), ("{Pron} is {bag_ing}.",), ("{Pron} is wearing {hat}.",)),
    (("This is {a_subj} with {hair}.",), ("{Pron} is wearing {clothes}.",), ("{Pron} has {bag_with}.",), ("{Pron} also has {hat}.",)),
    (("{A_subj} with {hat} and {hair} is wearing {outfit}.", "{A_subj} with {hair} is wearing {outfit}."), ("{Pron} is {bag_ing}.",), ("{Pron} has on {shoes}.",)),
    (("{A_subj} is seen wearing {outfit}.",), ("{Pron} has {hair} and {shoes}.",), ("{Pron} carries {bag} and wears {hat}.", "{Pron} carries {bag}.", "{Pron} wears {hat}.")),
    (("{A_subj} with {hair} is dressed in {top} and {bottom}.", "{A_subj} with {hair} is dressed in {top}."), ("{Pron} is {bag_ing}.", "{Pron} is not carrying anything."), ("{Pron} is wearing {hat} and {shoes}.", "{Pron} is wearing {shoes}.")),
    (("The {noun} in the image wears {outfit}.",), ("{Poss} {hair} is neat and {pron} wears {shoes}.",), ("{Pron} has {bag_with}.",), ("{Pron} has {hat} on.",)),
    (("{A_subj} walks with {bag_with}.", "{A_subj} walks by."), ("{Pron} has {hair} and is wearing {clothes}.",), ("{Pron} wears {hat}.",)),
    (("{A_subj} who has {hair} is wearing {top}.",), ("{Pron} has {bottom} and {shoes} on.", "{Pron} has {shoes} on."), ("{Pron} is {bag_ing}.",), ("{Pron} is also wearing {hat}.",)),
    (("A picture of {a_subj} wearing {outfit}, with {shoes}.",), ("{Pron} has {hair}{hat_and}.",), ("{Pron} is {bag_ing}.",)),
    (("{A_subj} in {top} and {bottom} with {shoes}.", "{A_subj} in {top} with {shoes}."), ("{Pron} has {hair}.",), ("{Pron} is {bag_ing} and {hat_ing}.", "{Pron} is {bag_ing}.", "{Pron} is {hat_ing}.")),
)

# Which attribute slots a placeholder talks about.
_FIELD_SLOTS: dict[str, tuple[str, ...]] = {
    "hair": ("hair",),
    "top": ("top",),
    "bottom": ("bottom",),
    "outfit": ("top", "bottom"),
    "clothes": ("top", "bottom", "shoes"),
    "shoes": ("shoes",),
    "bag": ("bag",),
    "bag_ing": ("bag",),
    "bag_with": ("bag",),
    "hat": ("hat",),
    "hat_ing": ("hat",),
    "hat_and": ("hat",),
}

# Word choices a plan fixes (one number in [0, 1) each).
CHOICE_KEYS: tuple[str, ...] = (
    "subject", "article", "hair_length", "hair_colour", "top_noun", "top_colour", "bottom_noun", "bottom_colour",
    "bottom_pair", "shoes_noun", "shoes_colour", "shoes_pair", "bag_noun", "bag_colour", "bag_phrase",
    "hat_noun", "hat_colour",
)  # fmt: skip


@dataclass(frozen=True)
class CaptionView:
    """What a caption says about a person: normally the identity's true attributes."""

    gender: str
    hair: Garment
    top: Garment
    bottom: Garment | None
    shoes: Garment
    hat: Garment | None
    bag: Garment | None

    @classmethod
    def of(cls, identity: Identity) -> "CaptionView":
        return cls(identity.gender, identity.hair, identity.top, identity.bottom, identity.shoes, identity.hat, identity.bag)

    def with_slot(self, slot: str, garment: Garment) -> "CaptionView":
        return replace(self, **{slot: garment})


@dataclass(frozen=True)
class CaptionPlan:
    """A template index and one uniform number per word choice (see CHOICE_KEYS)."""

    template: int
    choices: dict[str, float]

    @classmethod
    def sample(cls, template: int, rng: random.Random) -> "CaptionPlan":
        return cls(template, {key: rng.random() for key in CHOICE_KEYS})


@dataclass(frozen=True)
class RenderedCaption:
    """Caption text and the attribute slots it mentions."""

    text: str
    slots: tuple[str, ...]


def _pick(options: tuple[str, ...], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _a(phrase: str) -> str:
    """Prefix the right indefinite article."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def colour_word(colour: str, u: float, hair: bool = False) -> str:
    """The word a caption uses for palette colour ``colour`` (synonyms picked by ``u``)."""
    table = HAIR_COLOUR_WORDS if hair else COLOUR_WORDS
    return _pick(table.get(colour, (colour,)), u)


def _garment_np(garment: Garment, plan: CaptionPlan, slot: str) -> str:
    """Noun phrase with article, e.g. "a red t-shirt", "blue jeans", "a pair of black shoes"."""
    c = plan.choices
    noun = _pick(TYPE_NOUNS[garment.type], c[f"{slot}_noun"])
    phrase = f"{colour_word(garment.colour, c[f'{slot}_colour'])} {noun}"
    if garment.type in PLURAL_TYPES:
        return f"a pair of {phrase}" if c.get(f"{slot}_pair", 1.0) < 0.35 else phrase
    return _a(phrase)


def _fields(view: CaptionView, plan: CaptionPlan) -> dict[str, str]:
    """Every placeholder value available for ``view`` (missing slots are simply absent)."""
    c = plan.choices
    he, his, _him = PRONOUNS[view.gender]
    noun = _pick(SUBJECT_NOUNS[view.gender], c["subject"])
    a_subj = _a(noun)
    the_subj = a_subj if c["article"] < 0.75 else f"the {noun}"
    f = {
        "noun": noun,
        "a_subj": a_subj,
        "A_subj": the_subj[0].upper() + the_subj[1:],
        "Pron": he.capitalize(),
        "pron": he,
        "Poss": his.capitalize(),
        "poss": his,
        "hair": f"{_pick(HAIR_LENGTH_WORDS[view.hair.type], c['hair_length'])} {colour_word(view.hair.colour, c['hair_colour'], hair=True)} hair",
        "top": _garment_np(view.top, plan, "top"),
        "shoes": _garment_np(view.shoes, plan, "shoes"),
    }
    if view.bottom is not None:
        f["bottom"] = _garment_np(view.bottom, plan, "bottom")
        f["outfit"] = f"{f['top']} and {f['bottom']}"
        f["clothes"] = f"{f['top']}, {f['bottom']} and {f['shoes']}"
    else:
        f["outfit"] = f["top"]
        f["clothes"] = f"{f['top']} and {f['shoes']}"
    if view.bag is not None:
        f["bag"] = _garment_np(view.bag, plan, "bag")
        f["bag_ing"] = _pick(_BAG_ING[view.bag.type], c["bag_phrase"]).format(np=f["bag"], poss=his)
        f["bag_with"] = _pick(_BAG_WITH[view.bag.type], c["bag_phrase"]).format(np=f["bag"], poss=his)
    if view.hat is not None:
        f["hat"] = _garment_np(view.hat, plan, "hat")
        f["hat_ing"] = f"wearing {f['hat']}"
        f["hat_and"] = f" and is wearing {f['hat']}"
    else:
        f["hat_and"] = ""
    return f


@lru_cache(maxsize=None)
def _placeholders(sentence: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(sentence) if name)


def render_caption(plan: CaptionPlan, view: CaptionView) -> RenderedCaption:
    """Render ``plan`` for ``view``: the caption text and the slots it mentions."""
    fields = _fields(view, plan)
    sentences: list[str] = []
    slots: list[str] = []
    for alternatives in TEMPLATES[plan.template]:
        for sentence in alternatives:
            names = _placeholders(sentence)
            if all(name in fields for name in names):
                sentences.append(sentence.format(**fields))
                for name in names:
                    for slot in _FIELD_SLOTS.get(name, ()):
                        if name == "hat_and" and view.hat is None:
                            continue
                        if slot == "bottom" and view.bottom is None:
                            continue
                        if slot not in slots:
                            slots.append(slot)
                break
    return RenderedCaption(" ".join(sentences), tuple(slots))


_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def processed_tokens(caption: str) -> list[str]:
    """CUHK-PEDES style tokens: lower-cased words, punctuation dropped ("t-shirt" stays one token)."""
    return _TOKEN.findall(caption.lower())
