"""Curation: web image-text data -> WebPerson-style person-centric image/caption pairs.

Modules (one concept each): ``inputs`` (what is read, cut into units), ``person_filter`` (the
paper's rules as pure functions), ``detectors`` (Keypoint R-CNN, optional YOLO), ``templates``
(the caption template bank), ``prompts``, ``captioners`` (+ ``captioner_openai``,
``captioner_transformers``), ``validation`` (caption checks), ``writer`` (shards, stats,
manifest), ``report`` (counts and speeds), ``pipeline`` (the resumable run) and
``derive_templates`` (``gadms curate templates``). See docs/curate.md.
"""

from gadms_cli.curate.person_filter import FilterRules, PersonDetection, select_persons
from gadms_cli.curate.pipeline import CurateResult, CurateSettings, curate
from gadms_cli.curate.templates import TemplateBank, load_templates
from gadms_cli.curate.validation import CaptionRules

__all__ = [
    "CaptionRules",
    "CurateResult",
    "CurateSettings",
    "FilterRules",
    "PersonDetection",
    "TemplateBank",
    "curate",
    "load_templates",
    "select_persons",
]
