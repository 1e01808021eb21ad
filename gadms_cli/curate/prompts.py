"""The prompts sent to the captioning model.

* :func:`caption_prompt`: one image, one randomly drawn template (in-context learning, as in the
  paper), and the instruction to describe only what is visible.
* :func:`template_prompt`: one existing caption (text only), to be rewritten into a template
  (``gadms curate templates``).

A prompt is a (system, user) text pair; the captioner backends add the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from gadms_cli.curate.templates import PLACEHOLDERS, placeholders_in

CAPTION_SYSTEM = "You write precise descriptions of people for a text-based person search dataset."
TEMPLATE_SYSTEM = "You turn descriptions of people into reusable caption templates."


@dataclass(frozen=True)
class Prompt:
    """A system message and a user message (plain text)."""

    system: str
    user: str


def _legend(names: list[str]) -> str:
    return "\n".join(f"- [{name}]: {PLACEHOLDERS[name]}" for name in dict.fromkeys(names))


def caption_prompt(template: str) -> Prompt:
    """Ask for one caption of the person in the attached image, shaped like ``template``."""
    user = (
        "Describe the person in this image in English.\n"
        f"Follow the structure of this template:\n{template}\n"
        "Replace each placeholder in square brackets with what you see:\n"
        f"{_legend(placeholders_in(template))}\n"
        "Rules:\n"
        "- Describe only what is clearly visible. When an item of the template is not visible (no bag, no hat), "
        "leave that part out and keep the sentences grammatical; never guess.\n"
        "- Name the colour and the kind of each garment precisely.\n"
        "- Do not describe the background, the image quality or the camera.\n"
        "- Keep no square brackets or placeholder names in your answer.\n"
        "- Reply with the description only."
    )
    return Prompt(CAPTION_SYSTEM, user)


def template_prompt(caption: str) -> Prompt:
    """Ask for ``caption`` rewritten as a template with the known placeholders."""
    user = (
        "Rewrite the description below into a caption template. Keep its sentence structure and connecting words, "
        "and replace every phrase about a specific attribute with one of these placeholders:\n"
        f"{_legend(list(PLACEHOLDERS))}\n"
        "Use [person] for the person and only the placeholders above, in square brackets. "
        "Example: 'A tall man with short grey hair wears a navy coat and carries a black umbrella.' becomes "
        "'[person] with [hair] wears [outerwear] and carries [belongings].'\n"
        "Reply with the template only, on one line.\n"
        f"Description: {caption.strip()}"
    )
    return Prompt(TEMPLATE_SYSTEM, user)
