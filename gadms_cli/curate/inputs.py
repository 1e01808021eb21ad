"""What ``gadms curate`` reads: image folders, img2dataset output, WebPerson parquet.

Each INPUT argument becomes one or more *sources*, read lazily:

* a folder of image files (``.jpg .jpeg .png .webp .bmp``, searched recursively, sorted by
  relative path; a ``NAME.txt`` beside ``NAME.jpg`` is its caption and a ``NAME.json`` with a
  ``url`` its origin; img2dataset's ``files`` output format is such a folder);
* img2dataset webdataset shards: ``.tar`` files holding ``KEY.jpg`` (or png/webp), ``KEY.txt``,
  ``KEY.json``; a folder of ``*.tar`` files is read as those shards;
* parquet shards: img2dataset's (image bytes in a ``jpg``/``png``/``webp`` column, ``caption``,
  ``key``, ``url``) or WebPerson's (``image`` struct, ``caption1``, ``caption2``); a folder with
  ``data/*.parquet`` or ``*.parquet`` is read as those shards.

The work is cut into *units*, each becoming one output shard: one unit per ``.tar`` (img2dataset
writes ~10,000 samples per tar, and a tar is read front to back anyway), and runs of
``shard_size`` images of a folder or rows of a parquet file. Unit numbers follow the INPUT
order, then file order, so they are the same on every machine and every run.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gadms_cli.data.webperson import find_parquet_files
from gadms_cli.errors import GadmsError

IMAGE_SUFFIXES: frozenset[str] = frozenset({"jpg", "jpeg", "png", "webp", "bmp"})
PARQUET_IMAGE_COLUMNS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
_GLOB_CHARS = re.compile(r"[*?\[]")
_BATCH_ROWS = 256


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (GadmsError messages are one line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class InputItem:
    """One input image: encoded bytes or a file, plus what came with it.

    ``key`` is unique within its source (img2dataset key, relative path without suffix, or
    row number); ``text`` is the original caption (alt-text) if any; ``position`` is the item's
    index within its source.
    """

    key: str
    position: int
    image_bytes: bytes | None = None
    image_file: Path | None = None
    text: str | None = None
    url: str | None = None

    def read_bytes(self) -> bytes:
        if self.image_bytes is not None:
            return self.image_bytes
        assert self.image_file is not None
        return self.image_file.read_bytes()


class InputSource:
    """A file (or folder) of input images. ``label`` names it in the output (``source`` column,
    ``image_path`` prefix) without machine-specific paths."""

    kind = "source"

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label

    def num_items(self) -> int | None:
        """Images in the source, or None when only reading it tells (tar shards)."""
        raise NotImplementedError

    def read(self, start: int, stop: int | None) -> Iterator[InputItem]:
        """Items ``start`` to ``stop`` (exclusive; None: to the end), in source order."""
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """What identifies the source for the resume check (kind, label, size on disk, items if known)."""
        size = self.path.stat().st_size if self.path.is_file() else None
        return {"kind": self.kind, "label": self.label, "bytes": size, "items": self.num_items()}


# --- image folder -------------------------------------------------------------------------


def _suffix(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


class ImageFolderSource(InputSource):
    """A folder of image files with optional ``.txt``/``.json`` sidecars."""

    kind = "image-folder"

    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, label)
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in names:
                if not name.startswith(".") and _suffix(name) in IMAGE_SUFFIXES:
                    files.append((Path(root) / name).relative_to(path).as_posix())
        self.files = sorted(files)

    def num_items(self) -> int:
        return len(self.files)

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "first": self.files[:1], "last": self.files[-1:]}

    def read(self, start: int, stop: int | None) -> Iterator[InputItem]:
        for position in range(start, len(self.files) if stop is None else min(stop, len(self.files))):
            relative = self.files[position]
            image_file = self.path / relative
            stem = image_file.with_suffix("")
            text_file, json_file = stem.with_suffix(".txt"), stem.with_suffix(".json")
            text = text_file.read_text(encoding="utf-8", errors="replace").strip() if text_file.is_file() else None
            url = None
            if json_file.is_file():
                try:
                    meta = json.loads(json_file.read_text(encoding="utf-8"))
                    url = meta.get("url") if isinstance(meta, dict) else None
                except ValueError:
                    url = None
            yield InputItem(key=relative.rsplit(".", 1)[0], position=position, image_file=image_file, text=text, url=url)


# --- webdataset tar -----------------------------------------------------------------------


def _sample_key(member_name: str) -> tuple[str, str]:
    """(key, extension) of a webdataset member: the basename splits at its FIRST dot."""
    folder, _, base = member_name.rpartition("/")
    key, _, extension = base.partition(".")
    return (f"{folder}/{key}" if folder else key), extension.lower()


class TarSource(InputSource):
    """A webdataset ``.tar`` shard; consecutive members sharing a key form one sample."""

    kind = "webdataset-tar"

    def num_items(self) -> None:
        return None

    def _samples(self) -> Iterator[tuple[str, dict[str, tarfile.TarInfo], tarfile.TarFile]]:
        try:
            archive = tarfile.open(self.path, "r:*")
        except (tarfile.TarError, OSError) as exc:
            raise GadmsError(f"{self.path}: not a readable tar file ({_first_line(exc)}); download this shard again") from None
        with archive:
            key, members = None, {}
            try:
                for member in archive:
                    if not member.isfile():
                        continue
                    member_key, extension = _sample_key(member.name)
                    if member_key != key and members:
                        yield key, members, archive
                        members = {}
                    key = member_key
                    members[extension] = member
            except (tarfile.TarError, OSError) as exc:
                raise GadmsError(f"{self.path}: damaged tar file after sample {key!r} ({_first_line(exc)}); download this shard again") from None
            if members:
                yield key, members, archive

    def read(self, start: int, stop: int | None) -> Iterator[InputItem]:
        position = 0
        for key, members, archive in self._samples():
            image_member = next((members[ext] for ext in members if ext in IMAGE_SUFFIXES), None)
            if image_member is None:
                continue  # img2dataset keeps a .json for failed downloads; no image, no sample
            if stop is not None and position >= stop:
                return
            if position >= start:
                text = url = None
                if "txt" in members:
                    text = archive.extractfile(members["txt"]).read().decode("utf-8", "replace").strip()
                if "json" in members:
                    try:
                        meta = json.loads(archive.extractfile(members["json"]).read())
                        url = meta.get("url") if isinstance(meta, dict) else None
                    except ValueError:
                        url = None
                data = archive.extractfile(image_member).read()
                yield InputItem(key=key, position=position, image_bytes=data, text=text, url=url)
            position += 1


# --- parquet ------------------------------------------------------------------------------


class ParquetSource(InputSource):
    """An img2dataset or WebPerson parquet shard, read row group by row group."""

    def __init__(self, path: Path, label: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(path, label)
        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise GadmsError(f"{path}: not a readable parquet file ({_first_line(exc)}); download this shard again") from None
        schema = parquet.schema_arrow
        names = schema.names
        self.rows = parquet.metadata.num_rows
        self.group_rows = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
        if "image" in names and pa.types.is_struct(schema.field("image").type):
            self.kind, self.image_column = "webperson-parquet", "image"
            self.text_column = "caption1" if "caption1" in names else None
        else:
            binary = [
                name for name in PARQUET_IMAGE_COLUMNS
                if name in names and (pa.types.is_binary(schema.field(name).type) or pa.types.is_large_binary(schema.field(name).type))
            ]  # fmt: skip
            if not binary:
                raise GadmsError(
                    f"{path}: no image column (has {', '.join(names)}); expected img2dataset's jpg/png/webp bytes or WebPerson's image"
                )
            self.kind, self.image_column = "img2dataset-parquet", binary[0]
            self.text_column = "caption" if "caption" in names else None
        self.key_column = "key" if "key" in names else None
        self.url_column = "url" if "url" in names else None

    def num_items(self) -> int:
        return self.rows

    def read(self, start: int, stop: int | None) -> Iterator[InputItem]:
        import pyarrow.parquet as pq

        stop = self.rows if stop is None else min(stop, self.rows)
        groups, offsets, offset = [], [], 0
        for group, rows in enumerate(self.group_rows):
            if offset < stop and offset + rows > start:
                groups.append(group)
                offsets.append(offset)
            offset += rows
        columns = [c for c in (self.image_column, self.text_column, self.key_column, self.url_column) if c]
        parquet = pq.ParquetFile(self.path)
        for group, position in zip(groups, offsets):
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group], columns=columns):
                values = {name: batch.column(name).to_pylist() for name in columns}
                for i in range(batch.num_rows):
                    if start <= position < stop:
                        image = values[self.image_column][i]
                        if isinstance(image, dict):  # WebPerson's struct of bytes/path
                            image = image.get("bytes")
                        key = values[self.key_column][i] if self.key_column else None
                        yield InputItem(
                            key=str(key) if key not in (None, "") else f"{position:09d}",
                            position=position,
                            image_bytes=image,
                            text=values[self.text_column][i] if self.text_column else None,
                            url=values[self.url_column][i] if self.url_column else None,
                        )
                    position += 1


# --- resolving INPUT arguments and planning units -----------------------------------------


def _file_source(path: Path, label: str) -> InputSource:
    if path.suffix == ".tar":
        return TarSource(path, label)
    if path.suffix == ".parquet":
        return ParquetSource(path, label)
    raise GadmsError(f"{path}: not a .tar or .parquet shard; pass shards, their folder, or a folder of images")


def _sources_of(argument: str) -> list[InputSource]:
    if _GLOB_CHARS.search(argument):
        files = sorted(Path(name) for name in glob.glob(os.path.expanduser(argument), recursive=True))
        if not files:
            raise GadmsError(f"{argument}: no file matches this pattern")
        return [_file_source(path, path.name) for path in files]
    path = Path(argument).expanduser()
    if path.is_file():
        return [_file_source(path, path.name)]
    if not path.is_dir():
        raise GadmsError(f"{argument}: no such file or folder")
    name = path.resolve().name
    tars = sorted(path.glob("*.tar"))
    if tars:
        return [TarSource(tar, f"{name}/{tar.name}") for tar in tars]
    shards = find_parquet_files(path)
    if shards:
        return [ParquetSource(shard, f"{name}/{shard.relative_to(path).as_posix()}") for shard in shards]
    folder = ImageFolderSource(path, name)
    if not folder.files:
        raise GadmsError(f"{argument}: holds no .tar, no .parquet and no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [folder]


def resolve_inputs(arguments: list[str]) -> list[InputSource]:
    """The sources of the INPUT arguments, in argument order; labels made unique with ``~2``, ``~3``."""
    if not arguments:
        raise GadmsError("no INPUT given; pass image folders, img2dataset .tar/.parquet shards or WebPerson parquet")
    sources: list[InputSource] = []
    seen: dict[str, int] = {}
    for argument in arguments:
        for source in _sources_of(str(argument)):
            count = seen.get(source.label, 0) + 1
            seen[source.label] = count
            if count > 1:
                source.label = f"{source.label}~{count}"
            sources.append(source)
    return sources


@dataclass(frozen=True)
class WorkUnit:
    """Items ``start`` to ``stop`` (None: the end) of ``source``; it becomes output shard ``index``."""

    index: int
    source: InputSource
    start: int
    stop: int | None


def plan_units(sources: list[InputSource], shard_size: int) -> list[WorkUnit]:
    """Cut the sources into units: one per tar, ``shard_size`` items each for folders and parquet."""
    if shard_size < 1:
        raise GadmsError(f"--shard-size must be 1 or more, got {shard_size}")
    units: list[WorkUnit] = []
    for source in sources:
        count = source.num_items()
        if count is None:
            units.append(WorkUnit(len(units), source, 0, None))
            continue
        for start in range(0, count, shard_size):
            units.append(WorkUnit(len(units), source, start, min(start + shard_size, count)))
    return units
