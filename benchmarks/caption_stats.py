"""Caption statistics of a CUHK-PEDES-format benchmark: words per caption, vocabulary, styles.

Reads ``reid_raw.json`` (CUHK-PEDES layout, so it also measures the real CUHK-PEDES,
ICFG-PEDES or RSTPReid files) and, for SketchPedes, ``attributes.jsonl`` for the caption
styles and how many attributes each caption mentions. Words are counted as CUHK-PEDES
counts them: lower-cased, punctuation dropped, split on spaces. The published figure for
CUHK-PEDES is an average of about 23.5 words per caption.

Usage::

    python benchmarks/caption_stats.py DIR [--split train] [--json FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import sys
from pathlib import Path

CUHK_PEDES_MEAN_WORDS = 23.5  # published average caption length (Li et al., CVPR 2017)
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def words(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


def summary(lengths: list[int]) -> dict:
    ordered = sorted(lengths)

    def quantile(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "captions": len(lengths),
        "mean": round(statistics.mean(lengths), 2),
        "median": statistics.median(lengths),
        "p10": quantile(0.1),
        "p90": quantile(0.9),
        "min": ordered[0],
        "max": ordered[-1],
    }


def caption_stats(folder: Path, split: str | None) -> dict:
    records = json.loads((folder / "reid_raw.json").read_text())
    captions = [c for r in records if split is None or r["split"] == split for c in r["captions"]]
    if not captions:
        raise SystemExit(f"error: {folder / 'reid_raw.json'} has no captions in split {split!r}; pass --split train, val or test")
    tokens = [words(c) for c in captions]
    result = {
        "folder": str(folder),
        "split": split or "all",
        "words_per_caption": summary([len(t) for t in tokens]),
        "sentences_per_caption": round(statistics.mean(max(1, len(re.findall(r"[.!?](\s|$)", c))) for c in captions), 2),
        "vocabulary": len({w for t in tokens for w in t}),
        "cuhk_pedes_mean_words": CUHK_PEDES_MEAN_WORDS,
    }
    attributes = folder / "attributes.jsonl"
    if attributes.is_file():
        by_style: dict[str, list[int]] = collections.defaultdict(list)
        mentions: collections.Counter = collections.Counter()
        slot_share: collections.Counter = collections.Counter()
        rows = 0
        for line in attributes.read_text().splitlines():
            entry = json.loads(line)
            if split is not None and entry["split"] != split:
                continue
            for caption in entry["captions"]:
                by_style[caption.get("style", "full")].append(len(words(caption["clean"])))
                mentioned = caption.get("mentions", [])
                mentions[len(mentioned)] += 1
                slot_share.update(mentioned)
                rows += 1
        result["styles"] = {style: {"share": round(len(v) / rows, 3), **summary(v)} for style, v in sorted(by_style.items())}
        result["attributes_mentioned"] = {str(k): round(v / rows, 3) for k, v in sorted(mentions.items())}
        result["slot_mentioned"] = {slot: round(v / rows, 3) for slot, v in slot_share.most_common()}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="benchmark folder with reid_raw.json")
    parser.add_argument("--split", default="train", help="split to measure, or 'all' (default train)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not (args.folder / "reid_raw.json").is_file():
        sys.exit(f"error: {args.folder} has no reid_raw.json; pass a CUHK-PEDES-format folder (gadms synth --out DIR writes one)")
    stats = caption_stats(args.folder, None if args.split == "all" else args.split)
    w = stats["words_per_caption"]
    print(f"{stats['folder']} ({stats['split']}): {w['captions']:,} captions, {w['mean']} words on average "
          f"(median {w['median']}, 10-90% {w['p10']}-{w['p90']}, {w['min']}-{w['max']}); CUHK-PEDES: {CUHK_PEDES_MEAN_WORDS}")
    print(f"sentences per caption {stats['sentences_per_caption']}, vocabulary {stats['vocabulary']:,} words")
    for style, s in stats.get("styles", {}).items():
        print(f"  {style:8s} {s['share']:.0%} of captions, {s['mean']} words (median {s['median']}, {s['min']}-{s['max']})")
    if "attributes_mentioned" in stats:
        print("  attributes mentioned per caption: " + ", ".join(f"{k}: {v:.0%}" for k, v in stats["attributes_mentioned"].items()))
        print("  captions naming each attribute:   " + ", ".join(f"{k} {v:.0%}" for k, v in stats["slot_mentioned"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(stats, indent=1) + "\n")


if __name__ == "__main__":
    main()
