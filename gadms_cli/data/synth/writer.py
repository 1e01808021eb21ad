"""Writing SketchPedes in the real benchmark formats (docs/data-formats.md).

- ``reid_raw.json``: the CUHK-PEDES annotation list (records ``split``,
  ``captions``, ``file_path``, ``id``, ``processed_tokens``), images under ``imgs/``;
- ``webperson/data/train-XXXXX-of-YYYYY.parquet``: the train split as
  WebPerson shards (``image`` as a HuggingFace ``datasets`` Image feature, a
  struct of ``bytes`` and ``path``; ``image_path``; ``caption1``; ``caption2``).
  Written with pyarrow directly, with the same ``huggingface`` schema metadata
  the ``datasets`` library writes, so ``datasets.load_dataset("parquet", ...)``
  decodes the column as images without importing ``datasets`` here;
- ``attributes.jsonl``: one line per image with the true attributes, caption
  noise records and garment boxes.

Every file goes through :mod:`gadms_cli.fileio` (temporary name, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gadms_cli.fileio import atomic_path, atomic_write

# The schema metadata the `datasets` library stores in parquet files it writes.
_HF_FEATURES = {
    "image": {"_type": "Image"},
    "image_path": {"dtype": "string", "_type": "Value"},
    "caption1": {"dtype": "string", "_type": "Value"},
    "caption2": {"dtype": "string", "_type": "Value"},
}
WEBPERSON_SCHEMA = pa.schema(
    [
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
        pa.field("image_path", pa.string()),
        pa.field("caption1", pa.string()),
        pa.field("caption2", pa.string()),
    ],
    metadata={"huggingface": json.dumps({"info": {"features": _HF_FEATURES}})},
)
PARQUET_ROW_GROUP = 256  # rows per row group: small enough for random access to images


def shard_path(out_dir: Path, index: int, count: int) -> Path:
    """``<out>/webperson/data/train-{index:05d}-of-{count:05d}.parquet``."""
    return out_dir / "webperson" / "data" / f"train-{index:05d}-of-{count:05d}.parquet"


def write_image(path: Path, jpeg: bytes) -> None:
    """Write encoded image bytes atomically (no fsync: a lost image is redrawn by the next run)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(jpeg)


def write_webperson_shard(path: Path, rows: list[tuple[bytes, str, str, str]]) -> None:
    """Write one WebPerson parquet shard from (jpeg bytes, image_path, caption1, caption2) rows."""
    table = pa.table(
        {
            "image": pa.array([{"bytes": jpeg, "path": image_path} for jpeg, image_path, _, _ in rows], WEBPERSON_SCHEMA.field("image").type),
            "image_path": pa.array([row[1] for row in rows], pa.string()),
            "caption1": pa.array([row[2] for row in rows], pa.string()),
            "caption2": pa.array([row[3] for row in rows], pa.string()),
        },
        schema=WEBPERSON_SCHEMA,
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=PARQUET_ROW_GROUP)


def write_reid_raw(path: Path, records: list[dict]) -> None:
    """Write the CUHK-PEDES style annotation list (one JSON array, like the original file)."""
    with atomic_write(path) as handle:
        handle.write(json.dumps(records, ensure_ascii=True))  # dumps uses the C encoder, dump does not


def write_jsonl(path: Path, lines: list[dict]) -> None:
    """Write one JSON object per line."""
    with atomic_write(path) as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=True))
            handle.write("\n")


def write_json(path: Path, data: dict) -> None:
    """Write a small indented JSON document (the generation manifest)."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2, ensure_ascii=True)
        handle.write("\n")
