"""What each kind of SketchPedes caption noise costs `clip`, and what token masking could win back.

From one noisy SketchPedes folder (the ablation's) this writes derived folders that differ
from it only in the TRAIN captions, then trains the ablation's `clip` arm on each (same base
model, steps, seeds and cache as ``benchmarks/ablation.py``):

==================  ==========================================================================
variant             train captions
==================  ==========================================================================
``noisy``           as they are (the ablation's ``clip``: the same runs, from its cache)
``clean``           every corrupted caption put back to its clean text (the clean ceiling)
``keep-K``          only the noise of kind K stays: every corrupted caption without kind K
                    is put back to its clean text (K: wrong_colour, wrong_type,
                    irrelevant_phrase, dropped_words)
``drop-corrupted``  the corrupted captions are left out (an image whose captions are all
                    corrupted leaves the training split): a perfect caption-level filter
``delete-wrong``    every written-wrong word and inserted phrase is deleted from its caption
                    (dropped words stay dropped): perfect token-level noise removal, without
                    the [MASK] token the paper's masking writes in their place
==================  ==========================================================================

A ``keep-K`` figure below ``clean`` by X says that kind alone costs X. ``delete-wrong`` against
``drop-corrupted`` says whether removing the wrong tokens (all a token mask can do, with a perfect
score) wins back what removing the corrupted captions does.

    python benchmarks/noise_kind_cost.py --noisy runs/ablation-sketchpedes-conv/sketchpedes-noise0.3-val200-test1000 \\
        --out runs/ablation-sketchpedes-conv --threads 2 --seeds 0 -- --val-ids 200 --test-ids 1000 --set data.num_workers=0

Arguments after ``--`` go to ``benchmarks/ablation.py`` unchanged. Each variant's table is
written as the ablation writes it into ``--results`` (default: a ``noise-kinds`` folder in ``--out``),
and all of them side by side to ``--md`` / ``--json`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from statistics import fmean

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ablation  # noqa: E402  (the benchmark next to this one)

from gadms_cli.data.synth.caption_noise import NOISE_KINDS  # noqa: E402
from gadms_cli.data.synth.noise_labels import changed_positions  # noqa: E402
from gadms_cli.fileio import atomic_write  # noqa: E402

VARIANTS: tuple[str, ...] = ("noisy", "clean", *(f"keep-{kind}" for kind in NOISE_KINDS), "drop-corrupted", "delete-wrong")


def delete_written_wrong(written: str, clean: str) -> str:
    """``written`` without the words that a word diff against ``clean`` marks as replaced or inserted."""
    words = written.split(" ")
    normalised = [[w.lower().strip(".,") for w in text.split(" ")] for text in (clean, written)]
    changed = set(changed_positions(*normalised))
    return " ".join(w for k, w in enumerate(words) if k not in changed)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def derive_captions(raw: list[dict], records: list[dict], variant: str) -> tuple[list[dict], list[dict]]:
    """The reid_raw.json entries and attributes.jsonl records of ``variant`` (see the module docstring).

    ``raw`` and ``records`` are the noisy folder's, in the same order (one per image). Only train
    captions change; captions whose noise stays keep their text and record.
    """
    if len(raw) != len(records):
        raise ValueError(f"reid_raw.json has {len(raw)} images, attributes.jsonl {len(records)}")
    keep_kind = variant.removeprefix("keep-") if variant.startswith("keep-") else None
    if variant not in ("drop-corrupted", "clean", "delete-wrong") and keep_kind not in NOISE_KINDS:
        raise ValueError(f"unknown variant {variant!r}; one of {', '.join(v for v in VARIANTS if v != 'noisy')}")
    new_raw, new_records = [], []
    for entry, record in zip(raw, records, strict=True):
        if entry["file_path"] != record["file_path"]:
            raise ValueError(f"reid_raw.json and attributes.jsonl disagree at {entry['file_path']}")
        captions, caption_records = [], []
        for text, caption in zip(entry["captions"], record["captions"], strict=True):
            if entry["split"] == "train" and caption["corrupted"]:
                if variant == "drop-corrupted":
                    continue
                if variant == "delete-wrong":
                    text = delete_written_wrong(text, caption["clean"])
                    caption = {**caption, "text_edit": "written-wrong words deleted"}
                elif keep_kind not in caption["kinds"]:  # "clean": keep_kind is None, so every caption
                    text = caption["clean"]
                    caption = {**caption, "corrupted": False, "kinds": [], "edits": []}
            captions.append(text)
            caption_records.append(caption)
        if not captions:
            continue
        new_entry = {key: value for key, value in entry.items() if key != "processed_tokens"}
        new_raw.append({**new_entry, "captions": captions})
        new_records.append({**record, "captions": caption_records})
    return new_raw, new_records


def write_variant(noisy: Path, out: Path, variant: str) -> Path:
    """``out/<noisy name>-<variant>``: the derived folder (images linked, not copied); reused when present.
    ``noisy`` is the noisy folder itself."""
    if variant == "noisy":
        return noisy
    target = out / f"{noisy.name}-{variant}"
    if (target / "sketchpedes.json").is_file():
        return target
    raw = json.loads((noisy / "reid_raw.json").read_text(encoding="utf-8"))
    records = _read_jsonl(noisy / "attributes.jsonl")
    new_raw, new_records = derive_captions(raw, records, variant)
    tmp = out / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    os.symlink((noisy / "imgs").resolve(), tmp / "imgs")
    (tmp / "reid_raw.json").write_text(json.dumps(new_raw), encoding="utf-8")
    (tmp / "attributes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in new_records), encoding="utf-8")
    manifest = json.loads((noisy / "sketchpedes.json").read_text(encoding="utf-8"))
    manifest["derived"] = {"from": str(noisy), "variant": variant}
    (tmp / "sketchpedes.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def caption_counts(folder: Path) -> tuple[int, int]:
    """(train captions, corrupted train captions) of a SketchPedes folder."""
    records = [r for r in _read_jsonl(folder / "attributes.jsonl") if r["split"] == "train"]
    captions = [c for r in records for c in r["captions"]]
    return len(captions), sum(1 for c in captions if c["corrupted"])


def table(summary: dict[str, dict]) -> list[str]:
    """Markdown rows: per variant, test R@1 (val-selected and last model) as mean ± std over seeds, against ``clean``."""
    reference = summary.get("clean")
    lines = ["| variant | train captions (corrupted) | seeds | test R@1 | vs clean | test R@1, last model | vs clean |",
             "|---|---|---|---|---|---|---|"]
    for variant, entry in summary.items():
        cells = []
        for key in ("test", "test_last"):  # val-selected, last model
            values = [r[key]["R1"] for r in entry["runs"]]
            delta = ""
            if reference is not None and variant != "clean":
                delta = f"{fmean(values) - fmean(r[key]['R1'] for r in reference['runs']):+.2f}"
            cells += [ablation.pm(values), delta]
        lines.append(f"| {variant} | {entry['captions']} ({entry['corrupted']}) | {len(entry['runs'])} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noisy", type=Path, required=True, help="the noisy SketchPedes folder (the ablation's)")
    parser.add_argument("--out", type=Path, required=True, help="the ablation's work folder (base model, cache, runs)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--threads", default=None)
    parser.add_argument("--results", type=Path, default=None, help="where each variant's table goes (default --out/noise-kinds)")
    parser.add_argument("--md", type=Path, default=None, help="write the side-by-side table here (markdown)")
    parser.add_argument("--json", type=Path, default=None, help="write every variant's runs here")
    args = parser.parse_args(own)
    if not (args.noisy / "attributes.jsonl").is_file():
        sys.exit(f"error: --noisy {args.noisy}: no attributes.jsonl; pass a folder written by 'gadms synth'")
    results = args.results or args.out / "noise-kinds"
    results.mkdir(parents=True, exist_ok=True)
    summary = {}
    for variant in args.variants:
        try:
            folder = write_variant(args.noisy, args.out / "noise-kinds-data", variant)
        except ValueError as error:  # the two annotation files of --noisy disagree
            sys.exit(f"error: --noisy {args.noisy}: {error}; regenerate the folder with 'gadms synth'")
        print(f"== {variant}: {folder}", flush=True)
        variant_results = results / variant
        variant_results.mkdir(exist_ok=True)
        written = ablation.main(["--data", str(folder), "--out", str(args.out), "--arms", "clip", "--seeds", *args.seeds,
                                 "--results", str(variant_results), *(["--threads", args.threads] if args.threads else []),
                                 *passthrough])
        captions, corrupted = caption_counts(folder)
        summary[variant] = {"folder": str(folder), "captions": captions, "corrupted": corrupted,
                            "settings": written["settings"], "runs": written["runs"]}
    lines = table(summary)
    print("\n".join(lines))
    command = "python benchmarks/noise_kind_cost.py " + " ".join(argv)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info = ablation.machine()
    header = [
        "# What each kind of caption noise costs `clip`\n",
        f"Made by `{command}` on {date}; {info['cpu_count']} CPUs, torch {info['torch']}, GPU: {info['gpu'] or 'none'}.\n",
        "Every variant trains the ablation's `clip` arm (same base model, steps and seeds) on the noisy folder with "
        "its train captions changed as the variant says (benchmarks/noise_kind_cost.py); val and test are the same. "
        "Mean ± sample standard deviation over seeds; 'last model' is the final step of every run.\n",
    ]
    for path, text in ((args.json, json.dumps({"command": command, "date": date, "variants": summary}, indent=1) + "\n"),
                       (args.md, "\n".join([*header, *lines]) + "\n")):
        if path is not None:
            with atomic_write(path) as handle:
                handle.write(text)


if __name__ == "__main__":
    main()
