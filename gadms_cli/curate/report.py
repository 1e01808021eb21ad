"""Counting what a curation run did: per unit, summed over units, and as speeds per stage.

Stages, in the order an image meets them:

=========  ===================================================  ==============================
stage      work                                                  counted items
=========  ===================================================  ==============================
read       reading the source (tar member, parquet row, file)    images read
decode     decoding to RGB (EXIF orientation applied)            images read
detect     the person detector                                   images decoded
filter     the rules, cropping, JPEG encoding of the crops       images decoded
caption    generating, checking and retrying captions            persons captioned (2 captions)
write      the parquet shard and the unit's stats file           rows written
=========  ===================================================  ==============================
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

STAGES: tuple[str, ...] = ("read", "decode", "detect", "filter", "caption", "write")


@dataclass
class Counts:
    """What curation counts, for one unit or summed over units.

    ``dropped`` counts images (or persons, for caption failures) by reason: ``decode_error``,
    a filter rejection (see ``person_filter.IMAGE_REJECTIONS``) or ``caption_failed``;
    ``caption_rejections`` counts rejected caption attempts by reason (see
    ``validation.CAPTION_REJECTIONS``); ``seconds``/``items`` are per stage.
    """

    images_in: int = 0
    rows: int = 0
    dropped: Counter = field(default_factory=Counter)
    caption_requests: int = 0
    captions_kept: int = 0
    caption_rejections: Counter = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: {stage: 0.0 for stage in STAGES})
    items: dict[str, int] = field(default_factory=lambda: {stage: 0 for stage in STAGES})

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts and times to these."""
        self.images_in += other.images_in
        self.rows += other.rows
        self.dropped.update(other.dropped)
        self.caption_requests += other.caption_requests
        self.captions_kept += other.captions_kept
        self.caption_rejections.update(other.caption_rejections)
        for stage in STAGES:
            self.seconds[stage] += other.seconds[stage]
            self.items[stage] += other.items[stage]


@dataclass(kw_only=True)
class UnitStats(Counts):
    """What one unit (one output shard) did."""

    unit: int
    source: str

    def to_json(self) -> dict:
        data = asdict(self)
        data["dropped"] = dict(sorted(self.dropped.items()))
        data["caption_rejections"] = dict(sorted(self.caption_rejections.items()))
        return data

    @classmethod
    def from_json(cls, data: dict) -> UnitStats:
        return cls(
            unit=data["unit"],
            source=data["source"],
            images_in=data["images_in"],
            rows=data["rows"],
            dropped=Counter(data["dropped"]),
            caption_requests=data["caption_requests"],
            captions_kept=data["captions_kept"],
            caption_rejections=Counter(data["caption_rejections"]),
            seconds={stage: float(data["seconds"].get(stage, 0.0)) for stage in STAGES},
            items={stage: int(data["items"].get(stage, 0)) for stage in STAGES},
        )


@dataclass
class Totals(Counts):
    """Sums over units; ``units`` is how many were summed."""

    units: int = 0

    def add(self, unit: UnitStats) -> None:
        self.units += 1
        super().add(unit)

    @classmethod
    def of(cls, units: list[UnitStats]) -> Totals:
        totals = cls()
        for unit in units:
            totals.add(unit)
        return totals

    def per_second(self, stage: str) -> float | None:
        """Items per second of ``stage`` (None when it took no measurable time)."""
        seconds = self.seconds[stage]
        return self.items[stage] / seconds if seconds > 0 and self.items[stage] > 0 else None

    @property
    def captions_per_second(self) -> float | None:
        """Accepted captions per second of the caption stage."""
        seconds = self.seconds["caption"]
        return self.captions_kept / seconds if seconds > 0 else None

    def counts_json(self) -> dict:
        """The counts (no timing): identical for a resumed and an uninterrupted run."""
        return {
            "units": self.units,
            "images_in": self.images_in,
            "rows": self.rows,
            "dropped": dict(sorted(self.dropped.items())),
            "caption_requests": self.caption_requests,
            "captions_kept": self.captions_kept,
            "caption_rejections": dict(sorted(self.caption_rejections.items())),
        }

    def timing_json(self) -> dict:
        """Per stage: seconds, items and items per second (summed unit times of all runs)."""
        return {
            stage: {"seconds": round(self.seconds[stage], 3), "items": self.items[stage], "per_second": self.per_second(stage)}
            for stage in STAGES
        }
