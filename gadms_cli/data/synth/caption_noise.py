"""Corrupting captions the way web captions go wrong, and recording how.

Four kinds of corruption, one or two per corrupted caption:

- ``wrong_colour``: one mentioned item gets a different colour word;
- ``wrong_type``: one mentioned item becomes another type (jeans -> skirt,
  backpack -> handbag, short hair -> long hair, ...);
- ``irrelevant_phrase``: a sentence that says nothing about the person
  (photo credits, weather, shop spam) is inserted;
- ``dropped_words``: 15-35 % of the words are deleted.

Colour and type errors change the :class:`CaptionView` and re-render the same
:class:`CaptionPlan`, so only the corrupted words differ from the clean
caption. Every edit is recorded so an ablation can tell corrupted captions
(and the kind of corruption) apart.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from gadms_cli.data.synth.attributes import BAG_TYPES, BOTTOM_TYPES, COLOURS, HAIR_COLOUR_WEIGHTS, HAIR_LENGTHS, HAT_TYPES, TOP_TYPES, Garment
from gadms_cli.data.synth.captions import CaptionPlan, CaptionView, RenderedCaption, render_caption

NOISE_KINDS: tuple[str, ...] = ("wrong_colour", "wrong_type", "irrelevant_phrase", "dropped_words")
_KIND_WEIGHTS = (0.35, 0.25, 0.2, 0.2)

IRRELEVANT_PHRASES: tuple[str, ...] = (
    "The photo was taken on a sunny afternoon.",
    "Stock photo, royalty free.",
    "Image may contain: one person, outdoor.",
    "There is a car parked in the background.",
    "Shot with a telephoto lens.",
    "Street style inspiration for this season.",
    "Click here to see more photos.",
    "The building behind looks very old.",
    "A beautiful day in the city.",
    "Best quality, high resolution.",
    "#ootd #streetstyle #fashion",
    "It looks like it might rain later.",
    "Captured by a surveillance camera.",
    "Free shipping on all orders.",
    "The sky is clear and blue.",
    "Several trees line the road.",
)


@dataclass(frozen=True)
class CaptionRecord:
    """A caption as written to the dataset, with its clean version and the edits made.

    ``edits``: one dict per corruption, e.g. ``{"kind": "wrong_colour", "slot": "top",
    "true": "red", "written": "blue"}``; empty when the caption is clean. ``style``:
    full, partial or short; ``mentions``: the attribute slots the caption names
    (gender, hair, top, bottom, shoes, bag, hat); ``colours_named``: the slots whose colour
    word it writes.
    """

    text: str
    clean: str
    edits: tuple[dict, ...] = ()
    style: str = "full"
    mentions: tuple[str, ...] = ()
    colours_named: tuple[str, ...] = ()

    @property
    def corrupted(self) -> bool:
        return bool(self.edits)

    def to_json(self) -> dict:
        return {
            "style": self.style,
            "mentions": list(self.mentions),
            "colours_named": list(self.colours_named),
            "corrupted": self.corrupted,
            "kinds": [edit["kind"] for edit in self.edits],
            "edits": list(self.edits),
            "clean": self.clean,
        }


def _other_types(slot: str, current: str) -> list[str]:
    if slot == "top":  # a dress has no separate bottom, so only a dress may turn into another top
        return [t for t in TOP_TYPES if t != current and (current == "dress" or t != "dress")]
    pool = {"bottom": BOTTOM_TYPES, "bag": BAG_TYPES, "hat": HAT_TYPES, "hair": HAIR_LENGTHS}[slot]
    return [t for t in pool if t != current]


def _wrong_colour(view: CaptionView, slots: tuple[str, ...], rng: random.Random) -> tuple[CaptionView, dict]:
    slot = rng.choice(slots)
    garment: Garment = getattr(view, slot)
    pool = HAIR_COLOUR_WEIGHTS if slot == "hair" else COLOURS
    written = rng.choice([c for c in pool if c != garment.colour])
    edit = {"kind": "wrong_colour", "slot": slot, "true": garment.colour, "written": written}
    return view.with_slot(slot, Garment(garment.type, written)), edit


def _wrong_type(view: CaptionView, slots: tuple[str, ...], rng: random.Random) -> tuple[CaptionView, dict]:
    slot = rng.choice([s for s in slots if s != "shoes"])
    garment: Garment = getattr(view, slot)
    written = rng.choice(_other_types(slot, garment.type))
    edit = {"kind": "wrong_type", "slot": slot, "true": garment.type, "written": written}
    return view.with_slot(slot, Garment(written, garment.colour)), edit


def _insert_irrelevant(text: str, rng: random.Random) -> tuple[str, dict]:
    phrase = rng.choice(IRRELEVANT_PHRASES)
    sentences = re.split(r"(?<=\.) ", text)
    sentences.insert(rng.randint(0, len(sentences)), phrase)
    return " ".join(sentences), {"kind": "irrelevant_phrase", "phrase": phrase}


def _drop_words(text: str, rng: random.Random) -> tuple[str, dict]:
    words = text.split(" ")
    count = max(1, round(len(words) * rng.uniform(0.15, 0.35)))
    dropped = set(rng.sample(range(len(words)), min(count, len(words) - 1)))
    kept = [w for i, w in enumerate(words) if i not in dropped]
    result = " ".join(kept)
    result = result[:1].upper() + result[1:]
    return result, {"kind": "dropped_words", "words": [words[i] for i in sorted(dropped)]}


def corrupt_caption(plan: CaptionPlan, view: CaptionView, clean: RenderedCaption, rng: random.Random) -> CaptionRecord:
    """A corrupted version of ``clean`` (rendered from ``plan`` and ``view``) with 1 or 2 kinds of noise."""
    item_slots = tuple(s for s in clean.slots if getattr(view, s) is not None)
    colour_slots = tuple(s for s in clean.colour_slots if getattr(view, s) is not None)
    # A short caption may name only its shoes (one type) or no colour at all.
    feasible = {"wrong_colour": bool(colour_slots), "wrong_type": any(s != "shoes" for s in item_slots)}
    possible = [kind for kind in NOISE_KINDS if feasible.get(kind, True)]
    weights = [_KIND_WEIGHTS[NOISE_KINDS.index(kind)] for kind in possible]
    count = 1 if rng.random() < 0.6 else 2
    kinds: list[str] = []
    while len(kinds) < count:
        kind = rng.choices(possible, weights=weights, k=1)[0]
        if kind not in kinds:
            kinds.append(kind)
    kinds.sort(key=NOISE_KINDS.index)  # attribute edits first, then text edits
    edits: list[dict] = []
    noisy_view = view
    for kind in kinds:
        if kind == "wrong_colour":
            noisy_view, edit = _wrong_colour(noisy_view, colour_slots, rng)
            edits.append(edit)
        elif kind == "wrong_type":
            noisy_view, edit = _wrong_type(noisy_view, item_slots, rng)
            edits.append(edit)
    text = render_caption(plan, noisy_view).text if noisy_view is not view else clean.text
    for kind in kinds:
        if kind == "irrelevant_phrase":
            text, edit = _insert_irrelevant(text, rng)
            edits.append(edit)
        elif kind == "dropped_words":
            text, edit = _drop_words(text, rng)
            edits.append(edit)
    return CaptionRecord(text, clean.text, tuple(edits))
