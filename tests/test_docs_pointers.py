"""Every code pointer in the docs points at something that exists: file paths and dotted names."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "CHANGELOG.md"]
PATH = re.compile(r"\b((?:gadms_cli|benchmarks|tests|recipes|docs)/[A-Za-z0-9_./-]*[A-Za-z0-9_])")
DOTTED = re.compile(r"\bgadms_cli(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def _resolves(dotted: str) -> bool:
    """``gadms_cli.a.b.C`` names a module, or an attribute of the longest importable prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_file_path_in_the_docs_exists():
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in PATH.finditer(text):
            path = match.group(1)
            if text[match.end() : match.end() + 2].lstrip("-")[:1] in ("*", "<", "{"):
                continue  # a pattern (recipes/finetune-*.yaml, runs/<name>), not one file
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, missing


def test_every_dotted_gadms_name_in_the_docs_resolves():
    broken = sorted({f"{doc.name}: {m.group(0)}" for doc in DOCS for m in DOTTED.finditer(doc.read_text(encoding="utf-8"))
                     if not _resolves(m.group(0).rstrip("."))})
    assert not broken, broken
