"""Streaming reader for WebPerson, the GA-DMS pretraining corpus (one identity per image, two captions).

Three sources, one record type (:class:`WebPersonRecord`):

* **Parquet shards, local** (WebPerson as published): ``data/train-*.parquet`` with columns
  ``image`` (a ``datasets`` Image feature: struct of ``bytes`` and ``path``), ``image_path``,
  ``caption1``, ``caption2``. Pass the dataset folder, one ``.parquet`` file or a glob. Read
  with pyarrow batch by batch (only a few hundred rows in memory), row counts come from the
  parquet footers without reading any image.
* **Hugging Face dataset id** (``owner/name``): streamed with
  ``datasets.load_dataset(id, split=..., streaming=True)``. Offline, the reader stops with one
  line saying to download the dataset on a machine with internet and pass the local folder.
* **GA-DMS JSON** (what the public GA-DMS code reads): one JSON object
  ``{relative_image_path: {"caption1": ..., "caption2": ...}}`` with images under ``images/``
  beside it. Parsed incrementally, entry by entry, so millions of entries never sit in memory.

Identity numbering (each image is its own identity, its two captions share it):

* local parquet: the row's position in the whole dataset, shard files in sorted name order
  (0..num_rows-1), the same however the source is sharded;
* GA-DMS JSON: the entry's position in the file (0..N-1), the same however it is sharded;
* Hub stream: the row's position in the stream; after ``shard(n, i)`` the k-th row of shard
  ``i`` gets ``k * n + i`` (unique across shards, but not the unsharded numbering).

``shard(num_shards, index)`` splits a source for data-parallel processes or loader workers:
local parquet into contiguous row ranges (sizes differ by at most one row; only the row groups
of the range are read), JSON by entry position modulo ``num_shards``, Hub streams with
``datasets.distributed.split_dataset_by_node``.
"""

from __future__ import annotations

import glob
import io
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from gadms_cli.data.benchmarks import path_escape_reason
from gadms_cli.data.json_stream import JsonObjectStream
from gadms_cli.errors import GadmsError

REQUIRED_COLUMNS: tuple[str, ...] = ("image", "caption1", "caption2")
JSON_IMAGE_DIR = "images"
BATCH_ROWS = 256  # rows decoded from parquet at a time (bounded memory: 256 images' bytes)
_GLOB_CHARS = re.compile(r"[*?\[]")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class WebPersonRecord:
    """One WebPerson image with its two captions.

    The image is either in memory (``image_bytes``, encoded JPEG/PNG) or a file
    (``image_file``); ``open_image`` gives it as an RGB PIL image either way.
    ``source`` names the parquet or JSON file it came from (for messages).
    """

    identity: int
    image_path: str
    caption1: str
    caption2: str
    image_bytes: bytes | None = None
    image_file: Path | None = None
    source: str = ""

    @property
    def captions(self) -> tuple[str, str]:
        return (self.caption1, self.caption2)

    def open_image(self):
        """Decode the image as an RGB ``PIL.Image.Image`` (H x W x 3, uint8)."""
        from PIL import Image, UnidentifiedImageError

        try:
            if self.image_bytes is not None:
                image = Image.open(io.BytesIO(self.image_bytes))
            elif self.image_file is not None:
                image = Image.open(self.image_file)
            else:
                raise GadmsError(f"{self.source}: row {self.identity} ({self.image_path}) has no image bytes or file")
            return image.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            where = self.image_file or f"{self.source} row {self.identity}"
            raise GadmsError(f"{where}: cannot decode image {self.image_path!r} ({exc}); drop or replace it") from None


def _check_shard(num_shards: int, index: int) -> None:
    if num_shards < 1 or not 0 <= index < num_shards:
        raise ValueError(f"shard index {index} out of range for {num_shards} shards")


# --- local parquet ------------------------------------------------------------------


def open_shard(path: Path):
    """Open one WebPerson parquet shard (footer only) and check its columns; one-line errors otherwise."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise GadmsError(f"{path}: not a readable parquet file ({exc}); download this shard again") from None
    names = parquet.schema_arrow.names
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise GadmsError(
            f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(names)}); WebPerson shards "
            f"need image, image_path, caption1, caption2"
        )
    return parquet


def split_of_shard_file(path: Path) -> str:
    """The split a shard file belongs to, from the Hub naming ``<split>-00000-of-00012.parquet`` (else "train")."""
    match = re.match(r"^([A-Za-z0-9_]+)-\d+(-of-\d+)?\.parquet$", path.name)
    return match.group(1) if match else "train"


def find_parquet_files(folder: Path) -> list[Path]:
    """All parquet shards of a dataset folder: ``data/*.parquet`` if any, else ``*.parquet`` (sorted)."""
    for pattern in ("data/*.parquet", "*.parquet"):
        files = sorted(folder.glob(pattern))
        if files:
            return files
    return []


def _image_bytes_column(batch, source: Path) -> tuple[list, list]:
    """(bytes, path) lists of a batch's ``image`` column (a struct of bytes/path, or plain binary)."""
    import pyarrow as pa

    column = batch.column("image")
    if pa.types.is_struct(column.type):
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        data = column.field("bytes").to_pylist() if "bytes" in names else [None] * len(column)
        paths = column.field("path").to_pylist() if "path" in names else [None] * len(column)
        return data, paths
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return column.to_pylist(), [None] * len(column)
    raise GadmsError(f"{source}: column 'image' has type {column.type}; expected a struct of bytes/path or binary")


class ParquetWebPerson:
    """WebPerson parquet shards on local disk, read row group by row group (see the module docstring).

    ``row_range`` limits the rows to ``[start, end)`` of the global row numbering.
    """

    def __init__(self, files: list[Path], row_range: tuple[int, int] | None = None) -> None:
        if not files:
            raise GadmsError("no parquet files given; pass the WebPerson folder (with data/train-*.parquet)")
        self.files = [Path(f) for f in files]
        self.row_group_rows: list[list[int]] = []  # per file, rows of each row group
        self.has_image_path: list[bool] = []
        for path in self.files:
            parquet = open_shard(path)
            names = parquet.schema_arrow.names
            self.has_image_path.append("image_path" in names)
            metadata = parquet.metadata
            self.row_group_rows.append([metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
        self.total_rows = sum(sum(rows) for rows in self.row_group_rows)
        self.row_range = row_range if row_range is not None else (0, self.total_rows)

    @property
    def num_rows(self) -> int:
        """Rows this (possibly sharded) source yields."""
        return self.row_range[1] - self.row_range[0]

    def __len__(self) -> int:
        return self.num_rows

    def shard(self, num_shards: int, index: int) -> ParquetWebPerson:
        """The ``index``-th of ``num_shards`` contiguous, near-equal row ranges of this source."""
        _check_shard(num_shards, index)
        start, end = self.row_range
        length = end - start
        sub = (start + length * index // num_shards, start + length * (index + 1) // num_shards)
        shard = ParquetWebPerson.__new__(ParquetWebPerson)
        shard.__dict__.update(self.__dict__)
        shard.row_range = sub
        return shard

    def __iter__(self) -> Iterator[WebPersonRecord]:
        import pyarrow.parquet as pq

        start, end = self.row_range
        offset = 0  # global index of the current row group's first row
        for path, group_rows, has_image_path in zip(self.files, self.row_group_rows, self.has_image_path):
            columns = ["image", "caption1", "caption2"] + (["image_path"] if has_image_path else [])
            wanted = []
            for group, rows in enumerate(group_rows):
                if offset < end and offset + rows > start:
                    wanted.append((group, offset))
                offset += rows
            if not wanted:
                continue
            parquet = pq.ParquetFile(path)
            for group, group_offset in wanted:
                row = group_offset
                for batch in parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=columns):
                    data, paths = _image_bytes_column(batch, path)
                    caption1 = batch.column("caption1").to_pylist()
                    caption2 = batch.column("caption2").to_pylist()
                    names = batch.column("image_path").to_pylist() if has_image_path else paths
                    for i in range(batch.num_rows):
                        if start <= row < end:
                            yield WebPersonRecord(
                                identity=row,
                                image_path=names[i] or paths[i] or "",
                                caption1=caption1[i] or "",
                                caption2=caption2[i] or "",
                                image_bytes=data[i],
                                image_file=_image_file(data[i], paths[i], path),
                                source=str(path),
                            )
                        row += 1


def _image_file(data: bytes | None, image_path: str | None, shard: Path) -> Path | None:
    """Where the image lives when the parquet stores only a path (datasets writes such rows for local files)."""
    if data is not None or not image_path:
        return None
    path = Path(image_path)
    return path if path.is_absolute() else shard.parent / path


# --- Hugging Face Hub ---------------------------------------------------------------


def _hub_offline_reason() -> str | None:
    """Why the Hub cannot be reached (offline mode set, or no connection), or None when it looks reachable."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{name} is set"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct probe says nothing; let datasets try
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        return f"cannot connect to {host} ({exc.strerror or exc})"
    return None


def _offline_error(dataset_id: str, reason: str) -> GadmsError:
    return GadmsError(
        f"'{dataset_id}' is not a local folder and the Hugging Face Hub is unreachable ({reason}); download it "
        f"where there is internet (hf download {dataset_id} --repo-type dataset --local-dir DIR) and pass DIR"
    )


class HubWebPerson:
    """A WebPerson dataset streamed from the Hugging Face Hub with ``datasets`` (never fully downloaded)."""

    def __init__(self, dataset_id: str, split: str = "train", num_shards: int = 1, index: int = 0, stream=None) -> None:
        self.dataset_id = dataset_id
        self.split = split
        self.num_shards = num_shards
        self.index = index
        self.stream = stream if stream is not None else self._open()
        self.num_rows: int | None = None

    def _open(self):
        reason = _hub_offline_reason()
        if reason is not None:
            raise _offline_error(self.dataset_id, reason)
        import datasets

        try:
            stream = datasets.load_dataset(self.dataset_id, split=self.split, streaming=True)
        except ConnectionError as exc:
            raise _offline_error(self.dataset_id, str(exc).splitlines()[0]) from None
        except (FileNotFoundError, ValueError) as exc:
            raise GadmsError(f"'{self.dataset_id}' (split {self.split}): {str(exc).splitlines()[0]}") from None
        features = stream.features
        if features is not None:
            missing = [name for name in REQUIRED_COLUMNS if name not in features]
            if missing:
                raise GadmsError(
                    f"'{self.dataset_id}': missing column(s) {', '.join(missing)} (has {', '.join(features)}); "
                    f"WebPerson needs image, image_path, caption1, caption2"
                )
            # Keep the encoded bytes: decoding is the transform's job, in the loader workers.
            stream = stream.cast_column("image", datasets.Image(decode=False))
        return stream

    def shard(self, num_shards: int, index: int) -> HubWebPerson:
        """Shard ``index`` of ``num_shards`` (by files when they divide evenly, else by rows)."""
        from datasets.distributed import split_dataset_by_node

        _check_shard(num_shards, index)
        stream = split_dataset_by_node(self.stream, rank=index, world_size=num_shards)
        return HubWebPerson(self.dataset_id, self.split, self.num_shards * num_shards,
                            self.index + self.num_shards * index, stream=stream)

    def __iter__(self) -> Iterator[WebPersonRecord]:
        for position, row in enumerate(self.stream):
            image = row["image"]
            data, path = (image.get("bytes"), image.get("path")) if isinstance(image, dict) else (image, None)
            yield WebPersonRecord(
                identity=position * self.num_shards + self.index,
                image_path=row.get("image_path") or path or "",
                caption1=row["caption1"] or "",
                caption2=row["caption2"] or "",
                image_bytes=data,
                source=self.dataset_id,
            )


# --- GA-DMS JSON --------------------------------------------------------------------

class JsonWebPerson:
    """The GA-DMS JSON variant: ``{relative_image_path: {"caption1", "caption2"}}`` + ``images/`` beside it."""

    def __init__(self, json_file: Path, image_dir: Path | None = None, num_shards: int = 1, index: int = 0) -> None:
        self.json_file = Path(json_file)
        self.image_dir = Path(image_dir) if image_dir is not None else self.json_file.parent / JSON_IMAGE_DIR
        if not self.json_file.is_file():
            raise GadmsError(f"{self.json_file}: no such file; pass the GA-DMS annotation JSON or its folder")
        self.num_shards = num_shards
        self.index = index
        self.num_rows: int | None = None

    def shard(self, num_shards: int, index: int) -> JsonWebPerson:
        """Entries whose position ``p`` has ``p % num_shards == index`` (within this source's own sharding)."""
        _check_shard(num_shards, index)
        return JsonWebPerson(self.json_file, self.image_dir, self.num_shards * num_shards,
                             self.index + self.num_shards * index)

    def __iter__(self) -> Iterator[WebPersonRecord]:
        try:
            handle = open(self.json_file, encoding="utf-8")
        except OSError as exc:
            raise GadmsError(f"{self.json_file}: cannot read it ({exc.strerror})") from None
        with handle:
            try:
                for position, (relative, value) in enumerate(JsonObjectStream(handle, self.json_file).items()):
                    if position % self.num_shards != self.index:
                        continue
                    yield self._record(position, relative, value)
            except UnicodeDecodeError:
                raise GadmsError(f"{self.json_file}: not UTF-8 JSON text; download it again") from None

    def _record(self, position: int, relative: str, value) -> WebPersonRecord:
        if not isinstance(value, dict):
            raise GadmsError(f"{self.json_file}: entry {position} ({relative!r}) is not an object with caption1/caption2")
        for key in ("caption1", "caption2"):
            if not isinstance(value.get(key), str):
                problem = "has no" if key not in value else "has a non-string"
                raise GadmsError(f"{self.json_file}: entry {position} ({relative!r}) {problem} '{key}'; fix that entry")
        reason = path_escape_reason(relative)
        if reason is not None:
            raise GadmsError(
                f"{self.json_file}: entry {position} image path {relative!r} {reason}; image paths must stay inside "
                f"{self.image_dir}: fix the entry"
            )
        return WebPersonRecord(
            identity=position,
            image_path=relative,
            caption1=value["caption1"],
            caption2=value["caption2"],
            image_file=self.image_dir / relative,
            source=str(self.json_file),
        )


def find_gadms_json(folder: Path) -> Path | None:
    """The GA-DMS annotation JSON of a folder: its only ``*.json`` when an ``images/`` folder sits beside it."""
    if not (folder / JSON_IMAGE_DIR).is_dir():
        return None
    candidates = sorted(folder.glob("*.json"))
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise GadmsError(f"{folder}: several JSON files ({names}); pass the GA-DMS annotation file itself")
    return candidates[0] if candidates else None


# --- opening any source -------------------------------------------------------------

WebPersonSource = ParquetWebPerson | HubWebPerson | JsonWebPerson


def open_webperson(source: str | Path, *, split: str = "train") -> WebPersonSource:
    """Open WebPerson from a local folder, a parquet file or glob, a GA-DMS JSON, or a Hub dataset id.

    A folder is read as parquet shards (``data/<split>-*.parquet``, else all ``*.parquet``) or
    as the GA-DMS JSON variant (one ``*.json`` beside ``images/``).
    """
    text = str(source)
    if _GLOB_CHARS.search(text):
        files = sorted(Path(name) for name in glob.glob(os.path.expanduser(text), recursive=True))
        if not files:
            raise GadmsError(f"{text}: no file matches this pattern; pass the WebPerson folder or a matching glob")
        return ParquetWebPerson(files)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix == ".parquet":
            return ParquetWebPerson([path])
        if path.suffix == ".json":
            return JsonWebPerson(path)
        raise GadmsError(f"{path}: not a .parquet shard nor a GA-DMS .json annotation file")
    if path.is_dir():
        files = find_parquet_files(path)
        split_files = [f for f in files if split_of_shard_file(f) == split]
        if split_files:
            return ParquetWebPerson(split_files)
        if files:
            found = sorted({split_of_shard_file(f) for f in files})
            raise GadmsError(f"{path}: no '{split}' shards (splits here: {', '.join(found)}); pick one of those")
        json_file = find_gadms_json(path)
        if json_file is not None:
            return JsonWebPerson(json_file)
        raise GadmsError(
            f"{path}: no WebPerson data; looked for data/*.parquet, *.parquet and a GA-DMS *.json beside {JSON_IMAGE_DIR}/"
        )
    if _HUB_ID.match(text):
        return HubWebPerson(text, split)
    raise GadmsError(f"{text}: no such file or folder, and not a Hugging Face dataset id (owner/name)")

