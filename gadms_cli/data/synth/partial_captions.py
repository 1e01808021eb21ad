"""Partial and query-like SketchPedes captions: a few attributes, in varied order.

Real captions and real queries do not describe the whole outfit: CUHK-PEDES annotators
mention what caught their eye, and a user types "woman in red coat". A ``partial``
caption is one or two sentences about 3-5 attributes ("A woman is carrying a black
backpack. She has long brown hair and is wearing blue jeans."); a ``short`` caption is
a query-like phrase about 2-3 ("man in a green jacket with a cap", sometimes without
articles or capitals: "woman in red coat"). Which attributes, and in which order, come
from the plan (:class:`~gadms_cli.data.synth.caption_words.CaptionPlan`); the gender
counts as one attribute, and a caption that leaves it out says "person".

Some items are named without a colour ("carrying a backpack", "with long hair"; the
plan's ``colourless`` slots). Every colour word that is written still comes right before
its garment noun, so caption noise and the colour tests treat these captions like full ones.
"""

from __future__ import annotations

from gadms_cli.data.synth.caption_words import MENTION_SLOTS, CaptionPlan, CaptionView, RenderedCaption, caption_fields, pick

NEUTRAL_NOUNS: tuple[str, ...] = ("person", "pedestrian", "passer-by")
WORN_SLOTS: tuple[str, ...] = ("top", "bottom", "shoes", "hat")


def mentioned_slots(plan: CaptionPlan, view: CaptionView) -> list[str]:
    """The first ``plan.count`` slots of ``plan.order`` that the person has (bottom, bag and hat are optional)."""
    present = [slot for slot in plan.order if slot == "gender" or getattr(view, slot) is not None]
    return present[: plan.count]


def _join(parts: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _bare(phrase: str) -> str:
    """Drop a leading article: 'a red coat' -> 'red coat' (how people type queries)."""
    for article in ("a ", "an "):
        if phrase.startswith(article):
            return phrase[len(article) :]
    return phrase


def _short(plan: CaptionPlan, fields: dict[str, str], content: list[str], subject: str) -> str:
    c = plan.choices
    bare = c["bare"] < 0.3

    def np(slot: str) -> str:
        phrase = fields[slot].replace("a pair of ", "")
        return _bare(phrase) if bare else phrase

    worn = [slot for slot in content if slot in ("top", "bottom", "shoes")]
    phrases = []
    for slot in content:
        if slot == "hair":
            phrases.append(f"with {np('hair')}")
        elif slot == "bag":
            phrases.append(fields["bag_ing"] if c["bag_verb"] < 0.5 and not bare else f"with {np('bag')}")
        elif slot == "hat":
            phrases.append(f"wearing {np('hat')}" if c["hat_verb"] < 0.5 else f"with {np('hat')}")
        elif slot == worn[0]:  # the clothes in one phrase: "in a red coat and black jeans"
            phrases.append(f"{'in' if c['worn_verb'] < 0.5 else 'wearing'} {_join([np(s) for s in worn])}")
    text = f"{_bare(subject) if bare else subject} {_join(phrases)}"
    if c["casing"] < 0.5:
        return text[0].upper() + text[1:] + "."
    return text


def _partial(plan: CaptionPlan, fields: dict[str, str], content: list[str], subject: str, pronoun: str) -> str:
    clauses: list[str] = []
    worn = [slot for slot in content if slot in WORN_SLOTS]
    for slot in content:
        if slot == "hair":
            clauses.append(f"has {fields['hair']}")
        elif slot == "bag":
            clauses.append(f"is {fields['bag_ing']}")
        elif slot == worn[0]:  # all worn items in one clause, where the first is mentioned
            clauses.append(f"is wearing {_join([fields[s] for s in worn])}")
    subject = subject[0].upper() + subject[1:]
    together = plan.choices["layout"] < 0.4 or len(clauses) == 1
    if together:
        return f"{subject} {_join(clauses)}."
    first, rest = clauses[0], clauses[1:]
    return f"{subject} {first}. {pronoun} {_join(rest)}."


def render_partial(plan: CaptionPlan, view: CaptionView) -> RenderedCaption:
    """Render a ``partial`` or ``short`` plan for ``view``: text, the slots and the mentions."""
    mentions = mentioned_slots(plan, view)
    fields = caption_fields(view, plan, neutral="gender" not in mentions)
    content = [slot for slot in mentions if slot != "gender"]
    if "gender" in mentions:
        subject, pronoun = fields["A_subj"][0].lower() + fields["A_subj"][1:], fields["Pron"]
    else:
        noun = pick(NEUTRAL_NOUNS, plan.choices["neutral_noun"])
        subject, pronoun = f"a {noun}", f"The {noun}"
    text = _short(plan, fields, content, subject) if plan.style == "short" else _partial(plan, fields, content, subject, pronoun)
    ordered = tuple(slot for slot in MENTION_SLOTS if slot in mentions)
    coloured = tuple(slot for slot in content if slot not in plan.colourless)
    return RenderedCaption(text, tuple(content), ordered, coloured)
