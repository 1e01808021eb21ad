"""Caption templates: sentences with attribute placeholders that the captioner fills from the image.

The paper's captioner gets one randomly drawn template in its prompt (in-context learning) so that
its captions vary in structure the way human-written benchmark captions do. gadms ships a bank of
215 templates written for this project (``caption_templates.txt`` beside this file); ``--templates
FILE`` uses another bank in the same format, for example one made by ``gadms curate templates``.

File format: UTF-8 text, one template per line, ``#`` starts a comment line, blank lines are
ignored. A template's id is its position among the template lines (0-based), so the output's
``template_id1``/``template_id2`` columns point into the bank the run used (its SHA-256 is in the
manifest).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from gadms_cli.errors import GadmsError

# What each placeholder stands for; the prompt shows these descriptions to the captioner.
PLACEHOLDERS: dict[str, str] = {
    "person": "who the person is, e.g. 'a young woman', 'an elderly man', 'a boy'",
    "pronoun": "he, she or they, matching the person",
    "hair": "hair length, colour and style",
    "headwear": "a hat, cap, hood or helmet",
    "top": "the upper-body garment with its colour (shirt, T-shirt, sweater, blouse, dress)",
    "outerwear": "a jacket, coat or vest worn over the top, with its colour",
    "bottom": "trousers, jeans, shorts or a skirt with its colour",
    "shoes": "the footwear with its colour",
    "belongings": "bags and objects the person carries or holds",
    "accessories": "glasses, a scarf, a watch, a mask or jewellery",
    "pose": "what the person is doing or how they stand",
}
PLACEHOLDER = re.compile(r"\[([A-Za-z_ -]+)\]")
DEFAULT_BANK = Path(__file__).with_name("caption_templates.txt")
MIN_TEMPLATE_PLACEHOLDERS = 3


def placeholders_in(text: str) -> list[str]:
    """The placeholder names in ``text`` in order of appearance (``"[top] and [bottom]"`` -> ``["top", "bottom"]``)."""
    return [match.group(1) for match in PLACEHOLDER.finditer(text)]


TEMPLATE_PROBLEMS: tuple[str, ...] = (
    "empty", "multi_line", "unknown_placeholder", "no_person_placeholder", "few_placeholders", "stray_bracket",
)  # fmt: skip


def template_problem(text: str) -> str | None:
    """Why ``text`` is not a usable template (a name from ``TEMPLATE_PROBLEMS``), or None.

    A template is one line with at least ``MIN_TEMPLATE_PLACEHOLDERS`` placeholders, all of
    them known names, one of them ``[person]``, and no other brackets.
    """
    if not text.strip():
        return "empty"
    if "\n" in text.strip():
        return "multi_line"
    names = placeholders_in(text)
    if any(name not in PLACEHOLDERS for name in names):
        return "unknown_placeholder"
    if "person" not in names:
        return "no_person_placeholder"
    if len(names) < MIN_TEMPLATE_PLACEHOLDERS:
        return "few_placeholders"
    if re.search(r"[\[\]{}<>]", PLACEHOLDER.sub("", text)):
        return "stray_bracket"
    return None


def _problem_message(text: str, problem: str) -> str:
    if problem == "unknown_placeholder":
        unknown = sorted({name for name in placeholders_in(text) if name not in PLACEHOLDERS})
        return f"unknown placeholder(s) {', '.join('[' + name + ']' for name in unknown)}; known: {', '.join(PLACEHOLDERS)}"
    if problem == "few_placeholders":
        return f"fewer than {MIN_TEMPLATE_PLACEHOLDERS} placeholders"
    return problem.replace("_", " ")


@dataclass(frozen=True)
class TemplateBank:
    """An ordered list of templates; ``sha256`` identifies the exact bank (whitespace-normalised lines)."""

    templates: tuple[str, ...]
    source: str
    sha256: str

    def __len__(self) -> int:
        return len(self.templates)

    def __getitem__(self, template_id: int) -> str:
        return self.templates[template_id]


def parse_templates(text: str, source: str) -> TemplateBank:
    """Read a bank from file content; raise GadmsError naming ``source`` and the first bad line."""
    templates: list[str] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        line = " ".join(line.split())
        if not line or line.startswith("#"):
            continue
        problem = template_problem(line)
        if problem is not None:
            message = _problem_message(line, problem)
            raise GadmsError(f"{source}: line {line_number} is not a usable template ({message}); fix or remove it")
        templates.append(line)
    if len(templates) < 2:
        raise GadmsError(f"{source}: holds {len(templates)} template(s); a bank needs at least 2 (two captions per image)")
    digest = hashlib.sha256("\n".join(templates).encode("utf-8")).hexdigest()
    return TemplateBank(tuple(templates), source, digest)


def load_templates(path: Path | None = None) -> TemplateBank:
    """The bank in ``path`` (``--templates FILE``), or the shipped one."""
    path = Path(path).expanduser() if path is not None else DEFAULT_BANK
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GadmsError(f"--templates {path}: no such file") from None
    except UnicodeDecodeError:
        raise GadmsError(f"--templates {path}: not UTF-8 text") from None
    return parse_templates(text, str(path))


def format_templates(templates: list[str], header: list[str]) -> str:
    """File content for a bank: ``header`` lines as comments, then one template per line."""
    lines = [f"# {line}" for line in header] + list(templates)
    return "\n".join(lines) + "\n"
