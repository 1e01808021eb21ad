"""SketchPedes captions: 24 sentence templates for full captions, and the caption style mix.

A caption is rendered from a :class:`CaptionPlan` (its style, template or attributes
to mention, and one number in [0, 1) per word choice) and a :class:`CaptionView` (the
attributes the caption describes). Keeping the two apart makes caption noise precise:
``caption_noise`` changes the view (say, the top's colour) and renders the same plan
again, so exactly the corrupted words differ from the clean caption.

Styles (see :data:`CAPTION_STYLES`): ``full`` captions come from the templates below
and describe the whole outfit; ``partial`` and ``short`` ones (module
``partial_captions``) mention a few attributes. :class:`CaptionMix` says how often
each is drawn.

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
from dataclasses import dataclass
from functools import lru_cache

from gadms_cli.data.synth.caption_words import (
    CAPTION_STYLES,
    CHOICE_KEYS,
    MENTION_SLOTS,
    CaptionPlan,
    CaptionView,
    RenderedCaption,
    caption_fields,
)
from gadms_cli.data.synth.partial_captions import render_partial
from gadms_cli.errors import GadmsError

__all__ = [
    "CAPTION_STYLES", "CHOICE_KEYS", "MENTION_SLOTS", "TEMPLATES", "CaptionMix", "CaptionPlan", "CaptionView",
    "RenderedCaption", "processed_tokens", "render_caption",
]  # fmt: skip

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

@lru_cache(maxsize=None)
def _placeholders(sentence: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(sentence) if name)


def render_caption(plan: CaptionPlan, view: CaptionView) -> RenderedCaption:
    """Render ``plan`` for ``view``: the caption text and the slots it mentions."""
    if plan.style != "full":
        return render_partial(plan, view)
    fields = caption_fields(view, plan)
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
    mentions = tuple(slot for slot in MENTION_SLOTS if slot == "gender" or slot in slots)
    return RenderedCaption(" ".join(sentences), tuple(slots), mentions, tuple(slots))  # full captions colour every item


_TOKEN = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def processed_tokens(caption: str) -> list[str]:
    """CUHK-PEDES style tokens: lower-cased words, punctuation dropped ("t-shirt" stays one token)."""
    return _TOKEN.findall(caption.lower())


@dataclass(frozen=True)
class CaptionMix:
    """How often each caption style is drawn (fractions of captions, summing to 1)."""

    full: float = 0.5
    partial: float = 0.3
    short: float = 0.2

    @classmethod
    def parse(cls, text: str, flag: str = "--caption-mix") -> "CaptionMix":
        """``"full=0.5,partial=0.3,short=0.2"`` (missing styles are 0); one-line GadmsError naming ``flag``."""
        values = {style: 0.0 for style in CAPTION_STYLES}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, number = part.partition("=")
            if not sep or name.strip() not in values:
                raise GadmsError(f"{flag} {text!r}: write STYLE=FRACTION pairs with STYLE one of {', '.join(CAPTION_STYLES)}, e.g. full=0.5,partial=0.3,short=0.2")
            try:
                values[name.strip()] = float(number)
            except ValueError:
                raise GadmsError(f"{flag} {text!r}: {number!r} is not a number") from None
        mix = cls(**values)
        mix.validate(flag)
        return mix

    def validate(self, flag: str = "--caption-mix") -> None:
        values = self.fractions()
        if any(v < 0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-6:
            raise GadmsError(f"{flag}: the fractions must be >= 0 and sum to 1, got {self.text()}")

    def fractions(self) -> dict[str, float]:
        return {style: getattr(self, style) for style in CAPTION_STYLES}

    def text(self) -> str:
        return ",".join(f"{style}={value:g}" for style, value in self.fractions().items())

    def draw(self, rng: random.Random) -> str:
        """One style, drawn with these fractions (a mix of one style draws nothing from ``rng``, so
        ``full=1`` captions are exactly those of SketchPedes before the mix existed)."""
        used = [style for style, value in self.fractions().items() if value > 0]
        if len(used) == 1:
            return used[0]
        u, total = rng.random(), 0.0
        for style, value in self.fractions().items():
            total += value
            if u < total:
                return style
        return next(style for style, value in reversed(self.fractions().items()) if value > 0)
