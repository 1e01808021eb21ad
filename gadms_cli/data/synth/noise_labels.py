"""Which tokens of a SketchPedes training caption were written wrong: the truth an oracle token score uses.

SketchPedes records every corruption it made (``attributes.jsonl``, one line per image; each
caption's ``edits`` and its ``clean`` text). :func:`load_caption_edits` pairs each written train
caption (as ``reid_raw.json`` holds it) with that record; :func:`noise_token_mask` turns it into a
bool mask over the caption's token positions (start token = position 0, as in ``[B, T]`` tensors).

The mask comes from a token diff of the written caption against its clean text: SketchPedes writes a
wrong colour or type by re-rendering the same sentence plan, and inserts or drops words afterwards,
so every written token that the clean caption does not have in that place is noise (a wrong word,
an inserted phrase), and dropped words leave nothing to mark. Finding the written word by its text
instead misses every wrong word that also occurs elsewhere in the caption ("black shoes" beside
"black hair"): a third of the wrong colours of a typical set.

Used by ``method.token_score: oracle`` (docs/method.md "Token scores"): a score of 0 on the
written-wrong words and 1 on every other word, fed to the paper's masking formula, bounds what
noise masking can win with a perfect score.
"""

from __future__ import annotations

import json
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, NamedTuple, Sequence

import torch

from gadms_cli.data.synth.noise_words import LOCATABLE_KINDS, noise_positions
from gadms_cli.errors import GadmsError
from gadms_cli.model.tokenizer import Tokenizer

if TYPE_CHECKING:
    from gadms_cli.data.benchmarks import Benchmark

CaptionKey = tuple[str, str]  # (image path relative to imgs/, caption text as written)


class CaptionTruth(NamedTuple):
    """What SketchPedes recorded about one written caption: its clean text (None in a record that
    lacks it) and its edits ([] when clean)."""

    clean: str | None
    edits: list[dict]


def load_caption_edits(bench: Benchmark, split: str = "train") -> dict[CaptionKey, CaptionTruth]:
    """``{(file_path, written caption): CaptionTruth(clean, edits)}`` for every caption of ``split`` of a
    SketchPedes :class:`~gadms_cli.data.benchmarks.Benchmark` (its captions as read from ``reid_raw.json``).

    Clean captions have ``edits == []``. Raises :class:`GadmsError` naming the file when the folder has no
    ``attributes.jsonl`` (not written by ``gadms synth``) or it disagrees with the annotations.
    """
    attributes_file = bench.root / "attributes.jsonl"
    if not attributes_file.is_file():
        raise GadmsError(
            f"{attributes_file}: not found; method.token_score 'oracle' needs a SketchPedes folder written by 'gadms synth' "
            "(it reads which caption words were corrupted); use another token_score for other data"
        )
    written = {image.relative_path: image.captions for image in bench.images(split)}
    edits: dict[CaptionKey, CaptionTruth] = {}
    with attributes_file.open() as handle:
        for line_number, line in enumerate(handle, 1):
            record = json.loads(line)
            if record["split"] != split:
                continue
            captions = written.get(record["file_path"])
            if captions is None or len(captions) != len(record["captions"]):
                raise GadmsError(
                    f"{attributes_file}:{line_number}: image {record['file_path']} does not match {bench.annotation_file}; "
                    "regenerate the folder with 'gadms synth'"
                )
            for text, caption in zip(captions, record["captions"]):
                edits[(record["file_path"], text)] = CaptionTruth(caption.get("clean"), list(caption["edits"]))
    return edits


def changed_positions(original: Sequence, written: Sequence) -> list[int]:
    """Indices of ``written`` that ``original`` does not have there: the written side of every replaced
    or inserted span of a diff (``difflib``). Items deleted from ``original`` mark nothing."""
    matcher = SequenceMatcher(a=original, b=written, autojunk=False)
    return [k for tag, _, _, start, end in matcher.get_opcodes() if tag in ("replace", "insert") for k in range(start, end)]


def written_wrong_positions(tokenizer: Tokenizer, caption: str, clean: str) -> list[int]:
    """Token positions of ``caption`` (start token = 0) that its ``clean`` text does not have there
    (:func:`changed_positions` over the token ids)."""
    return [1 + k for k in changed_positions(tokenizer.encode(clean), tokenizer.encode(caption))]


def noise_token_mask(tokenizer: Tokenizer, caption: str, edits: list[dict], context_length: int,
                     clean: str | None = None) -> tuple[torch.Tensor, int]:
    """Bool ``[context_length]``: True at the tokens of ``caption`` that its ``edits`` wrote wrong.

    With ``clean`` (the caption before its edits, as SketchPedes records it) the tokens come from
    :func:`written_wrong_positions` and every edit is located. Without it each edit's written word
    is searched for, and the mask leaves out an edit whose word occurs more than once. Returns the
    mask and how many edits that write a word could not be located. ``dropped_words`` edits write
    no word: nothing to mark.
    """
    mask = torch.zeros(context_length, dtype=torch.bool)
    if clean is not None:
        if any(edit["kind"] in LOCATABLE_KINDS for edit in edits):
            inside = [p for p in written_wrong_positions(tokenizer, caption, clean) if p < context_length - 1]
            mask[inside] = True  # the tokenizer keeps the end token
        return mask, 0
    unlocated = 0
    for edit in edits:
        if edit["kind"] not in LOCATABLE_KINDS:
            continue
        positions = noise_positions(tokenizer, caption, edit)
        if positions is None:
            unlocated += 1
            continue
        inside = [p for p in positions if p < context_length - 1]  # the tokenizer keeps the end token
        mask[inside] = True
    return mask, unlocated
