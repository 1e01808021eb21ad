"""Readers for CUHK-PEDES, ICFG-PEDES and RSTPReid, read exactly as their authors ship them.

Each benchmark is one JSON list of per-image records plus an ``imgs/`` folder beside it
(docs/data-formats.md). The format is recognised from the annotation file's name:

==============  ===============================================  ==============  ===================
format          annotation file                                  image key       splits
==============  ===============================================  ==============  ===================
``cuhk-pedes``  ``reid_raw.json``                                ``file_path``   train / val / test
``icfg-pedes``  ``ICFG-PEDES.json`` (or ``ICFG_PEDES.json``)     ``file_path``   train / test
``rstpreid``    ``data_captions.json``                           ``img_path``    train / val / test
==============  ===============================================  ==============  ===================

Image paths are relative to ``imgs/``; paths that would leave the dataset folder are
rejected. Reading is two passes: the annotation pass (JSON + light validation, well under
2 s for CUHK-PEDES) and an optional image pass that opens every image file and checks its
first bytes (``check_images``). Finding the folder and checking one image file live in
``benchmark_files.py``.

Identities: training splits remap raw ids to 0..N-1 in sorted raw-id order (so the same
file always gives the same labels); evaluation splits keep the raw ids of the file.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from gadms_cli.data.benchmark_files import BENCHMARK_DIRS, DOWNLOAD_PAGES, IMAGE_DIR, KNOWN_SPLITS, _annotation_of, image_problem
from gadms_cli.data.records import EvalSplit, TrainSample
from gadms_cli.errors import GadmsError
from gadms_cli.progress import track

_IMAGE_KEY: dict[str, str] = {"cuhk-pedes": "file_path", "icfg-pedes": "file_path", "rstpreid": "img_path"}
_SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test")
_LISTED = 3  # how many examples one-line messages list


@dataclass
class BenchmarkImage:
    """One image of a split: its raw identity, its path relative to ``imgs/`` and its captions.

    ``record_index`` is the position of its (first) record in the annotation list, for messages.
    """

    raw_id: int
    relative_path: str
    captions: list[str]
    record_index: int


@dataclass
class Benchmark:
    """A benchmark read from its folder: per-split image lists plus what looked wrong.

    ``problems`` holds non-fatal warnings (odd captions, skipped images); ``skipped_images``
    the full list of images dropped with ``skip_missing=True``.
    """

    format: str
    root: Path
    annotation_file: Path
    image_dir: Path
    images_by_split: dict[str, list[BenchmarkImage]]
    problems: list[str] = field(default_factory=list)
    skipped_images: list[Path] = field(default_factory=list)

    @property
    def split_names(self) -> list[str]:
        """Splits present in the file: train, val, test first (in that order), then any others sorted."""
        known = [name for name in _SPLIT_ORDER if name in self.images_by_split]
        others = sorted(name for name in self.images_by_split if name not in _SPLIT_ORDER)
        return known + others

    def images(self, split: str) -> list[BenchmarkImage]:
        """The images of ``split`` in annotation-file order."""
        if split not in self.images_by_split:
            raise GadmsError(
                f"{self.annotation_file}: {BENCHMARK_DIRS[self.format]} has no '{split}' split "
                f"(splits here: {', '.join(self.split_names) or 'none'}); pick one of those"
            )
        return self.images_by_split[split]

    def train_samples(self, split: str = "train") -> list[TrainSample]:
        """One sample per caption of ``split``; ``pid`` is the raw id remapped to 0..N-1 by sorted raw id."""
        images = self.images(split)
        pid_of = {raw_id: pid for pid, raw_id in enumerate(sorted({image.raw_id for image in images}))}
        return [
            TrainSample(
                pid=pid_of[image.raw_id],
                raw_pid=image.raw_id,
                image_index=image_index,
                image_path=self.image_dir / image.relative_path,
                caption=caption,
            )
            for image_index, image in enumerate(images)
            for caption in image.captions
        ]

    @property
    def num_train_ids(self) -> int:
        """Number of identities of the train split (the size of the ID classifier)."""
        return len({image.raw_id for image in self.images("train")})

    def eval_split(self, name: str) -> EvalSplit:
        """Every caption of ``name`` as a query (raw id), every image of ``name`` in the gallery (raw id)."""
        split = EvalSplit(name=name)
        for image_index, image in enumerate(self.images(name)):
            split.gallery_paths.append(self.image_dir / image.relative_path)
            split.gallery_ids.append(image.raw_id)
            for caption in image.captions:
                split.queries.append(caption)
                split.query_ids.append(image.raw_id)
                split.query_image_index.append(image_index)
        return split

    def stats(self) -> dict:
        """Per split: ``{"ids", "images", "captions", "caption_words": {"mean", "min", "max"}}``.

        Words are whitespace-separated tokens of a caption.
        """
        result = {}
        for name in self.split_names:
            images = self.images_by_split[name]
            words = [len(caption.split()) for image in images for caption in image.captions]
            result[name] = {
                "ids": len({image.raw_id for image in images}),
                "images": len(images),
                "captions": len(words),
                "caption_words": word_stats(words),
            }
        return result


def word_stats(word_counts: list[int]) -> dict:
    """``{"mean", "min", "max"}`` of a list of per-caption word counts (zeros when empty)."""
    if not word_counts:
        return {"mean": 0.0, "min": 0, "max": 0}
    return {
        "mean": round(sum(word_counts) / len(word_counts), 2),
        "min": min(word_counts),
        "max": max(word_counts),
    }


# --- reading ------------------------------------------------------------------------


def path_escape_reason(relative: str) -> str | None:
    """Why ``relative`` (a path from an annotation file) would leave its base folder, or None if it stays inside."""
    if not relative:
        return "is empty"
    if "\x00" in relative:
        return "holds a NUL byte"
    if relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        return "is absolute"
    if ".." in relative and ".." in relative.replace("\\", "/").split("/"):
        return "goes up with '..'"
    return None


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: parsing creates ~1M small objects and no cycles,
    and the collector rescanning them repeatedly doubled the reading time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_json(path: Path, fmt: str):
    try:
        return json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise GadmsError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); the file is damaged "
            f"or truncated: download it again from {DOWNLOAD_PAGES[fmt]}"
        ) from None
    except UnicodeDecodeError:
        raise GadmsError(f"{path}: not UTF-8 JSON text; download it again from {DOWNLOAD_PAGES[fmt]}") from None
    except OSError as exc:
        raise GadmsError(f"{path}: cannot read it ({exc.strerror}); check that the file is readable") from None


def _record_error(path: Path, fmt: str, index: int, detail: str) -> GadmsError:
    return GadmsError(
        f"{path}: record {index} {detail}; fix that record or download the file again from {DOWNLOAD_PAGES[fmt]}"
    )


def _parse_records(data, path: Path, fmt: str, clean: bool = False) -> tuple[dict[str, list[BenchmarkImage]], list[str]]:
    """Validate the records and group them by split (annotation order kept); return (splits, warnings).

    By default every record counts as IRRA's readers count it: a record repeating an image of its
    split is another gallery entry, and an empty caption is still a caption (a query). ``clean``
    merges a repeated image's captions into its first record and drops empty captions."""
    if not isinstance(data, list):
        raise GadmsError(
            f"{path}: expected a JSON list of per-image records, found a JSON {type(data).__name__}; "
            f"download the file again from {DOWNLOAD_PAGES[fmt]}"
        )
    if not data:
        raise GadmsError(f"{path}: the annotation file holds no records (an empty list); download it again from {DOWNLOAD_PAGES[fmt]}")
    image_key = _IMAGE_KEY[fmt]
    required = ("split", "captions", image_key, "id")
    splits: dict[str, list[BenchmarkImage]] = {}
    position: dict[tuple[str, str], int] = {}  # (split, relative path) -> index in its split list
    warnings: list[str] = []
    merged: list[int] = []
    empty_captions: list[int] = []
    no_captions: list[int] = []

    for index, record in enumerate(data):
        if type(record) is not dict:
            raise _record_error(path, fmt, index, f"is a JSON {type(record).__name__}, not an object")
        try:
            split = record["split"]
            captions = record["captions"]
            relative = record[image_key]
            raw_id = record["id"]
        except KeyError as exc:
            key = exc.args[0]
            hint = ""
            if key == "split" and fmt == "cuhk-pedes":
                hint = " (records without 'split' are caption_all.json content: use reid_raw.json)"
            raise _record_error(path, fmt, index, f"has no '{key}' key{hint} (each record needs {', '.join(required)})")
        if type(raw_id) is not int:
            if isinstance(raw_id, str) and raw_id.isdigit():
                raw_id = int(raw_id)
            else:
                raise _record_error(path, fmt, index, f"key 'id' is {raw_id!r}, not an integer")
        if type(split) is not str:
            raise _record_error(path, fmt, index, f"key 'split' is {split!r}, not a string")
        if split not in KNOWN_SPLITS:
            raise _record_error(path, fmt, index, f"key 'split' is {split!r}; it must be one of {', '.join(KNOWN_SPLITS)}")
        if type(captions) is not list or not all(type(caption) is str for caption in captions):
            raise _record_error(path, fmt, index, "key 'captions' is not a list of strings")
        if type(relative) is not str:
            raise _record_error(path, fmt, index, f"key '{image_key}' is {relative!r}, not a string")
        reason = path_escape_reason(relative)
        if reason is not None:
            raise GadmsError(
                f"{path}: record {index} key '{image_key}' {relative!r} {reason}; image paths must stay inside "
                f"{path.parent / IMAGE_DIR}: fix the record"
            )
        if "\\" in relative:
            relative = relative.replace("\\", "/")

        kept = [caption.strip() for caption in captions] if clean else list(captions)
        if not kept:
            no_captions.append(index)
        elif not all(caption.strip() for caption in kept):
            empty_captions.append(index)
            if clean:
                kept = [caption for caption in kept if caption]

        split_images = splits.setdefault(split, [])
        seen_at = position.get((split, relative))
        if seen_at is None:
            position[(split, relative)] = len(split_images)
            split_images.append(BenchmarkImage(raw_id, relative, kept, index))
            continue
        first = split_images[seen_at]
        if first.raw_id != raw_id:
            raise GadmsError(
                f"{path}: records {first.record_index} and {index} give image {relative!r} two ids "
                f"({first.raw_id} and {raw_id}); fix one of the records"
            )
        merged.append(index)
        if clean:
            first.captions.extend(kept)
        else:
            split_images.append(BenchmarkImage(raw_id, relative, kept, index))

    if merged:
        done = "their captions were merged into the first record" if clean else (
            "each is kept as another gallery image, as IRRA counts them (--clean-annotations merges them)")
        warnings.append(
            f"{path.name}: {len(merged)} records repeat an image already listed in the same split "
            f"(records {_first(merged)}); {done}"
        )
    if empty_captions:
        done = "the empty captions were dropped" if clean else "kept as queries, as IRRA counts them (--clean-annotations drops them)"
        warnings.append(
            f"{path.name}: {len(empty_captions)} records have empty captions (records {_first(empty_captions)}); {done}"
        )
    if no_captions:
        warnings.append(
            f"{path.name}: {len(no_captions)} records have no caption at all (records {_first(no_captions)}); "
            "their images stay in the gallery but give no query"
        )
    warnings.extend(_caption_warnings(splits, path))
    return splits, warnings


def _first(items: list, count: int = _LISTED) -> str:
    shown = ", ".join(str(item) for item in items[:count])
    return shown + (f", ... {len(items) - count} more" if len(items) > count else "")


def _caption_warnings(splits: dict[str, list[BenchmarkImage]], path: Path) -> list[str]:
    """Non-fatal caption oddities (RSTPReid has both): non-ASCII text, the same text twice."""
    non_ascii: list[int] = []
    repeated_in_record: list[int] = []
    repeated_across: list[int] = []
    for images in splits.values():
        owner: dict[str, int] = {}  # caption -> record index of the first image that has it
        for image in images:
            if len(set(image.captions)) < len(image.captions):
                repeated_in_record.append(image.record_index)
            for caption in image.captions:
                if not caption.isascii():
                    non_ascii.append(image.record_index)
                first = owner.setdefault(caption, image.record_index)
                if first != image.record_index:
                    repeated_across.append(image.record_index)
    warnings = []
    if non_ascii:
        warnings.append(
            f"{path.name}: {len(non_ascii)} captions contain non-ASCII characters (records {_first(non_ascii)}); "
            f"kept as is"
        )
    if repeated_in_record:
        warnings.append(
            f"{path.name}: {len(repeated_in_record)} records list the same caption twice "
            f"(records {_first(repeated_in_record)}); kept as is (each copy is a query)"
        )
    if repeated_across:
        warnings.append(
            f"{path.name}: {len(repeated_across)} captions repeat the caption of another image of the same split "
            f"(records {_first(repeated_across)}); kept as is"
        )
    return warnings


def _check_images(bench: Benchmark, skip_missing: bool, splits: Sequence[str] | None = None, decode: bool = False) -> None:
    """The image pass over ``splits`` (default all): find bad image files; raise, or drop them and
    record them when ``skip_missing``. ``decode``: decode every image (see :func:`image_problem`)."""
    if not bench.image_dir.is_dir():
        raise GadmsError(
            f"{bench.image_dir}: no image folder; unpack the {BENCHMARK_DIRS[bench.format]} images there "
            f"(beside {bench.annotation_file.name}) from {DOWNLOAD_PAGES[bench.format]}"
        )
    checked = {split: images for split, images in bench.images_by_split.items() if splits is None or split in splits}
    total = sum(len(images) for images in checked.values())
    bad: list[tuple[str, str, str]] = []  # (split, relative path, reason)
    all_images = ((split, image) for split, images in checked.items() for image in images)
    for split, image in track(all_images, "decoding images" if decode else "checking images", total=total):
        reason = image_problem(bench.image_dir / image.relative_path, decode)
        if reason is not None:
            bad.append((split, image.relative_path, reason))
    if not bad:
        return
    listed = "; ".join(f"{relative} ({reason})" for _, relative, reason in bad[:_LISTED])
    if not skip_missing:
        raise GadmsError(
            f"{bench.annotation_file}: {len(bad)} of {total} images are missing or unreadable under "
            f"{bench.image_dir} (first: {listed}); restore them, or pass --skip-missing (skip_missing=True) to skip them"
        )
    dropped = {(split, relative) for split, relative, _ in bad}
    for split, images in bench.images_by_split.items():
        bench.images_by_split[split] = [image for image in images if (split, image.relative_path) not in dropped]
    bench.skipped_images.extend(bench.image_dir / relative for _, relative, _ in bad)
    bench.problems.append(
        f"skipped {len(bad)} of {total} images that are missing or unreadable under {bench.image_dir} "
        f"(with their captions); first: {listed}"
    )


def load_benchmark(
    root: Path,
    *,
    skip_missing: bool = False,
    check_images: bool = True,
    splits: Sequence[str] | None = None,
    decode: bool = False,
    clean: bool = False,
) -> Benchmark:
    """Read the benchmark in ``root`` (the folder holding the annotation file and ``imgs/``).

    ``check_images`` runs the image pass (open each image, check its signature; with
    ``decode``, decode it whole) over the images of ``splits`` (default: all); bad images
    raise a GadmsError listing the first few, or are dropped (with their captions) and
    listed in ``problems`` / ``skipped_images`` when ``skip_missing``. Records count as in IRRA
    (a repeated image is another gallery entry, an empty caption a query) unless ``clean``.
    """
    root = Path(os.path.abspath(Path(root).expanduser()))
    fmt, annotation_file = _annotation_of(root)
    with _gc_paused():
        images_by_split, warnings = _parse_records(_read_json(annotation_file, fmt), annotation_file, fmt, clean)
    bench = Benchmark(
        format=fmt,
        root=root,
        annotation_file=annotation_file,
        image_dir=root / IMAGE_DIR,
        images_by_split=images_by_split,
        problems=warnings,
    )
    if check_images:
        _check_images(bench, skip_missing, splits, decode)
    return bench
