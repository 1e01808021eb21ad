"""The words of SketchPedes captions: nouns, synonyms, colour words, and what a caption describes.

Shared by the two caption renderers: the sentence templates of full captions
(:mod:`captions`) and the partial and query-like captions (:mod:`partial_captions`).
A caption is rendered from a :class:`CaptionPlan` (the style, the template or the
attributes to mention, and one number in [0, 1) per word choice) and a
:class:`CaptionView` (the attributes the caption describes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

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
BAG_ING = {
    "backpack": ("carrying {np}", "wearing {np}", "carrying {np} on {poss} back"),
    "handbag": ("carrying {np}", "holding {np}", "carrying {np} in {poss} hand"),
    "shoulder bag": ("carrying {np}", "carrying {np} over {poss} shoulder", "wearing {np} across {poss} body"),
}
BAG_WITH = {
    "backpack": ("{np} on {poss} back", "{np}"),
    "handbag": ("{np} in {poss} hand", "{np}"),
    "shoulder bag": ("{np} over {poss} shoulder", "{np}"),
}

# Word choices a plan fixes (one number in [0, 1) each).
CHOICE_KEYS: tuple[str, ...] = (
    "subject", "article", "hair_length", "hair_colour", "top_noun", "top_colour", "bottom_noun", "bottom_colour",
    "bottom_pair", "shoes_noun", "shoes_colour", "shoes_pair", "bag_noun", "bag_colour", "bag_phrase",
    "hat_noun", "hat_colour",
)  # fmt: skip
# Word choices only partial and short captions make (drawn after CHOICE_KEYS, for those styles only,
# so full captions draw exactly what they drew before the styles existed).
PARTIAL_CHOICE_KEYS: tuple[str, ...] = ("neutral_noun", "worn_verb", "bag_verb", "hat_verb", "layout", "bare", "casing")


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


CAPTION_STYLES: tuple[str, ...] = ("full", "partial", "short")
# The attribute slots a caption can mention ("gender": the subject noun says man or woman).
MENTION_SLOTS: tuple[str, ...] = ("gender", "hair", "top", "bottom", "shoes", "bag", "hat")
# How often each slot comes early in a partial caption's order: people describe the gender and the
# top first, shoes last (weighted random order, Efraimidis-Spirakis keys u ** (1 / w)).
MENTION_WEIGHTS: dict[str, float] = {"gender": 3.0, "top": 3.0, "bottom": 2.0, "bag": 2.0, "hair": 2.0, "hat": 1.5, "shoes": 1.0}
# How many slots (gender included) each style mentions, inclusive range.
MENTION_COUNTS: dict[str, tuple[int, int]] = {"partial": (3, 5), "short": (2, 3)}
# How often a partial or short caption names an item without its colour ("carrying a backpack",
# "with long hair"), as people do when the colour is not what they noticed.
COLOURLESS_SHARE = 0.4


@dataclass(frozen=True)
class CaptionPlan:
    """How to write one caption, independent of what it describes.

    ``style``: ``full`` (sentence template ``template``, describes the whole outfit),
    ``partial`` (one or two sentences about ``count`` attributes) or ``short`` (a
    query-like phrase about ``count`` attributes). ``order``: the slots in the order
    a partial caption considers them (the first ``count`` the person has are
    mentioned). ``colourless``: slots named without their colour. ``choices``: one
    uniform number per word choice (see CHOICE_KEYS).
    """

    template: int
    choices: dict[str, float]
    style: str = "full"
    order: tuple[str, ...] = MENTION_SLOTS
    count: int = len(MENTION_SLOTS)
    colourless: tuple[str, ...] = ()

    @classmethod
    def sample(cls, template: int, rng: random.Random, style: str = "full") -> "CaptionPlan":
        choices = {key: rng.random() for key in CHOICE_KEYS}
        if style == "full":
            return cls(template, choices)
        choices |= {key: rng.random() for key in PARTIAL_CHOICE_KEYS}
        low, high = MENTION_COUNTS[style]
        order = tuple(sorted(MENTION_SLOTS, key=lambda slot: -rng.random() ** (1.0 / MENTION_WEIGHTS[slot])))
        colourless = tuple(slot for slot in MENTION_SLOTS[1:] if slot != "shoes" and rng.random() < COLOURLESS_SHARE)
        return cls(template, choices, style, order, rng.randint(low, high), colourless)


@dataclass(frozen=True)
class RenderedCaption:
    """Caption text and the attribute slots it mentions.

    ``slots``: the items it names (hair, top, bottom, shoes, bag, hat); ``mentions``: those
    plus "gender" when the subject noun names it; ``colour_slots``: the items whose colour
    word it writes (caption noise can only change a colour that is written).
    """

    text: str
    slots: tuple[str, ...]
    mentions: tuple[str, ...]
    colour_slots: tuple[str, ...]


def pick(options: tuple[str, ...], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def with_article(phrase: str) -> str:
    """Prefix the right indefinite article."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def colour_word(colour: str, u: float, hair: bool = False) -> str:
    """The word a caption uses for palette colour ``colour`` (synonyms picked by ``u``)."""
    table = HAIR_COLOUR_WORDS if hair else COLOUR_WORDS
    return pick(table.get(colour, (colour,)), u)


def garment_np(garment: Garment, plan: CaptionPlan, slot: str) -> str:
    """Noun phrase with article, e.g. "a red t-shirt", "blue jeans", "a pair of black shoes" ("a backpack" without colour)."""
    c = plan.choices
    noun = pick(TYPE_NOUNS[garment.type], c[f"{slot}_noun"])
    phrase = noun if slot in plan.colourless else f"{colour_word(garment.colour, c[f'{slot}_colour'])} {noun}"
    if garment.type in PLURAL_TYPES:
        return f"a pair of {phrase}" if c.get(f"{slot}_pair", 1.0) < 0.35 else phrase
    return with_article(phrase)


def caption_fields(view: CaptionView, plan: CaptionPlan, neutral: bool = False) -> dict[str, str]:
    """Every placeholder value available for ``view`` (missing slots are simply absent).

    ``neutral``: the caption does not say the gender, so possessives are "their" ("on their back")."""
    c = plan.choices
    he, his, _him = PRONOUNS[view.gender]
    if neutral:
        his = "their"
    noun = pick(SUBJECT_NOUNS[view.gender], c["subject"])
    a_subj = with_article(noun)
    the_subj = a_subj if c["article"] < 0.75 else f"the {noun}"
    f = {
        "noun": noun,
        "a_subj": a_subj,
        "A_subj": the_subj[0].upper() + the_subj[1:],
        "Pron": he.capitalize(),
        "pron": he,
        "Poss": his.capitalize(),
        "poss": his,
        "hair": f"{pick(HAIR_LENGTH_WORDS[view.hair.type], c['hair_length'])} hair" if "hair" in plan.colourless
        else f"{pick(HAIR_LENGTH_WORDS[view.hair.type], c['hair_length'])} {colour_word(view.hair.colour, c['hair_colour'], hair=True)} hair",
        "top": garment_np(view.top, plan, "top"),
        "shoes": garment_np(view.shoes, plan, "shoes"),
    }
    if view.bottom is not None:
        f["bottom"] = garment_np(view.bottom, plan, "bottom")
        f["outfit"] = f"{f['top']} and {f['bottom']}"
        f["clothes"] = f"{f['top']}, {f['bottom']} and {f['shoes']}"
    else:
        f["outfit"] = f["top"]
        f["clothes"] = f"{f['top']} and {f['shoes']}"
    if view.bag is not None:
        f["bag"] = garment_np(view.bag, plan, "bag")
        f["bag_ing"] = pick(BAG_ING[view.bag.type], c["bag_phrase"]).format(np=f["bag"], poss=his)
        f["bag_with"] = pick(BAG_WITH[view.bag.type], c["bag_phrase"]).format(np=f["bag"], poss=his)
    if view.hat is not None:
        f["hat"] = garment_np(view.hat, plan, "hat")
        f["hat_ing"] = f"wearing {f['hat']}"
        f["hat_and"] = f" and is wearing {f['hat']}"
    else:
        f["hat_and"] = ""
    return f


