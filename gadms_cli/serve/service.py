"""The search service behind ``gadms serve``: one model, one gallery index, safe under concurrency.

- **Snapshots.** Searches read an immutable :class:`Snapshot` (the index, its searcher and
  the id -> file map). A reindex builds a new snapshot on the side and swaps it in with one
  assignment, so a search sees either the old index or the new one, never a mix.
- **One model call at a time.** Query encoding and explanations take ``model_lock``; the
  web server's thread pool therefore never runs two query forwards at once. Reindexing
  encodes with the same (read-only, eval-mode) model; searches meanwhile use the old snapshot.
- **Ids, never paths.** Every indexed file gets a stable id (16 hex digits of the SHA-256 of
  its path inside the gallery); images and thumbnails are looked up by id only. A file whose
  real location (links resolved) is outside the gallery is neither returned nor served.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from gadms_cli.encode import embed_pixels
from gadms_cli.errors import GadmsError
from gadms_cli.retrieve import Retriever
from gadms_cli.retrieve.explain import Explanation, explain_match
from gadms_cli.retrieve.gallery_index import GalleryIndex, IndexReport
from gadms_cli.retrieve.search import ExactSearch, FaissSearch

THUMBNAIL_BOX = (128, 256)  # (width, height) in pixels, aspect kept
THUMBNAIL_CACHE = 2048  # thumbnails kept in memory


def image_id(relative_path: str) -> str:
    """The stable id of a gallery file: 16 hex digits of SHA-256 of its POSIX path inside the gallery."""
    return hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """One indexed state of the gallery; never changed after it is built."""

    index: GalleryIndex
    searcher: ExactSearch | FaissSearch
    rows_by_id: dict[str, int]  # servable rows only
    hidden_rows: frozenset[int]  # indexed files whose real location is outside the gallery: never returned
    built_at: float  # time.time() when indexing finished
    report: IndexReport


@dataclass(frozen=True)
class Match:
    rank: int
    score: float
    id: str
    path: str  # inside the gallery, POSIX


class NotReady(Exception):
    """No index yet: the first indexing is still running (HTTP 503)."""


class UnknownImage(Exception):
    """No indexed image has this id, or its file is gone or outside the gallery (HTTP 404)."""


class SearchService:
    """Search over one gallery folder with one model (see module docstring)."""

    def __init__(self, retriever: Retriever, gallery: Path, index_dir: Path | None = None) -> None:
        self.retriever = retriever
        self.gallery = Path(gallery).expanduser().resolve()
        self.index_dir = index_dir
        self.model_lock = threading.Lock()
        self._reindex_lock = threading.Lock()
        self.snapshot: Snapshot | None = None
        self.indexing = False
        self.last_error: str | None = None
        self._thumbnails: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._thumbnail_lock = threading.Lock()

    # --- indexing -----------------------------------------------------------------------

    def reindex(self) -> IndexReport:
        """Bring the index up to date (new, changed and removed files) and swap it in."""
        with self._reindex_lock:
            self.indexing = True
            try:
                # Searches read the snapshot, never retriever.gallery, so indexing in place is safe.
                report = self.retriever.index(self.gallery, index_dir=self.index_dir)
                index = self.retriever.gallery
                assert index is not None
                hidden = frozenset(row for row, entry in enumerate(index.entries) if not self._inside(index.gallery / entry.path))
                rows = {image_id(entry.path): row for row, entry in enumerate(index.entries) if row not in hidden}
                self.snapshot = Snapshot(index, self.retriever.searcher, rows, hidden, time.time(), report)  # the atomic swap
                self.last_error = None
                return report
            except GadmsError as error:
                self.last_error = str(error)
                raise
            finally:
                self.indexing = False

    def reindex_in_background(self) -> bool:
        """Start :meth:`reindex` in a thread; False if one is already running."""
        if self._reindex_lock.locked():
            return False

        def run() -> None:
            try:
                self.reindex()
            except GadmsError:
                pass  # kept in last_error, shown by /api/info and /api/health

        threading.Thread(target=run, name="gadms-reindex", daemon=True).start()
        return True

    def _inside(self, path: Path) -> bool:
        """Whether ``path``, links resolved, lies inside the gallery."""
        return path.resolve().is_relative_to(self.gallery)

    def current(self) -> Snapshot:
        snapshot = self.snapshot
        if snapshot is None:
            raise NotReady(self.last_error or "the gallery is being indexed; try again in a moment")
        return snapshot

    # --- searching ----------------------------------------------------------------------

    def _rank(self, snapshot: Snapshot, embedding: torch.Tensor, k: int, exclude: int | None = None) -> list[Match]:
        wanted = min(len(snapshot.index), k + (exclude is not None) + len(snapshot.hidden_rows))
        if wanted == 0:
            return []
        scores, rows = snapshot.searcher.search(embedding[None], wanted)
        matches: list[Match] = []
        for score, row in zip(scores[0].tolist(), rows[0].tolist()):
            if row < 0 or row == exclude or row in snapshot.hidden_rows:
                continue
            path = snapshot.index.entries[row].path
            matches.append(Match(len(matches) + 1, score, image_id(path), path))
        return matches[:k]

    def search_text(self, query: str, k: int, explain: bool = False) -> tuple[list[Match], Explanation | None, dict[str, float]]:
        """Top ``k`` for a sentence, and (``explain``) the per-token attribution against the top hit."""
        snapshot = self.current()
        started = time.perf_counter()
        with self.model_lock:
            embedding = self.retriever.encode_texts([query])[0]
        encoded = time.perf_counter()
        matches = self._rank(snapshot, embedding, k)
        timings = {"encode": 1000 * (encoded - started), "search": 1000 * (time.perf_counter() - encoded)}
        explanation = None
        if explain and matches:
            row = snapshot.rows_by_id[matches[0].id]
            with self.model_lock:
                explanation = explain_match(self.retriever.model, self.retriever.tokenizer, query, snapshot.index.embeddings[row],
                                            snapshot.index.gallery / matches[0].path)
        return matches, explanation, timings

    def search_indexed_image(self, image: str, k: int) -> list[Match]:
        """Top ``k`` for a gallery image given by id (the image itself left out)."""
        snapshot = self.current()
        row = snapshot.rows_by_id.get(image)
        if row is None:
            raise UnknownImage(image)
        return self._rank(snapshot, snapshot.index.embeddings[row], k, exclude=row)

    def search_uploaded_image(self, picture: Image.Image, k: int) -> list[Match]:
        """Top ``k`` for an uploaded picture (already decoded)."""
        snapshot = self.current()
        pixels = self.retriever.transform(picture.convert("RGB"))[None]
        with self.model_lock:
            embedding = embed_pixels(self.retriever.model, pixels)[0]
        return self._rank(snapshot, embedding, k)

    # --- files ----------------------------------------------------------------------------

    def file_of(self, image: str) -> Path:
        """The real file of an indexed image id; UnknownImage if none, gone, or outside the gallery."""
        snapshot = self.current()
        row = snapshot.rows_by_id.get(image)
        if row is None:
            raise UnknownImage(image)
        path = (snapshot.index.gallery / snapshot.index.entries[row].path).resolve()
        if not path.is_relative_to(self.gallery) or not path.is_file():
            raise UnknownImage(image)  # a link moved out of the gallery, or a file removed since indexing
        return path

    def thumbnail(self, image: str) -> bytes:
        """A JPEG thumbnail (at most THUMBNAIL_BOX) of an indexed image; cached by (id, mtime)."""
        path = self.file_of(image)
        key = (image, path.stat().st_mtime_ns)
        with self._thumbnail_lock:
            if key in self._thumbnails:
                self._thumbnails.move_to_end(key)
                return self._thumbnails[key]
        try:
            with Image.open(path) as picture:
                picture = picture.convert("RGB")
                picture.thumbnail(THUMBNAIL_BOX)
                buffer = io.BytesIO()
                picture.save(buffer, "JPEG", quality=85)
        except (OSError, UnidentifiedImageError, ValueError):
            raise UnknownImage(image) from None
        data = buffer.getvalue()
        with self._thumbnail_lock:
            self._thumbnails[key] = data
            while len(self._thumbnails) > THUMBNAIL_CACHE:
                self._thumbnails.popitem(last=False)
        return data
