"""Atomic file writes: never leave a half-written output behind.

Every file the project writes goes through :func:`atomic_write` (or
:func:`atomic_path` for libraries that want a path), which writes to a
temporary name in the same folder and renames it into place only once the
content is complete. A killed process leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On an exception the temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates the file 0600; give it the permissions an ordinary open() would.
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``target`` only when the block ends cleanly."""
    binary = "b" in mode
    with atomic_path(target) as tmp:
        with open(tmp, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def require_writable(path: str | os.PathLike, flag: str) -> None:
    """Raise a one-line GadmsError naming ``flag`` unless a file can be written at ``path``
    (checked BEFORE long work, so results are never computed only to be lost)."""
    from gadms_cli.errors import GadmsError

    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise GadmsError(f"{flag} {target}: is a folder; pass a file name")
    if not folder.is_dir():
        raise GadmsError(f"{flag} {target}: the folder {folder} does not exist; create it or pass another path")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise GadmsError(f"{flag} {target}: not writable; pass a path you can write")
