"""Generating a SketchPedes benchmark folder: identities, images, captions, files.

Randomness is split into independent, named streams so that every image can
be made on its own (``--workers N`` draws images in parallel and gets the same
bytes as one worker):

- ``identity:{pid}:{attempt}``  the attributes of each identity;
- ``image:{index}``             background, pose, lighting and noise of image ``index``;
- ``caption:{index}``           the two clean captions of image ``index``;
- ``noise-selection``           which train captions are corrupted (exactly round(noise * N));
- ``noise:{index}:{k}``         how caption ``k`` of image ``index`` is corrupted.

Images and clean captions therefore do not depend on ``--noise``: runs with
the same seed and different noise levels differ only in the corrupted captions.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from gadms_cli.data.synth.attributes import Identity, parse_requirement, sample_identities
from gadms_cli.data.synth.caption_noise import CaptionRecord, corrupt_caption
from gadms_cli.data.synth.captions import TEMPLATES, CaptionMix, CaptionPlan, CaptionView, processed_tokens, render_caption
from gadms_cli.data.synth.render import render_image
from gadms_cli.data.synth.writer import shard_path, write_image, write_json, write_jsonl, write_reid_raw, write_webperson_shard
from gadms_cli.errors import GadmsError
from gadms_cli.progress import track

SPLITS: tuple[str, ...] = ("train", "val", "test")
FORMAT_VERSION = 1
# What a generation writes; --overwrite removes exactly these before writing.
OUTPUT_NAMES: tuple[str, ...] = ("imgs", "webperson", "reid_raw.json", "attributes.jsonl", "sketchpedes.json")


@dataclass(frozen=True)
class SynthConfig:
    """Options of one generation (defaults: the quick demo set, about 3,800 images).

    ``height``/``width`` are the image size in pixels; ``noise`` is the fraction
    of TRAIN captions corrupted (val/test captions are always clean);
    ``shard_rows`` is the number of train images per WebPerson parquet shard.
    ``caption_mix`` (e.g. ``"full=0.5,partial=0.3,short=0.2"``; default all full) says how often a TRAIN
    caption describes the whole outfit, a few attributes, or reads like a short
    query (val/test captions are always full, so each names exactly one person);
    ``twin_fraction`` (default 0) of the identities of each split share the clothes of an
    earlier identity of that split and differ only in gender, hair, hat or bag;
    ``test_include`` (``"gender=female,top.type=coat,top.colour=red"``) makes the
    first ``test_include_count`` test identities match it.
    """

    train_ids: int = 800
    val_ids: int = 50
    test_ids: int = 100
    images_per_id: int = 4
    height: int = 384
    width: int = 128
    seed: int = 0
    noise: float = 0.0
    workers: int = 1
    jpeg_quality: int = 90
    shard_rows: int = 10_000
    caption_mix: str = "full=1"
    twin_fraction: float = 0.0
    test_include: str = ""
    test_include_count: int = 3

    def validate(self) -> None:
        """Raise GadmsError naming the flag of the first bad option."""
        for flag, value in (("--train-ids", self.train_ids), ("--val-ids", self.val_ids), ("--test-ids", self.test_ids)):
            if value < 0:
                raise GadmsError(f"{flag} must be 0 or more, got {value}")
        if self.train_ids + self.val_ids + self.test_ids == 0:
            raise GadmsError("--train-ids, --val-ids and --test-ids are all 0; ask for at least one identity")
        if self.images_per_id < 1:
            raise GadmsError(f"--images-per-id must be 1 or more, got {self.images_per_id}")
        if self.height < 48 or self.width < 16:
            raise GadmsError(f"--height must be >= 48 and --width >= 16 (a person must fit), got {self.height}x{self.width}")
        if self.width > 4 * self.height:
            raise GadmsError(f"--width {self.width} is more than 4x --height {self.height}; pedestrian images are tall")
        if not 0.0 <= self.noise <= 1.0:
            raise GadmsError(f"--noise is a fraction of train captions, between 0 and 1; got {self.noise}")
        if self.workers < 1:
            raise GadmsError(f"--workers must be 1 or more, got {self.workers}")
        if not 1 <= self.jpeg_quality <= 100:
            raise GadmsError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.shard_rows < 1:
            raise GadmsError(f"shard_rows must be 1 or more, got {self.shard_rows}")
        CaptionMix.parse(self.caption_mix)
        if not 0.0 <= self.twin_fraction <= 1.0:
            raise GadmsError(f"--twin-fraction is a fraction of identities, between 0 and 1; got {self.twin_fraction}")
        if self.test_include:
            parse_requirement(self.test_include)
            if not 1 <= self.test_include_count <= self.test_ids:
                raise GadmsError(f"--test-include-count must be between 1 and --test-ids ({self.test_ids}), got {self.test_include_count}")


@dataclass(frozen=True)
class ImageJob:
    """Everything needed to make image ``index`` (global position in the output, train first)."""

    index: int
    split: str
    identity: Identity
    file_path: str
    corrupt: tuple[bool, bool]  # per caption: is it to be corrupted


@dataclass(frozen=True)
class ImageResult:
    """One finished image: its reid_raw.json record, attributes.jsonl line and (train) JPEG bytes."""

    record: dict
    attributes: dict
    jpeg: bytes | None


@dataclass
class SynthSummary:
    """What a generation wrote. ``counts[split]`` has ``ids``, ``images`` and ``captions``."""

    out_dir: Path
    counts: dict[str, dict[str, int]]
    corrupted_captions: int
    corruption_kinds: dict[str, int]
    parquet_files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images(self) -> int:
        return sum(split["images"] for split in self.counts.values())

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def _stream(seed: int, name: str) -> random.Random:
    """A named random stream; string seeds are hashed (SHA-512) so they are stable across runs."""
    return random.Random(f"sketchpedes:{seed}:{name}")


def plan_jobs(config: SynthConfig) -> list[ImageJob]:
    """All image jobs in output order: split (train, val, test), then id, then shot."""
    split_sizes = {"train": config.train_ids, "val": config.val_ids, "test": config.test_ids}
    total_ids = sum(split_sizes.values())
    first_test_pid = 1 + config.train_ids + config.val_ids
    required = {}
    if config.test_include:
        requirement = parse_requirement(config.test_include)
        required = {pid: requirement for pid in range(first_test_pid, first_test_pid + config.test_include_count)}
    blocks = tuple(split_sizes[split] for split in SPLITS)
    identities = sample_identities(config.seed, total_ids, 1, config.twin_fraction, blocks, required)
    id_digits = max(4, len(str(total_ids)))
    shot_digits = max(2, len(str(config.images_per_id)))

    train_captions = 2 * config.train_ids * config.images_per_id
    corrupted = set(_stream(config.seed, "noise-selection").sample(range(train_captions), round(config.noise * train_captions)))

    jobs: list[ImageJob] = []
    position = 0
    for split in SPLITS:
        for identity in identities[position : position + split_sizes[split]]:
            for shot in range(config.images_per_id):
                index = len(jobs)
                file_path = f"{split}/{identity.pid:0{id_digits}d}_{shot + 1:0{shot_digits}d}.jpg"
                flags = (2 * index in corrupted, 2 * index + 1 in corrupted) if split == "train" else (False, False)
                jobs.append(ImageJob(index, split, identity, file_path, flags))
        position += split_sizes[split]
    return jobs


@lru_cache(maxsize=8)
def caption_mix(text: str) -> CaptionMix:
    """``SynthConfig.caption_mix`` parsed (once per distinct text, not once per image)."""
    return CaptionMix.parse(text)


def make_captions(job: ImageJob, seed: int, mix: CaptionMix) -> list[CaptionRecord]:
    """The two captions of an image, corrupted where the job says so.

    Train captions draw their style from ``mix``; val and test captions are full. The two
    captions use different templates (full style) and different word choices.
    """
    rng = _stream(seed, f"caption:{job.index}")
    view = CaptionView.of(job.identity)
    captions = []
    for k, template in enumerate(rng.sample(range(len(TEMPLATES)), 2)):
        style = mix.draw(rng) if job.split == "train" else "full"
        plan = CaptionPlan.sample(template, rng, style)
        clean = render_caption(plan, view)
        if job.corrupt[k]:
            record = corrupt_caption(plan, view, clean, _stream(seed, f"noise:{job.index}:{k}"))
        else:
            record = CaptionRecord(clean.text, clean.text)
        captions.append(replace(record, style=style, mentions=clean.mentions, colours_named=clean.colour_slots))
    return captions


def make_image(job: ImageJob, config: SynthConfig, out_dir: Path) -> ImageResult:
    """Draw, encode and write image ``job``; return its annotation entries."""
    rendered = render_image(job.identity, config.width, config.height, _stream(config.seed, f"image:{job.index}"), config.seed)
    buffer = io.BytesIO()
    rendered.image.save(buffer, "JPEG", quality=config.jpeg_quality)
    jpeg = buffer.getvalue()
    write_image(out_dir / "imgs" / job.file_path, jpeg)

    captions = make_captions(job, config.seed, caption_mix(config.caption_mix))
    texts = [caption.text for caption in captions]
    record = {
        "split": job.split,
        "captions": texts,
        "file_path": job.file_path,
        "id": job.identity.pid,
        "processed_tokens": [processed_tokens(text) for text in texts],
    }
    attributes = {
        "file_path": job.file_path,
        "split": job.split,
        "id": job.identity.pid,
        "image_index": job.index,
        "attributes": job.identity.captioned_dict(),
        "captions": [caption.to_json() for caption in captions],
        "boxes": rendered.boxes,
        "jitter": rendered.jitter,
    }
    return ImageResult(record, attributes, jpeg if job.split == "train" else None)


def _make_chunk(jobs: list[ImageJob], config: SynthConfig, out_dir: Path) -> list[ImageResult]:
    return [make_image(job, config, out_dir) for job in jobs]


def _results(jobs: list[ImageJob], config: SynthConfig, out_dir: Path) -> Iterator[ImageResult]:
    """Results in job order, made here (one worker) or by a pool of processes."""
    if config.workers == 1:
        for job in jobs:
            yield make_image(job, config, out_dir)
        return
    chunk = 32
    chunks = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    # spawn: workers start clean (no forked locks or threads from the parent).
    with ProcessPoolExecutor(config.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for results in pool.map(_make_chunk, chunks, [config] * len(chunks), [out_dir] * len(chunks)):
            yield from results


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise GadmsError(f"--out {out_dir} is a file; choose a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise GadmsError(f"--out {out_dir} is not empty; pass --overwrite to replace a previous SketchPedes there, or choose another folder")
        for name in OUTPUT_NAMES:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def generate_sketchpedes(out_dir: str | Path, config: SynthConfig | None = None, overwrite: bool = False) -> SynthSummary:
    """Generate SketchPedes into ``out_dir`` and return what was written.

    Writes ``imgs/{split}/{id}_{shot}.jpg``, ``reid_raw.json``, ``attributes.jsonl``,
    ``webperson/data/train-*.parquet`` and ``sketchpedes.json`` (the options
    used). Refuses a non-empty ``out_dir`` unless ``overwrite``, which removes
    only those outputs of an earlier generation. Same config -> byte-identical
    annotation files and images.
    """
    config = config or SynthConfig()
    config.validate()
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    start = time.perf_counter()

    jobs = plan_jobs(config)
    train_images = sum(job.split == "train" for job in jobs)
    shard_count = math.ceil(train_images / config.shard_rows)
    records: list[dict] = []
    attribute_lines: list[dict] = []
    shard_rows: list[tuple[bytes, str, str, str]] = []
    parquet_files: list[Path] = []
    kinds: dict[str, int] = {}
    corrupted = 0

    for result in track(_results(jobs, config, out_dir), "Drawing SketchPedes", total=len(jobs)):
        records.append(result.record)
        attribute_lines.append(result.attributes)
        for caption in result.attributes["captions"]:
            corrupted += caption["corrupted"]
            for kind in caption["kinds"]:
                kinds[kind] = kinds.get(kind, 0) + 1
        if result.jpeg is not None:
            captions = result.record["captions"]
            shard_rows.append((result.jpeg, result.record["file_path"], captions[0], captions[1]))
            if len(shard_rows) == config.shard_rows:
                parquet_files.append(shard_path(out_dir, len(parquet_files), shard_count))
                write_webperson_shard(parquet_files[-1], shard_rows)
                shard_rows = []
    if shard_rows:
        parquet_files.append(shard_path(out_dir, len(parquet_files), shard_count))
        write_webperson_shard(parquet_files[-1], shard_rows)

    counts = {
        split: {
            "ids": len({job.identity.pid for job in jobs if job.split == split}),
            "images": sum(job.split == split for job in jobs),
            "captions": 2 * sum(job.split == split for job in jobs),
        }
        for split in SPLITS
    }
    write_jsonl(out_dir / "attributes.jsonl", attribute_lines)
    write_reid_raw(out_dir / "reid_raw.json", records)
    manifest = {
        "generator": "gadms synth (SketchPedes)",
        "format_version": FORMAT_VERSION,
        "config": {key: value for key, value in asdict(config).items() if key != "workers"},
        "counts": counts,
        "corrupted_train_captions": corrupted,
        "corruption_kinds": dict(sorted(kinds.items())),
        "webperson_shards": [str(path.relative_to(out_dir)) for path in parquet_files],
    }
    write_json(out_dir / "sketchpedes.json", manifest)
    return SynthSummary(out_dir, counts, corrupted, dict(sorted(kinds.items())), parquet_files, time.perf_counter() - start)
