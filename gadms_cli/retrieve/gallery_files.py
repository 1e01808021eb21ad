"""The gallery folder on disk: which files are images, their content hashes, and the lock that
lets two processes updating one index take turns (for ``gallery_index.py``)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
LOCK_FILE = ".lock"


def find_images(gallery: Path, skip: Sequence[Path] = ()) -> list[tuple[str, os.stat_result]]:
    """``(relative POSIX path, stat)`` of every image under ``gallery``, sorted by path.

    Hidden files and folders are skipped, and so is every folder in ``skip`` (an index
    folder kept inside the gallery under a visible name). Symbolic links to files count.
    """
    skip_set = {p.resolve() for p in skip}
    found: list[tuple[str, os.stat_result]] = []
    for folder, dirs, files in os.walk(gallery):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip_set)
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = here / name
            try:
                stat = path.stat()
            except OSError:  # a dangling link or a file deleted while we walk
                continue
            found.append((path.relative_to(gallery).as_posix(), stat))
    found.sort(key=lambda item: item[0])
    return found


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/.lock`` (POSIX flock; no lock where fcntl is missing),
    so two processes updating one index take turns instead of deleting each other's files."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(directory / LOCK_FILE, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another gadms process that is updating the index in {directory} ...", file=sys.stderr, flush=True)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
