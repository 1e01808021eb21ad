"""Writing a curation run's output: WebPerson parquet shards, per-unit stats, settings, manifest.

Layout of ``--out DIR``::

    data/train-00000.parquet     one shard per unit, WebPerson columns + provenance
    curate/settings.json         what shapes the output (inputs, rules, models, seed, ...)
    curate/units/00000.json      the stats of each finished unit (written after its shard)
    manifest.json                totals over the finished units, per-stage counts and speeds

A unit is finished when its stats file exists; both files go through a temporary name and a
rename (:mod:`gadms_cli.fileio`), so a killed run leaves either the complete file or none.

Shard columns: ``image`` (struct of ``bytes``/``path``, the ``datasets`` Image feature),
``image_path``, ``caption1``, ``caption2`` (the WebPerson schema), then provenance:
``source`` (input label ``#`` item key), ``source_caption`` (the text that came with the image),
``url``, ``box`` (x0, y0, x1, y1 in source-image pixels), ``detector``, ``detector_score``,
``template_id1``/``template_id2`` (line positions in the template bank) and
``captioner_model`` (``backend:model``). The ``huggingface`` schema metadata is the one the
``datasets`` library writes, so ``load_dataset("parquet", ...)`` decodes images.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gadms_cli.curate.report import UnitStats
from gadms_cli.fileio import atomic_path, atomic_write

FORMAT = "gadms-curate"
FORMAT_VERSION = 1
ROW_GROUP_ROWS = 256

_VALUE = {"_type": "Value"}
_HF_FEATURES = {
    "image": {"_type": "Image"},
    "image_path": {**_VALUE, "dtype": "string"},
    "caption1": {**_VALUE, "dtype": "string"},
    "caption2": {**_VALUE, "dtype": "string"},
    "source": {**_VALUE, "dtype": "string"},
    "source_caption": {**_VALUE, "dtype": "string"},
    "url": {**_VALUE, "dtype": "string"},
    "box": {"feature": {**_VALUE, "dtype": "float32"}, "length": 4, "_type": "Sequence"},
    "detector": {**_VALUE, "dtype": "string"},
    "detector_score": {**_VALUE, "dtype": "float32"},
    "template_id1": {**_VALUE, "dtype": "int32"},
    "template_id2": {**_VALUE, "dtype": "int32"},
    "captioner_model": {**_VALUE, "dtype": "string"},
}
CURATED_SCHEMA = pa.schema(
    [
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
        pa.field("image_path", pa.string()),
        pa.field("caption1", pa.string()),
        pa.field("caption2", pa.string()),
        pa.field("source", pa.string()),
        pa.field("source_caption", pa.string()),
        pa.field("url", pa.string()),
        pa.field("box", pa.list_(pa.float32(), 4)),
        pa.field("detector", pa.string()),
        pa.field("detector_score", pa.float32()),
        pa.field("template_id1", pa.int32()),
        pa.field("template_id2", pa.int32()),
        pa.field("captioner_model", pa.string()),
    ],
    metadata={"huggingface": json.dumps({"info": {"features": _HF_FEATURES}})},
)


@dataclass(frozen=True)
class CuratedRow:
    """One output row: a person image (encoded bytes), its two captions and where it came from."""

    image: bytes
    image_path: str
    caption1: str
    caption2: str
    source: str
    source_caption: str | None
    url: str | None
    box: tuple[float, float, float, float] | None
    detector: str | None
    detector_score: float | None
    template_id1: int
    template_id2: int
    captioner_model: str


def shard_file(out: Path, unit: int) -> Path:
    return out / "data" / f"train-{unit:05d}.parquet"


def unit_stats_file(out: Path, unit: int) -> Path:
    return out / "curate" / "units" / f"{unit:05d}.json"


def settings_file(out: Path) -> Path:
    return out / "curate" / "settings.json"


def manifest_file(out: Path) -> Path:
    return out / "manifest.json"


def write_shard(path: Path, rows: list[CuratedRow]) -> None:
    """Write one shard atomically (a shard with no rows is written too: it marks the unit as seen)."""
    columns = {
        "image": [{"bytes": row.image, "path": row.image_path} for row in rows],
        **{name: [getattr(row, name) for row in rows] for name in CURATED_SCHEMA.names if name != "image"},
    }
    table = pa.Table.from_pydict(columns, schema=CURATED_SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)


def write_json(path: Path, data: dict) -> None:
    """An indented JSON document, written atomically."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, ensure_ascii=True)
        handle.write("\n")


def read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def finished_units(out: Path) -> dict[int, UnitStats]:
    """The stats of every finished unit in ``out`` (from this machine or others sharing the folder)."""
    folder = out / "curate" / "units"
    stats = {}
    for path in sorted(folder.glob("[0-9]*.json")) if folder.is_dir() else []:
        unit = UnitStats.from_json(read_json(path))
        if shard_file(out, unit.unit).is_file():
            stats[unit.unit] = unit
    return stats


_TEMPORARY = re.compile(r"^\.(?:train-)?(\d+)\.(?:parquet|json)\..+\.tmp$")


def remove_stale_temporaries(out: Path, units: set[int]) -> int:
    """Delete the temporary files a killed run left for ``units`` (``.train-00003.parquet.XXXX.tmp``);
    other machines' units sharing ``out`` are left alone. Returns how many were deleted."""
    removed = 0
    for folder in (out / "data", out / "curate" / "units"):
        for path in folder.glob(".*.tmp") if folder.is_dir() else []:
            match = _TEMPORARY.match(path.name)
            if match and int(match.group(1)) in units:
                path.unlink(missing_ok=True)
                removed += 1
    return removed
