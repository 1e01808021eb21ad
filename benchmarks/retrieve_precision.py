"""Precision@10 of ``gadms retrieve`` on a SketchPedes gallery, for attribute queries.

SketchPedes (``gadms synth --out DIR``) writes the true attributes of every image in
``DIR/attributes.jsonl``, so whether a retrieved image matches a query such as "a woman
wearing a red coat" can be checked exactly: gender female, top type coat, top colour red.

Queries come from nine families of attribute predicates, each written as a short sentence.
An attribute is one fact a user states: the gender, or one item (with or without its colour).
One attribute:

- ``gender``: gender                             "a woman"
- ``colour``: top colour + type, any gender      "a person in a green jacket"
- ``carry``:  bag type, any gender               "a person carrying a backpack"
- ``hat``:    hat type, any gender               "a person wearing a cap"
- ``length``: hair length, any gender            "a person with long hair"

Two attributes:

- ``top``:    gender + top colour + top type     "a woman wearing a red coat"
- ``bottom``: gender + bottom colour + type      "a man wearing blue jeans"
- ``hair``:   gender + hair length + colour      "a woman with long black hair"
- ``bag``:    gender + bag type                  "a man carrying a backpack"

"a woman wearing a red coat" (the issue's example) is always evaluated. For each family the
``--per-family`` predicates with the most matching gallery images are added, among those
with at least ``--min-relevant`` matches (10 by default, so a perfect ranking scores 1).
Precision@10 = matching images among the top 10 / 10. The ceiling min(1, matches / 10)
is reported beside it; the mean is over the queries with at least one match, and again
over those whose ceiling is 1.

Usage::

    python benchmarks/retrieve_precision.py --model RUN_DIR --sketchpedes DIR [--split test] [--json FILE]

Writes the gallery's index under ``DIR/imgs/<split>/.gadms`` (or ``--index PATH``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

FAMILIES = ("gender", "colour", "carry", "hat", "length", "top", "bottom", "hair", "bag")
ATTRIBUTES = {"gender": 1, "colour": 1, "carry": 1, "hat": 1, "length": 1, "top": 2, "bottom": 2, "hair": 2, "bag": 2}
ISSUE_QUERY = ("top", ("female", "coat", "red"))
PLURAL = {"trousers", "jeans", "shorts"}
HAIR_COLOUR = {"yellow": "blond"}
HAIR_LENGTH = {"medium": "shoulder-length"}
NOUN = {"male": "man", "female": "woman"}


def article(word: str) -> str:
    """'an' before a vowel sound ("an orange coat"), else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass(frozen=True)
class AttributeQuery:
    family: str
    key: tuple  # the attribute values the predicate requires
    text: str
    matches: Callable[[dict], bool]


def _garment(attributes: dict, slot: str) -> tuple[str | None, str | None]:
    item = attributes.get(slot) or {}
    return item.get("type"), item.get("colour")


def key_of(family: str, attributes: dict) -> tuple | None:
    """The predicate of ``family`` that an image with ``attributes`` satisfies (None if it has no such item)."""
    gender = attributes["gender"]
    if family == "gender":
        return (gender,)
    if family == "carry":
        kind, _ = _garment(attributes, "bag")
        return (kind,) if kind else None
    if family == "hat":
        kind, _ = _garment(attributes, "hat")
        return (kind,) if kind else None
    if family == "length":
        return (_garment(attributes, "hair")[0],)
    if family == "top":
        kind, colour = _garment(attributes, "top")
        return (gender, kind, colour)
    if family == "bottom":
        kind, colour = _garment(attributes, "bottom")
        return (gender, kind, colour) if kind else None
    if family == "hair":
        kind, colour = _garment(attributes, "hair")
        return (gender, kind, colour)
    if family == "bag":
        kind, _ = _garment(attributes, "bag")
        return (gender, kind) if kind else None
    kind, colour = _garment(attributes, "top")
    return (kind, colour)


def sentence(family: str, key: tuple) -> str:
    """The query text of a predicate, worded like SketchPedes captions."""
    if family == "gender":
        return f"a {NOUN[key[0]]}"
    if family == "carry":
        return f"a person carrying {article(key[0])} {key[0]}"
    if family == "hat":
        return f"a person wearing {article(key[0])} {key[0]}"
    if family == "length":
        return f"a person with {HAIR_LENGTH.get(key[0], key[0])} hair"
    if family == "top":
        gender, kind, colour = key
        return f"a {NOUN[gender]} wearing {article(colour)} {colour} {kind}"
    if family == "bottom":
        gender, kind, colour = key
        return f"a {NOUN[gender]} wearing {colour} {kind}" if kind in PLURAL else f"a {NOUN[gender]} wearing {article(colour)} {colour} {kind}"
    if family == "hair":
        gender, length, colour = key
        return f"a {NOUN[gender]} with {HAIR_LENGTH.get(length, length)} {HAIR_COLOUR.get(colour, colour)} hair"
    if family == "bag":
        gender, kind = key
        return f"a {NOUN[gender]} carrying {article(kind)} {kind}"
    kind, colour = key
    return f"a person in {article(colour)} {colour} {kind}"


def choose_queries(records: list[dict], per_family: int, min_relevant: int) -> list[AttributeQuery]:
    """The issue's query plus, per family, the most frequent predicates with enough matches."""
    chosen: list[tuple[str, tuple]] = [ISSUE_QUERY]
    for family in FAMILIES:
        counts = Counter(k for r in records if (k := key_of(family, r["attributes"])) is not None)
        ranked = sorted((item for item in counts.items() if item[1] >= min_relevant), key=lambda kv: (-kv[1], kv[0]))
        chosen += [(family, key) for key, _ in ranked[:per_family] if (family, key) != ISSUE_QUERY]
    return [
        AttributeQuery(family, key, sentence(family, key), lambda attrs, f=family, k=key: key_of(f, attrs) == k)
        for family, key in chosen
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="run dir / checkpoint (default: $GADMS_MODEL, then the quickstart's)")
    parser.add_argument("--sketchpedes", type=Path, required=True, help="folder written by 'gadms synth --out'")
    parser.add_argument("--split", default="test")
    parser.add_argument("--index", type=Path, default=None, help="index folder (default: inside the gallery)")
    parser.add_argument("--per-family", type=int, default=2)
    parser.add_argument("--min-relevant", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from gadms_cli import progress
    from gadms_cli.fileio import atomic_write
    from gadms_cli.retrieve import Retriever

    lines = (args.sketchpedes / "attributes.jsonl").read_text(encoding="utf-8").splitlines()
    records = [r for r in map(json.loads, filter(None, lines)) if r["split"] == args.split]
    if not records:
        raise SystemExit(f"no '{args.split}' images in {args.sketchpedes / 'attributes.jsonl'}")
    attributes_of = {r["file_path"].split("/", 1)[1]: r["attributes"] for r in records}  # "test/0001_01.jpg" -> ...
    queries = choose_queries(records, args.per_family, args.min_relevant)

    progress.enable(True)
    retriever = Retriever(args.model)
    report = retriever.index(args.sketchpedes / "imgs" / args.split, index_dir=args.index)
    results = retriever.search_texts([q.text for q in queries], top_k=args.top_k)

    rows = []
    for query, result in zip(queries, results):
        relevant = sum(query.matches(a) for a in attributes_of.values())
        hits = [query.matches(attributes_of[h.relative_path]) for h in result.hits]
        rows.append({
            "query": query.text, "family": query.family, "attributes": ATTRIBUTES[query.family], "relevant": relevant,
            f"precision_at_{args.top_k}": sum(hits) / args.top_k, "ceiling": min(1.0, relevant / args.top_k),
            "top": [h.relative_path for h in result.hits],
        })
    key = f"precision_at_{args.top_k}"
    answerable = [r for r in rows if r["relevant"] > 0]  # the issue's query may have no match in a small gallery
    mean = sum(r[key] for r in answerable) / max(1, len(answerable))
    full = [r for r in rows if r["ceiling"] == 1.0]
    mean_full = sum(r[key] for r in full) / max(1, len(full))
    table = Table(title=f"precision@{args.top_k}, {report.images} {args.split} images, model {retriever.model_name}")
    for column in ("query", "family", "relevant", f"P@{args.top_k}", "ceiling"):
        table.add_column(column, justify="left" if column in ("query", "family") else "right")
    for r in rows:
        table.add_row(r["query"], r["family"], str(r["relevant"]), f"{r[key]:.2f}", f"{r['ceiling']:.2f}")
    table.add_row(f"mean ({len(answerable)} queries with a match)", "", "", f"{mean:.3f}", "")
    table.add_row(f"mean ({len(full)} queries with ceiling 1)", "", "", f"{mean_full:.3f}", "")
    Console().print(table)
    if args.json:
        with atomic_write(args.json) as handle:
            json.dump({"model": retriever.model_name, "split": args.split, "images": report.images,
                       f"mean_{key}": mean, f"mean_{key}_ceiling_1": mean_full, "queries": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
