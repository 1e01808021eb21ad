"""``gadms curate templates``: new caption templates from existing captions, written by an LLM.

The paper made its templates by having an LLM rewrite benchmark captions into templates with
attribute placeholders. Here: captions are read (a ``.txt`` with one caption per line, a
benchmark folder's train split, or WebPerson parquet), shuffled with the seed, and sent one
per request with :func:`gadms_cli.curate.prompts.template_prompt` through the same backends as
the captions. Each answer is cleaned (first line, no wrapping quotes) and kept when it is a
usable template (:func:`gadms_cli.curate.templates.template_problem`) and new (case and
spacing ignored, also against ``exclude``, e.g. the shipped bank). It stops at ``count``
templates or when the captions run out. The paper's further steps (embedding and k-means
clustering for diversity, LLM expansion, human review) are not automated; review the file.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gadms_cli.curate.captioners import Captioner, ChatRequest
from gadms_cli.curate.pipeline import derived_seed
from gadms_cli.curate.prompts import template_prompt
from gadms_cli.curate.templates import TemplateBank, template_problem
from gadms_cli.curate.validation import clean_caption
from gadms_cli.errors import GadmsError
from gadms_cli.progress import track


@dataclass
class DerivedTemplates:
    """The new templates (in the order found), how many captions were sent, and why answers were dropped."""

    templates: list[str] = field(default_factory=list)
    captions_sent: int = 0
    rejections: Counter = field(default_factory=Counter)


def read_captions(paths: list[str]) -> list[str]:
    """Captions from each path: a ``.txt`` (one per line), a benchmark folder (train split), or WebPerson."""
    from gadms_cli.data.benchmark_files import is_benchmark_folder
    from gadms_cli.data.benchmarks import load_benchmark
    from gadms_cli.data.webperson import open_webperson

    captions: list[str] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_file() and path.suffix == ".txt":
            captions.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        elif path.is_dir() and is_benchmark_folder(path):
            bench = load_benchmark(path, check_images=False)
            captions.extend(caption for image in bench.images("train") for caption in image.captions)
        else:
            for record in open_webperson(text):
                captions.extend(caption for caption in record.captions if caption)
    if not captions:
        raise GadmsError(f"no captions found in {', '.join(paths)}; pass a .txt (one caption per line), a benchmark or WebPerson folder")
    return captions


def _normalised(template: str) -> str:
    return " ".join(template.lower().split())


def derive_templates(
    captions: list[str],
    captioner: Captioner,
    *,
    count: int,
    seed: int = 0,
    batch_size: int = 32,
    exclude: TemplateBank | None = None,
) -> DerivedTemplates:
    """Ask for templates caption by caption until ``count`` new usable ones are found."""
    if count < 1:
        raise GadmsError(f"--count must be 1 or more, got {count}")
    order = list(range(len(captions)))
    random.Random(f"gadms-curate:{seed}:template-captions").shuffle(order)
    seen = {_normalised(template) for template in exclude.templates} if exclude is not None else set()
    result = DerivedTemplates()
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in track(batches, "templates"):
        requests = [ChatRequest(template_prompt(captions[i]), None, derived_seed("gadms-curate", seed, "template", i)) for i in batch]
        replies = captioner.generate(requests)
        result.captions_sent += len(requests)
        for reply in replies:
            lines = (reply.text or "").strip().splitlines()
            template = clean_caption(lines[0]) if lines else ""
            reason = reply.problem or template_problem(template)
            if reason is None and _normalised(template) in seen:
                reason = "duplicate"
            if reason is not None:
                result.rejections[reason] += 1
                continue
            seen.add(_normalised(template))
            result.templates.append(template)
            if len(result.templates) == count:
                return result
    return result
