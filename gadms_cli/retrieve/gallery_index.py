"""Gallery index: the embeddings of every image in a folder, cached and kept up to date.

Layout (``INDEX_ROOT`` is ``GALLERY/.gadms`` unless the caller gives another folder)::

    INDEX_ROOT/<first 16 hex digits of the model fingerprint>/
        index.json                          manifest + one metadata row per image
        embeddings-<token>.safetensors      float32 [N, D], L2-normalised, row i = files[i]
        faiss-<token>.index                 optional cache of the faiss graph (search.py)
        .lock                               held while an update runs

``index.json``::

    {"format": "gadms-gallery-index", "format_version": 1,
     "model_fingerprint": "<64 hex>", "model": "<what the user named>",
     "gallery": "/abs/path", "embedding_dim": 512, "count": N,
     "embeddings_file": "embeddings-<token>.safetensors", "updated": "2025-...Z",
     "files": [{"path": "sub/a.jpg", "size": 12345, "mtime_ns": 1700000000000000000, "sha256": "<hex>"}, ...],
     "unreadable": [{"path": "bad.jpg", "size": 10, "mtime_ns": ..., "sha256": "<hex>"}, ...]}

Paths are relative to the gallery (POSIX separators), so a moved gallery keeps its index.

Updating (:func:`update_index`):

- the gallery is walked recursively for ``.jpg .jpeg .png .webp .bmp`` (any case); hidden
  files and folders (names starting with ``.``, which includes ``.gadms``) are skipped;
- a file whose size and modification time (ns) match its row is unchanged; otherwise its
  SHA-256 decides: a known hash (a touched, copied or renamed file) reuses that embedding,
  an unknown one is encoded. Rows of files no longer there are dropped;
- files that cannot be decoded are skipped, counted and listed (and remembered with their
  size, time and hash, so an unchanged broken file is not retried on every run);
- writes are atomic: the embeddings go to a new uniquely named file, then ``index.json``
  is replaced in one rename, then files no longer referenced are deleted. A killed run
  leaves the previous ``index.json`` and its embeddings untouched. During a long update
  the index is also saved every ``save_interval_s`` seconds and on Ctrl-C, so the next
  run resumes instead of starting over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from gadms_cli.encode import encode_images
from gadms_cli.errors import GadmsError
from gadms_cli.fileio import atomic_path, atomic_write
from gadms_cli.progress import track
from gadms_cli.retrieve.gallery_files import IMAGE_SUFFIXES, LOCK_FILE, exclusive_lock, file_sha256, find_images

INDEX_DIRNAME = ".gadms"
MANIFEST_FILE = "index.json"
EMBEDDINGS_PREFIX = "embeddings-"
FAISS_PREFIX = "faiss-"
FORMAT = "gadms-gallery-index"
FORMAT_VERSION = 1
FINGERPRINT_DIGITS = 16  # folder name length: 64 bits tell models apart; the full hash is checked in index.json
DEFAULT_SAVE_INTERVAL_S = 300.0
FIRST_CHUNK_BATCHES = 4  # files in the first encoding chunk, in batches (small, so an early Ctrl-C keeps work); later chunks last about CHUNK_SECONDS
CHUNK_SECONDS = 60.0
_NO_IMAGE_READ = "no image could be read"  # encode_images' message when a whole call fails to decode


@dataclass(frozen=True)
class FileEntry:
    """One gallery file as indexed: ``path`` relative to the gallery (POSIX), ``size`` in bytes,
    ``mtime_ns`` its modification time in ns since the epoch, ``sha256`` of its bytes (hex)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class GalleryIndex:
    """A loaded index: ``entries[i]`` is the file whose embedding is ``embeddings[i]``.

    ``embeddings`` is float32 [N, D], L2-normalised, on CPU.
    """

    gallery: Path  # absolute gallery folder
    directory: Path  # this model's index folder
    fingerprint: str
    model: str
    entries: list[FileEntry]
    embeddings: torch.Tensor
    unreadable: list[FileEntry] = field(default_factory=list)
    embeddings_file: str | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def paths(self) -> list[Path]:
        """Absolute path of every indexed file, in row order."""
        return [self.gallery / entry.path for entry in self.entries]

    def row_of(self, path: str | os.PathLike) -> int | None:
        """Row of a file given relative to the gallery or as an absolute path (None when not indexed)."""
        candidate = Path(path).expanduser()
        if candidate.is_absolute():
            relative = None
            for absolute in (Path(os.path.abspath(candidate)), candidate.resolve()):  # as written, then links resolved
                with contextlib.suppress(ValueError):
                    relative = absolute.relative_to(self.gallery)
                    break
            if relative is None:
                return None
            candidate = relative
        wanted = candidate.as_posix()
        for row, entry in enumerate(self.entries):
            if entry.path == wanted:
                return row
        return None


@dataclass
class IndexReport:
    """What an update did. Counts are files; ``seconds`` is wall-clock time of the whole update."""

    directory: Path
    images: int = 0  # rows in the index now
    encoded: int = 0  # files run through the model in this update
    reused: int = 0  # rows kept from the previous index (unchanged, touched, copied or renamed files)
    dropped: int = 0  # rows of files that disappeared or changed
    hashed: int = 0  # files whose content hash was computed
    unreadable: list[str] = field(default_factory=list)  # relative paths skipped because they cannot be decoded
    warnings: list[str] = field(default_factory=list)  # one-line notes for the user (damaged index rebuilt ...)
    seconds: float = 0.0


# --- the folder ---------------------------------------------------------------------


def index_directory(gallery: str | os.PathLike, fingerprint: str, index_root: str | os.PathLike | None = None) -> Path:
    """This model's index folder: ``(index_root or GALLERY/.gadms) / fingerprint[:16]``."""
    root = Path(index_root) if index_root is not None else Path(gallery) / INDEX_DIRNAME
    return root.expanduser().resolve() / fingerprint[:FINGERPRINT_DIGITS]


# --- reading and writing ------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _entry(row: dict) -> FileEntry:
    return FileEntry(str(row["path"]), int(row["size"]), int(row["mtime_ns"]), str(row.get("sha256", "")))


def load_index(directory: Path, gallery: Path, fingerprint: str) -> tuple[GalleryIndex | None, str | None]:
    """Read the index in ``directory``: ``(index, None)``, ``(None, None)`` when there is none yet, or
    ``(None, reason)`` when it is damaged or belongs to another model (the caller rebuilds it)."""
    from safetensors.torch import load_file

    manifest_path = directory / MANIFEST_FILE
    for attempt in range(2):  # a concurrent update may swap the files between our two reads: read again once
        if not manifest_path.is_file():
            return None, None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return None, f"{manifest_path} is unreadable ({type(error).__name__})"
        if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) != FORMAT_VERSION:
            return None, f"{manifest_path} has format {manifest.get('format')!r} v{manifest.get('format_version')}"
        if manifest.get("model_fingerprint") != fingerprint:
            return None, f"{manifest_path} belongs to another model"
        try:
            entries = [_entry(row) for row in manifest["files"]]
            unreadable = [_entry(row) for row in manifest.get("unreadable", [])]
            embeddings_file = str(manifest["embeddings_file"])
            dim = int(manifest["embedding_dim"])
        except (KeyError, TypeError, ValueError) as error:
            return None, f"{manifest_path} lacks a field ({type(error).__name__}: {error})"
        embeddings_path = directory / embeddings_file
        if not embeddings_path.is_file():
            if attempt == 0:
                continue
            return None, f"{embeddings_path} is missing"
        try:
            embeddings = load_file(str(embeddings_path))["embeddings"]
        except Exception as error:  # safetensors raises its own error types for a damaged file
            return None, f"{embeddings_path} is unreadable ({type(error).__name__})"
        if embeddings.dtype != torch.float32 or tuple(embeddings.shape) != (len(entries), dim):
            return None, f"{embeddings_path} holds {tuple(embeddings.shape)}, index.json says ({len(entries)}, {dim})"
        index = GalleryIndex(
            gallery=gallery,
            directory=directory,
            fingerprint=fingerprint,
            model=str(manifest.get("model", "")),
            entries=entries,
            embeddings=embeddings,
            unreadable=unreadable,
            embeddings_file=embeddings_file,
        )
        return index, None
    return None, None  # pragma: no cover - the loop always returns


def save_index(index: GalleryIndex) -> None:
    """Write ``index`` atomically (new embeddings file, then index.json, then delete files no longer used).

    Sets ``index.embeddings_file``. Call with the folder's lock held (see :func:`update_index`).
    """
    from safetensors.torch import save_file

    directory = index.directory
    name = f"{EMBEDDINGS_PREFIX}{secrets.token_hex(8)}.safetensors"
    with atomic_path(directory / name) as tmp:
        save_file({"embeddings": index.embeddings.contiguous()}, str(tmp), metadata={"format": FORMAT})
        os.chmod(tmp, 0o666 & ~_umask())  # as readable as any file the user creates (the temp file was 0600)
        with open(tmp, "rb") as handle:  # the manifest must never point at bytes still in the page cache only
            os.fsync(handle.fileno())
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_fingerprint": index.fingerprint,
        "model": index.model,
        "gallery": str(index.gallery),
        "embedding_dim": int(index.embeddings.shape[1]),
        "count": len(index.entries),
        "embeddings_file": name,
        "updated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": [dataclasses.asdict(entry) for entry in index.entries],
        "unreadable": [dataclasses.asdict(entry) for entry in index.unreadable],
    }
    with atomic_write(directory / MANIFEST_FILE) as handle:
        json.dump(manifest, handle, separators=(",", ":"))
    index.embeddings_file = name
    _remove_unreferenced(directory, name)


def _remove_unreferenced(directory: Path, embeddings_file: str) -> None:
    """Delete old embeddings, faiss caches of them and temporary files left by killed runs."""
    keep_token = embeddings_file[len(EMBEDDINGS_PREFIX) : -len(".safetensors")]
    for path in directory.iterdir():
        name = path.name
        stale = (
            (name.startswith(EMBEDDINGS_PREFIX) and name != embeddings_file)
            or (name.startswith(FAISS_PREFIX) and keep_token not in name)
            or (name.startswith(".") and name.endswith(".tmp"))
        )
        if stale and path.is_file():
            with contextlib.suppress(OSError):  # the index is already valid; a leftover file is harmless
                path.unlink(missing_ok=True)


# --- updating -------------------------------------------------------------------------


def update_index(
    model: nn.Module,
    gallery: str | os.PathLike,
    *,
    fingerprint: str,
    transform: Callable,
    index_root: str | os.PathLike | None = None,
    model_name: str = "",
    batch_size: int = 128,
    num_workers: int = 0,
    chunk_files: int | None = None,
    save_interval_s: float | None = DEFAULT_SAVE_INTERVAL_S,
) -> tuple[GalleryIndex, IndexReport]:
    """Bring the index of ``gallery`` for this model up to date and return it (see the module docstring).

    ``model`` must have ``encode_image(images [B, 3, H, W]) -> [B, D]`` and ``transform`` must be the
    model's eval transform; ``fingerprint`` is :func:`~gadms_cli.retrieve.fingerprint.model_fingerprint`
    of the model. Files are encoded ``chunk_files`` at a time (default: 32 batches first, then chunks of
    about a minute of work); between chunks the index is saved when ``save_interval_s`` seconds have
    passed since the last save (None: only at the end), and on Ctrl-C.
    Raises :class:`GadmsError` when the gallery is not a folder or the index folder cannot be written.
    """
    started = time.perf_counter()
    root = Path(gallery).expanduser()
    if not root.is_dir():
        raise GadmsError(f"--gallery {gallery}: not a folder")
    root = root.resolve()
    directory = index_directory(root, fingerprint, index_root)
    created = not directory.exists()
    if created and not find_images(root):  # an empty folder gets no index folder either
        raise GadmsError(f"--gallery {gallery}: no image files in it (looked for {', '.join(IMAGE_SUFFIXES)}, hidden files skipped)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / LOCK_FILE).touch()
    except OSError as error:
        raise GadmsError(
            f"cannot write the index folder {directory} ({type(error).__name__}); pass --index PATH to keep it elsewhere"
        ) from None
    report = IndexReport(directory=directory)
    with exclusive_lock(directory):
        updater = _Update(model, root, directory, fingerprint, transform, model_name, report)
        index = updater.run(batch_size, num_workers, chunk_files, save_interval_s)
    report.images = len(index)
    report.unreadable = [entry.path for entry in index.unreadable]
    report.seconds = time.perf_counter() - started
    return index, report


class _Update:
    """One update of one index folder (called with its lock held)."""

    def __init__(
        self,
        model: nn.Module,
        root: Path,
        directory: Path,
        fingerprint: str,
        transform: Callable,
        model_name: str,
        report: IndexReport,
    ) -> None:
        self.model = model
        self.root = root
        self.directory = directory
        self.fingerprint = fingerprint
        self.transform = transform
        self.model_name = model_name
        self.report = report
        self.kept: list[tuple[FileEntry, torch.Tensor]] = []  # rows of the new index, any order
        self.unreadable: list[FileEntry] = []
        self.encoded_by_hash: dict[str, torch.Tensor] = {}  # sha256 -> embedding [D] encoded in this update
        self.failed_hashes: set[str] = set()  # sha256 of files that failed to decode in this update
        config = getattr(model, "config", None)
        self.dim = int(config.embed_dim) if config is not None and hasattr(config, "embed_dim") else None

    def run(
        self, batch_size: int, num_workers: int, chunk_files: int | None, save_interval_s: float | None
    ) -> GalleryIndex:
        old, damaged = load_index(self.directory, self.root, self.fingerprint)
        if damaged:
            self.report.warnings.append(f"the previous index is damaged ({damaged}); rebuilding it")
        to_encode, duplicates = self._plan(old)
        # Encoding goes in chunks so that work can be saved between them. Each chunk restarts the
        # decoding workers, so unless the caller fixes the size, chunks grow to about CHUNK_SECONDS.
        size = chunk_files or FIRST_CHUNK_BATCHES * batch_size
        start = 0
        last_save = time.monotonic()
        try:
            while start < len(to_encode):
                chunk = to_encode[start : start + size]
                description = (
                    "encoding images"
                    if start == 0 and len(chunk) == len(to_encode)
                    else f"encoding images {start + 1:,}-{start + len(chunk):,} of {len(to_encode):,}"
                )
                began = time.monotonic()
                self._encode(chunk, batch_size, num_workers, description)
                start += len(chunk)
                if chunk_files is None:
                    per_file_s = max(time.monotonic() - began, 1e-6) / len(chunk)
                    size = batch_size * max(1, round(CHUNK_SECONDS / per_file_s / batch_size))
                if start < len(to_encode) and save_interval_s is not None and time.monotonic() - last_save >= save_interval_s:
                    self._save(self._assemble(duplicates))
                    last_save = time.monotonic()
        except KeyboardInterrupt:
            if self.encoded_by_hash:  # keep the work done so far: the next run resumes from here
                self._save(self._assemble(duplicates))
            raise
        index = self._assemble(duplicates)
        self.report.reused += sum(1 for entry in duplicates if entry.sha256 in self.encoded_by_hash)
        if old is not None and old.entries == index.entries and old.unreadable == index.unreadable:
            index.embeddings_file = old.embeddings_file  # nothing changed: leave the files alone
        else:
            self._save(index)
        return index

    def _save(self, index: GalleryIndex) -> None:
        try:
            save_index(index)
        except OSError as error:  # disk full, permissions ...: the previous index stays as it was
            raise GadmsError(
                f"cannot write the index in {self.directory} ({type(error).__name__}: {error}); "
                "free some space or pass --index PATH to keep it elsewhere"
            ) from None

    def _plan(self, old: GalleryIndex | None) -> tuple[list[FileEntry], list[FileEntry]]:
        """Sort every file into kept (unchanged or known content), unreadable, to encode, or a duplicate
        of a file to encode. Returns ``(to_encode, duplicates)``."""
        old_entries = old.entries if old else []
        by_path = {entry.path: row for row, entry in enumerate(old_entries)}
        by_hash = {entry.sha256: row for row, entry in enumerate(old_entries)}
        old_unreadable = {entry.path: entry for entry in (old.unreadable if old else [])}

        found = find_images(self.root, skip=[self.directory.parent])
        self.report.dropped = len(set(by_path) - {rel for rel, _ in found})
        to_hash: list[tuple[str, int, int]] = []
        for rel, stat in found:
            size, mtime_ns = int(stat.st_size), int(stat.st_mtime_ns)
            row = by_path.get(rel)
            if row is not None and (old_entries[row].size, old_entries[row].mtime_ns) == (size, mtime_ns):
                self.kept.append((old_entries[row], old.embeddings[row]))  # type: ignore[union-attr]
            elif rel in old_unreadable and (old_unreadable[rel].size, old_unreadable[rel].mtime_ns) == (size, mtime_ns):
                self.unreadable.append(old_unreadable[rel])
            else:
                to_hash.append((rel, size, mtime_ns))

        to_encode: list[FileEntry] = []
        duplicates: list[FileEntry] = []
        pending: set[str] = set()
        for rel, size, mtime_ns in track(to_hash, "hashing new and changed files", total=len(to_hash)):
            try:
                entry = FileEntry(rel, size, mtime_ns, file_sha256(self.root / rel))
            except OSError:  # unreadable at the file-system level: skipped like an undecodable image
                self.unreadable.append(FileEntry(rel, size, mtime_ns, ""))
                continue
            if entry.sha256 in by_hash:  # touched, copied or renamed: same bytes, same embedding
                self.kept.append((entry, old.embeddings[by_hash[entry.sha256]]))  # type: ignore[union-attr]
            elif entry.sha256 in pending:
                duplicates.append(entry)
            else:
                pending.add(entry.sha256)
                to_encode.append(entry)
        self.report.hashed = len(to_hash)
        self.report.reused = len(self.kept)
        return to_encode, duplicates

    def _encode(self, chunk: list[FileEntry], batch_size: int, num_workers: int, description: str) -> None:
        paths = [self.root / entry.path for entry in chunk]
        try:
            feats, bad = encode_images(self.model, paths, self.transform, batch_size, num_workers, description=description)
        except ValueError as error:
            if _NO_IMAGE_READ not in str(error):
                raise
            feats, bad = None, list(range(len(chunk)))
        bad_set = set(bad)
        for i, entry in enumerate(chunk):
            if i in bad_set:
                self.unreadable.append(entry)
                self.failed_hashes.add(entry.sha256)
            else:
                self.encoded_by_hash[entry.sha256] = feats[i]  # type: ignore[index]
                self.kept.append((entry, feats[i]))  # type: ignore[index]
                self.report.encoded += 1
                if self.dim is None:
                    self.dim = int(feats.shape[1])  # type: ignore[union-attr]

    def _assemble(self, duplicates: list[FileEntry]) -> GalleryIndex:
        """The index as it stands: rows sorted by path. Duplicates whose twin is not encoded yet are left
        out (a partial save); those whose twin failed to decode are unreadable too."""
        rows = list(self.kept)
        unreadable = list(self.unreadable)
        for entry in duplicates:
            if entry.sha256 in self.encoded_by_hash:
                rows.append((entry, self.encoded_by_hash[entry.sha256]))
            elif entry.sha256 in self.failed_hashes:
                unreadable.append(entry)
        rows.sort(key=lambda item: item[0].path)
        dim = self.dim or 0
        embeddings = torch.stack([vector for _, vector in rows]).float() if rows else torch.zeros(0, dim)
        return GalleryIndex(
            gallery=self.root,
            directory=self.directory,
            fingerprint=self.fingerprint,
            model=self.model_name,
            entries=[entry for entry, _ in rows],
            embeddings=embeddings.contiguous(),
            unreadable=sorted(unreadable, key=lambda entry: entry.path),
        )
