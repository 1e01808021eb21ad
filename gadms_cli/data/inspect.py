"""``gadms data inspect``: what a dataset folder holds, per split, and what looks wrong.

Works on the three benchmark formats (via :mod:`gadms_cli.data.benchmarks`), WebPerson parquet
folders and the GA-DMS JSON variant (via :mod:`gadms_cli.data.webperson`). The report is a plain
dict, the same for every format::

    {"format": "cuhk-pedes" | "icfg-pedes" | "rstpreid" | "webperson-parquet" | "webperson-json",
     "root": "/abs/path",
     "splits": {"train": {"ids": n, "images": n, "captions": n,
                          "caption_words": {"mean": x, "min": n, "max": n}}, ...},
     "problems": ["one-line warning", ...]}

Caption words are whitespace-separated tokens. For WebPerson every image is its own identity
(ids == images) and ``captions`` counts the non-empty ones.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from gadms_cli.data.benchmark_files import BENCHMARK_DIRS, image_problem, is_benchmark_folder
from gadms_cli.data.benchmarks import load_benchmark, word_stats
from gadms_cli.data.webperson import (
    JSON_IMAGE_DIR,
    open_shard,
    JsonWebPerson,
    find_gadms_json,
    find_parquet_files,
    split_of_shard_file,
)
from gadms_cli.errors import GadmsError
from gadms_cli.progress import track

_LISTED = 3


def inspect_dataset(path: Path, skip_missing: bool = False, decode: bool = False) -> dict:
    """Summarise the dataset at ``path`` (a folder, a ``.parquet`` file or a GA-DMS ``.json``).

    Missing or unreadable images raise a GadmsError unless ``skip_missing``, in which case
    they are left out of the counts and listed in ``problems``. ``decode``: decode every
    benchmark image whole (finds truncated files; slow), not only its first bytes.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    if path.is_dir() and is_benchmark_folder(path):
        bench = load_benchmark(path, skip_missing=skip_missing, check_images=True, decode=decode)
        return {"format": bench.format, "root": str(bench.root), "splits": bench.stats(), "problems": bench.problems}
    if path.is_file() and path.suffix == ".parquet":
        return _inspect_parquet(path.parent, [path])
    if path.is_file() and path.suffix == ".json":
        return _inspect_gadms_json(path, skip_missing)
    if path.is_dir():
        files = find_parquet_files(path)
        if files:
            return _inspect_parquet(path, files)
        json_file = find_gadms_json(path)
        if json_file is not None:
            return _inspect_gadms_json(json_file, skip_missing)
        raise GadmsError(
            f"{path}: no dataset recognised; looked for reid_raw.json (CUHK-PEDES), ICFG-PEDES.json or "
            f"ICFG_PEDES.json (ICFG-PEDES), data_captions.json (RSTPReid), data/*.parquet or *.parquet "
            f"(WebPerson) and a GA-DMS *.json beside {JSON_IMAGE_DIR}/"
            + _nested_hint(path)
        )
    if path.exists():
        raise GadmsError(
            f"{path}: not a dataset file; pass a dataset folder (the one holding reid_raw.json, ICFG-PEDES.json, "
            "data_captions.json or data/*.parquet), a .parquet or a GA-DMS .json"
        )
    raise GadmsError(f"{path}: no such file or folder")


def _nested_hint(path: Path) -> str:
    nested = [path / name for name in BENCHMARK_DIRS.values() if (path / name).is_dir()]
    return f" (did you mean {nested[0]}?)" if nested else ""


def _caption_word_counts(column) -> tuple[list[int], int]:
    """(word counts of the non-empty captions, number of null/empty captions) of a pyarrow string column."""
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(column)
    present = pc.and_(pc.is_valid(trimmed), pc.not_equal(trimmed, ""))
    kept = pc.filter(trimmed, pc.fill_null(present, False))
    counts = pc.list_value_length(pc.utf8_split_whitespace(kept)).to_pylist()
    return counts, len(column) - len(counts)


def _inspect_parquet(root: Path, files: list[Path]) -> dict:
    """Rows from the parquet footers; caption words from the caption columns only (images never read)."""
    rows_by_split: dict[str, int] = defaultdict(int)
    words_by_split: dict[str, list[int]] = defaultdict(list)
    empty_by_split: dict[str, int] = defaultdict(int)
    for path in track(files, "reading parquet shards", total=len(files)):
        parquet = open_shard(path)
        split = split_of_shard_file(path)
        rows_by_split[split] += parquet.metadata.num_rows
        for batch in parquet.iter_batches(batch_size=65_536, columns=["caption1", "caption2"]):
            for name in ("caption1", "caption2"):
                counts, empty = _caption_word_counts(batch.column(name))
                words_by_split[split].extend(counts)
                empty_by_split[split] += empty
    splits = {
        split: {
            "ids": rows,
            "images": rows,
            "captions": len(words_by_split[split]),
            "caption_words": word_stats(words_by_split[split]),
        }
        for split, rows in sorted(rows_by_split.items())
    }
    problems = [
        f"{split}: {empty} captions are empty or null" for split, empty in sorted(empty_by_split.items()) if empty
    ]
    return {"format": "webperson-parquet", "root": str(root), "splits": splits, "problems": problems}


def _inspect_gadms_json(json_file: Path, skip_missing: bool) -> dict:
    """Parse every entry (streaming) and check every image file under ``images/``."""
    source = JsonWebPerson(json_file)
    if not source.image_dir.is_dir():
        raise GadmsError(f"{source.image_dir}: no image folder beside {json_file.name}; put the images there")
    words: list[int] = []
    empty = 0
    images = 0
    bad: list[tuple[str, str]] = []
    for record in track(source, "reading GA-DMS annotations"):
        reason = image_problem(record.image_file)
        if reason is not None:
            bad.append((record.image_path, reason))
            continue
        images += 1
        for caption in record.captions:
            count = len(caption.split())
            if count:
                words.append(count)
            else:
                empty += 1
    problems = []
    if bad:
        listed = "; ".join(f"{relative} ({reason})" for relative, reason in bad[:_LISTED])
        total = images + len(bad)
        if not skip_missing:
            raise GadmsError(
                f"{json_file}: {len(bad)} of {total} images are missing or unreadable under {source.image_dir} "
                f"(first: {listed}); restore them, or pass --skip-missing to skip them"
            )
        problems.append(f"skipped {len(bad)} of {total} images that are missing or unreadable (first: {listed})")
    if empty:
        problems.append(f"{json_file.name}: {empty} captions are empty")
    split = {"ids": images, "images": images, "captions": len(words), "caption_words": word_stats(words)}
    return {"format": "webperson-json", "root": str(json_file.parent), "splits": {"train": split}, "problems": problems}
