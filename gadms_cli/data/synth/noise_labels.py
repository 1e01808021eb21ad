"""Which tokens of a SketchPedes training caption were written wrong: the truth an oracle token score uses.

SketchPedes records every corruption it made (``attributes.jsonl``, one line per image; each
caption's ``edits``). :func:`load_caption_edits` pairs each written train caption (as
``reid_raw.json`` holds it) with its edits; :func:`noise_token_mask` turns one caption's edits
into a bool mask over its token positions (start token = position 0, as in ``[B, T]`` tensors),
located by :func:`gadms_cli.data.synth.noise_words.noise_positions`.

Used by ``method.token_score: oracle`` (docs/method.md "Token scores"): a score of 0 on the
written-wrong words and 1 on every other word, fed to the paper's masking formula, bounds what
noise masking can win with a perfect score.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import torch

from gadms_cli.data.synth.noise_words import LOCATABLE_KINDS, noise_positions
from gadms_cli.errors import GadmsError
from gadms_cli.model.tokenizer import Tokenizer

if TYPE_CHECKING:
    from gadms_cli.data.benchmarks import Benchmark

CaptionKey = tuple[str, str]  # (image path relative to imgs/, caption text as written)


def load_caption_edits(bench: Benchmark, split: str = "train") -> dict[CaptionKey, list[dict]]:
    """``{(file_path, written caption): edits}`` for every caption of ``split`` of a SketchPedes
    :class:`~gadms_cli.data.benchmarks.Benchmark` (its captions as read from ``reid_raw.json``).

    Clean captions map to ``[]``. Raises :class:`GadmsError` naming the file when the folder has no
    ``attributes.jsonl`` (not written by ``gadms synth``) or it disagrees with the annotations.
    """
    attributes_file = bench.root / "attributes.jsonl"
    if not attributes_file.is_file():
        raise GadmsError(
            f"{attributes_file}: not found; method.token_score 'oracle' needs a SketchPedes folder written by 'gadms synth' "
            "(it reads which caption words were corrupted); use another token_score for other data"
        )
    written = {image.relative_path: image.captions for image in bench.images(split)}
    edits: dict[CaptionKey, list[dict]] = {}
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
                edits[(record["file_path"], text)] = list(caption["edits"])
    return edits


def noise_token_mask(tokenizer: Tokenizer, caption: str, edits: list[dict], context_length: int) -> tuple[torch.Tensor, int]:
    """Bool ``[context_length]``: True at the tokens of ``caption`` that its ``edits`` wrote wrong.

    Returns the mask and how many edits that write a word could not be located (the written word
    occurs more than once: it stays False). ``dropped_words`` edits write no word: nothing to mark.
    """
    mask = torch.zeros(context_length, dtype=torch.bool)
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
