"""One curation run: inputs -> person filter -> captions -> WebPerson shards (docs/method.md, "WebPerson
data construction").

The input is cut into units (:func:`gadms_cli.curate.inputs.plan_units`); each unit becomes one
output shard and is processed start to finish:

1. read and decode its images (RGB, EXIF orientation applied);
2. detect persons in batches and apply the filter rules; cut each kept person out (or keep the
   whole image) and encode it;
3. draw two different templates per person and ask the captioner for one caption per template;
   rejected captions are asked for again (new seed, same template) up to ``caption_attempts``
   times, a person without two accepted captions is dropped (``caption_failed``);
4. write the shard, then the unit's stats file, each atomically.

Resume: a unit whose stats file exists is skipped; any other unit is done again from its start.
Every random choice (templates, captioner seeds) is derived from the run's ``seed`` and the
item's identity, never from the order of work, so a killed and resumed run writes exactly the
bytes an uninterrupted one does (given a captioner that answers the same request the same way:
a seeded server, or the transformers backend).

``num_shards``/``shard_index`` split the units across machines (unit ``u`` goes to machine
``u % num_shards``); machines may share one ``--out`` folder.
"""

from __future__ import annotations

import hashlib
import io
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from gadms_cli import progress
from gadms_cli.curate.captioners import Captioner, ChatRequest
from gadms_cli.curate.detectors import Detector
from gadms_cli.curate.inputs import InputItem, WorkUnit, plan_units, resolve_inputs
from gadms_cli.curate.person_filter import FilterRules, crop_region, select_persons
from gadms_cli.curate.prompts import caption_prompt
from gadms_cli.curate.report import Totals, UnitStats
from gadms_cli.curate.templates import TemplateBank
from gadms_cli.curate.validation import CaptionRules, caption_rejection, clean_caption
from gadms_cli.curate.writer import (
    FORMAT,
    FORMAT_VERSION,
    CuratedRow,
    finished_units,
    manifest_file,
    read_json,
    remove_stale_temporaries,
    settings_file,
    shard_file,
    unit_stats_file,
    write_json,
    write_shard,
)
from gadms_cli.errors import GadmsError

T = TypeVar("T")
_KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # whole images in these formats keep their bytes


@dataclass(frozen=True)
class CurateSettings:
    """Options of a run that are not models.

    ``shard_size``: images (folders) or rows (parquet) per unit; a tar is always one unit.
    ``detect_batch``: images per detector call. ``jpeg_quality``: for crops and re-encoded images.
    """

    out: Path
    rules: FilterRules = FilterRules()
    caption_rules: CaptionRules = CaptionRules()
    shard_size: int = 1000
    seed: int = 0
    caption_attempts: int = 3
    detect_batch: int = 8
    jpeg_quality: int = 95
    num_shards: int = 1
    shard_index: int = 0

    def problem(self) -> str | None:
        """The first invalid setting as a one-line message naming its flag, or None."""
        for problem in (self.rules.problem(), self.caption_rules.problem()):
            if problem is not None:
                return problem
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            return f"--shard-index must be in 0..{self.num_shards - 1} for --num-shards {self.num_shards}, got {self.shard_index}"
        if self.caption_attempts < 1:
            return f"--caption-attempts must be 1 or more, got {self.caption_attempts}"
        if self.detect_batch < 1:
            return f"--batch-size must be 1 or more, got {self.detect_batch}"
        if not 1 <= self.jpeg_quality <= 100:
            return f"--jpeg-quality must be in 1..100, got {self.jpeg_quality}"
        return None


@dataclass
class CurateResult:
    """What a run did: ``run`` sums the units processed now; ``all_units`` every finished unit in ``out``."""

    out: Path
    units_total: int
    units_mine: int
    units_skipped: int
    units_done_now: int
    run: Totals
    all_units: Totals
    manifest: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every unit of the whole input (all machines) is finished."""
        return self.all_units.units == self.units_total


@dataclass
class _Person:
    """A kept person waiting for captions."""

    image: bytes
    image_path: str
    source: str
    item: InputItem
    box: tuple[float, float, float, float] | None
    score: float | None
    template_ids: tuple[int, int]


def derived_seed(*parts: object) -> int:
    """A 31-bit seed from the parts (SHA-256 of their text): stable across runs, machines and Python versions."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _timed(items: Iterable[T], stats: UnitStats, stage: str) -> Iterator[T]:
    """Yield from ``items``, adding the time spent producing each one to ``stats.seconds[stage]``."""
    iterator = iter(items)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            stats.seconds[stage] += time.perf_counter() - start
            return
        stats.seconds[stage] += time.perf_counter() - start
        stats.items[stage] += 1
        yield item


def _safe_key(key: str) -> str:
    """``key`` as a relative path: only letters, digits and ``._-/``, no empty or dot-only parts."""
    cleaned = "".join(char if char.isalnum() or char in "._-/" else "_" for char in key)
    parts = [part if part.strip(".") else "_" for part in cleaned.split("/") if part]
    return "/".join(parts) or "_"


def _label_stem(label: str) -> str:
    for suffix in (".tar", ".parquet"):
        if label.endswith(suffix):
            return label[: -len(suffix)]
    return label


class Curator:
    """Runs the units of one machine; see the module docstring."""

    def __init__(
        self,
        settings: CurateSettings,
        detector: Detector | None,
        captioner: Captioner,
        templates: TemplateBank,
    ) -> None:
        problem = settings.problem()
        if problem is not None:
            raise GadmsError(problem)
        self.settings = settings
        self.detector = detector
        self.captioner = captioner
        self.templates = templates
        self.captioner_model = f"{captioner.backend}:{captioner.model_name}"

    # --- the run --------------------------------------------------------------------------

    def run(self, inputs: list[str]) -> CurateResult:
        settings = self.settings
        out = Path(settings.out)
        units = plan_units(resolve_inputs(inputs), settings.shard_size)
        self._check_settings(out, units)
        mine = [unit for unit in units if unit.index % settings.num_shards == settings.shard_index]
        remove_stale_temporaries(out, {unit.index for unit in mine})
        done = finished_units(out)
        todo = [unit for unit in mine if unit.index not in done]

        run_stats: list[UnitStats] = []
        known = [unit.stop - unit.start for unit in todo if unit.stop is not None]
        with progress.make_progress() as bars:
            unit_bar = bars.add_task("units", total=len(todo), info="")
            image_bar = bars.add_task("images: detect + filter", total=sum(known) if len(known) == len(todo) else None, info="")
            caption_bar = bars.add_task("captions", total=None, info="")
            for unit in todo:
                bars.update(unit_bar, info=f"{unit.source.label} [{unit.start}:{'' if unit.stop is None else unit.stop}]")
                stats = self._process_unit(unit, out, bars, image_bar, caption_bar)
                run_stats.append(stats)
                done[unit.index] = stats
                bars.advance(unit_bar)
                bars.update(caption_bar, info=f"{stats.captions_kept} kept / {stats.caption_requests} asked in the last unit")

        all_totals = Totals.of([done[index] for index in sorted(done)])
        result = CurateResult(
            out=out,
            units_total=len(units),
            units_mine=len(mine),
            units_skipped=len(mine) - len(todo),
            units_done_now=len(todo),
            run=Totals.of(run_stats),
            all_units=all_totals,
        )
        result.manifest = self._manifest(result, done)
        write_json(manifest_file(out), result.manifest)
        return result

    def settings_record(self, units: list[WorkUnit]) -> dict:
        """Everything that shapes the output; a resumed run must match it (machine split excluded)."""
        settings = self.settings
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "inputs": [unit.source.fingerprint() for unit in units if unit.start == 0],
            "units": len(units),
            "shard_size": settings.shard_size,
            "seed": settings.seed,
            "rules": asdict(settings.rules),
            "caption_rules": asdict(settings.caption_rules),
            "caption_attempts": settings.caption_attempts,
            "jpeg_quality": settings.jpeg_quality,
            "detector": None if self.detector is None else {"name": self.detector.name, "weights": self.detector.identity},
            "captioner": self.captioner.identity,
            "templates": {"count": len(self.templates), "sha256": self.templates.sha256},
        }

    def _check_settings(self, out: Path, units: list[WorkUnit]) -> None:
        record = self.settings_record(units)
        path = settings_file(out)
        if path.is_file():
            previous = read_json(path)
            changed = sorted(key for key in set(record) | set(previous) if record.get(key) != previous.get(key))
            if changed:
                raise GadmsError(
                    f"{out} holds a curation run with other settings ({', '.join(changed)} differ, see {path}); "
                    f"resume with the same settings or pass a new --out"
                )
            return
        # `curate/` alone may be another machine writing the same settings at this moment.
        if out.is_dir() and any(path.name != "curate" for path in out.iterdir()):
            raise GadmsError(f"--out {out} is not empty and holds no curation run ({path} missing); pass a new or empty folder")
        write_json(path, record)

    def _manifest(self, result: CurateResult, done: dict[int, UnitStats]) -> dict:
        out = result.out
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "complete": result.complete,
            "units": {"total": result.units_total, "finished": result.all_units.units},
            "shards": [
                {"file": shard_file(out, index).relative_to(out).as_posix(), "rows": done[index].rows, "source": done[index].source}
                for index in sorted(done)
            ],
            "counts": result.all_units.counts_json(),
            "timing": result.all_units.timing_json(),
            "captions_per_second": result.all_units.captions_per_second,
            "settings": "curate/settings.json",
        }

    # --- one unit -------------------------------------------------------------------------

    def _process_unit(self, unit: WorkUnit, out: Path, bars, image_bar, caption_bar) -> UnitStats:
        stats = UnitStats(unit=unit.index, source=unit.source.label)
        persons: list[_Person] = []
        items = _timed(unit.source.read(unit.start, unit.stop), stats, "read")
        for batch in _batched(items, self.settings.detect_batch):
            persons.extend(self._filter_batch(unit, batch, stats))
            bars.advance(image_bar, len(batch))
        rows = self._caption(persons, stats, bars, caption_bar)

        start = time.perf_counter()
        write_shard(shard_file(out, unit.index), rows)
        stats.rows = len(rows)
        stats.items["write"] = len(rows)
        stats.seconds["write"] = time.perf_counter() - start
        write_json(unit_stats_file(out, unit.index), stats.to_json())
        return stats

    def _filter_batch(self, unit: WorkUnit, batch: list[InputItem], stats: UnitStats) -> list[_Person]:
        from PIL import Image, ImageOps

        stats.images_in += len(batch)
        start = time.perf_counter()
        decoded = []
        for item in batch:
            stats.items["decode"] += 1
            try:
                data = item.read_bytes()
                image = Image.open(io.BytesIO(data))
                image_format = image.format
                upright = ImageOps.exif_transpose(image).convert("RGB")
            except Exception:  # PIL raises many types for damaged or hostile files (incl. DecompressionBombError)
                stats.dropped["decode_error"] += 1
                continue
            rotated = upright.size != image.size or image.getexif().get(0x0112, 1) != 1
            decoded.append((item, data, upright, image_format, rotated))
        stats.seconds["decode"] += time.perf_counter() - start

        start = time.perf_counter()
        detections = self.detector.detect([entry[2] for entry in decoded]) if self.detector is not None else None
        stats.seconds["detect"] += time.perf_counter() - start
        stats.items["detect"] += len(decoded) if self.detector is not None else 0

        start = time.perf_counter()
        persons = []
        rules = self.settings.rules
        for position, (item, data, image, image_format, rotated) in enumerate(decoded):
            stem = f"{_label_stem(unit.source.label)}/{_safe_key(item.key)}"
            source = f"{unit.source.label}#{item.key}"
            if detections is None:
                chosen = [(None, None)]
            else:
                selection = select_persons(detections[position], rules)
                if selection.rejection is not None:
                    stats.dropped[selection.rejection] += 1
                    continue
                chosen = [(person.box, person.score) for person in selection.persons]
            for rank, (box, score) in enumerate(chosen):
                if box is not None and rules.crop == "box":
                    encoded = self._encode(image.crop(crop_region(box, image.size, rules.margin)))
                    image_path, person_source = f"{stem}_p{rank}.jpg", f"{source}#p{rank}"
                elif image_format in _KEPT_FORMATS and not rotated:
                    encoded, image_path, person_source = data, f"{stem}.{_KEPT_FORMATS[image_format]}", source
                else:
                    encoded, image_path, person_source = self._encode(image), f"{stem}.jpg", source
                templates = tuple(random.Random(f"gadms-curate:{self.settings.seed}:templates:{person_source}").sample(range(len(self.templates)), 2))
                persons.append(_Person(encoded, image_path, person_source, item, box, score, templates))  # type: ignore[arg-type]
                if box is None or rules.crop == "image":
                    break  # the whole image is kept once, however many persons it holds
        stats.seconds["filter"] += time.perf_counter() - start
        stats.items["filter"] += len(decoded)
        return persons

    def _encode(self, image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=self.settings.jpeg_quality)
        return buffer.getvalue()

    def _caption(self, persons: list[_Person], stats: UnitStats, bars, caption_bar) -> list[CuratedRow]:
        start = time.perf_counter()
        captions: list[list[str | None]] = [[None, None] for _ in persons]
        pending = [(index, slot) for index in range(len(persons)) for slot in (0, 1)]
        for attempt in range(self.settings.caption_attempts):
            if not pending:
                break
            requests = []
            for index, slot in pending:
                person = persons[index]
                template = self.templates[person.template_ids[slot]]
                seed = derived_seed("gadms-curate", self.settings.seed, "caption", person.source, slot, attempt)
                requests.append(ChatRequest(caption_prompt(template), person.image, seed))
            replies = self.captioner.generate(requests)
            stats.caption_requests += len(requests)
            bars.advance(caption_bar, len(requests))
            still_pending = []
            for (index, slot), reply in zip(pending, replies):
                template = self.templates[persons[index].template_ids[slot]]
                text = clean_caption(reply.text or "")
                reason = reply.problem or caption_rejection(text, template, self.settings.caption_rules)
                if reason is None and text == captions[index][1 - slot]:
                    reason = "duplicate"
                if reason is None:
                    captions[index][slot] = text
                else:
                    stats.caption_rejections[reason] += 1
                    still_pending.append((index, slot))
            pending = still_pending

        rows = []
        for person, (caption1, caption2) in zip(persons, captions):
            if caption1 is None or caption2 is None:
                stats.dropped["caption_failed"] += 1
                continue
            rows.append(
                CuratedRow(
                    image=person.image,
                    image_path=person.image_path,
                    caption1=caption1,
                    caption2=caption2,
                    source=person.source,
                    source_caption=person.item.text,
                    url=person.item.url,
                    box=person.box,
                    detector=None if self.detector is None else self.detector.name,
                    detector_score=person.score,
                    template_id1=person.template_ids[0],
                    template_id2=person.template_ids[1],
                    captioner_model=self.captioner_model,
                )
            )
        stats.captions_kept = 2 * len(rows)
        stats.items["caption"] = len(persons)
        stats.seconds["caption"] = time.perf_counter() - start
        return rows


def curate(
    inputs: list[str],
    settings: CurateSettings,
    *,
    detector: Detector | None,
    captioner: Captioner,
    templates: TemplateBank,
) -> CurateResult:
    """Run (or resume) curation of ``inputs`` into ``settings.out``; see the module docstring."""
    return Curator(settings, detector, captioner, templates).run(inputs)
