"""``Retriever``: photo search from Python (notebooks, scripts); the ``gadms retrieve`` command uses it too.

>>> from gadms_cli.retrieve import Retriever
>>> retriever = Retriever("runs/quickstart")          # a run or model folder, a weights file or an architecture
>>> report = retriever.index("~/photos")              # encodes new/changed images only (cached in ~/photos/.gadms)
>>> result = retriever.search("a woman wearing a red coat", top_k=5, explain=True)
>>> [(hit.rank, round(hit.score, 3), hit.path.name) for hit in result.hits]
>>> result.explanation.words()                       # [("a", 0.12), ("woman", 0.8), ...]

Library code: it never prints; long loops show a progress bar only when
``gadms_cli.progress.enable()`` was called (the CLI does).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn

from gadms_cli.errors import GadmsError
from gadms_cli.retrieve.explain import DEFAULT_ATTRIBUTION, DEFAULT_LAYERS, Explanation, explain_match
from gadms_cli.retrieve.gallery_index import (
    DEFAULT_SAVE_INTERVAL_S,
    FAISS_PREFIX,
    GalleryIndex,
    IndexReport,
    update_index,
)
from gadms_cli.retrieve.search import FAISS_MIN_ROWS, Backend, ExactSearch, FaissSearch, make_searcher


@dataclass(frozen=True)
class Hit:
    """One ranked gallery image: ``rank`` from 1, cosine ``score``, absolute ``path``,
    ``relative_path`` inside the gallery (POSIX)."""

    rank: int
    score: float
    path: Path
    relative_path: str


@dataclass
class QueryResult:
    """The ranking for one query (``kind`` "text": the query is a sentence; "image": a file path)."""

    query: str
    kind: Literal["text", "image"]
    hits: list[Hit]
    explanation: Explanation | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)  # "encode" (query embedding), "search"


def default_workers() -> int:
    """Image-decoding processes: half the CPUs (the model uses the rest), at most 8; 0 on a single CPU."""
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(8, max(1, cpus // 2))


class Retriever:
    """Index a photo folder with a model and search it with sentences or example images.

    Args:
        model: a loaded ``PersonCLIP``, or what ``gadms retrieve --model`` accepts (a run or
            checkpoint folder, a weights file, an open_clip architecture name); None follows
            ``--model``'s fallbacks ($GADMS_MODEL, then ``gadms-quickstart/model``).
        pretrained, arch, image_size: as ``--pretrained``, ``--arch``, ``--image-size``.
        device: "cuda", "cpu" ...; default CUDA when available.
        batch_size, num_workers: image encoding batches and decoding processes.
        backend: "auto", "torch" (exact) or "faiss" (approximate HNSW, needs faiss), see search.py.
        faiss_min_rows: gallery size from which "auto" uses faiss.
    """

    def __init__(
        self,
        model: nn.Module | str,
        *,
        pretrained: str | None = None,
        arch: str | None = None,
        image_size: tuple[int, int] | None = None,
        source_image_size: tuple[int, int] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 128,
        num_workers: int | None = None,
        backend: Backend = "auto",
        faiss_min_rows: int = FAISS_MIN_ROWS,
    ) -> None:
        from gadms_cli.data.transforms import eval_transform
        from gadms_cli.model.resolve import load_model
        from gadms_cli.model.tokenizer import Tokenizer

        if isinstance(model, nn.Module):
            self.model = model.eval()
            self.model_name = getattr(getattr(model, "config", None), "arch", type(model).__name__)
        else:
            if not model:  # the CLI resolves its defaults ($GADMS_MODEL, the quickstart's model); the library does not
                raise ValueError("Retriever needs a model: a PersonCLIP, a model or run folder, a weights file or an architecture")
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model_name = str(model)
            self.model = load_model(
                model, pretrained=pretrained, arch=arch, image_size=image_size, source_image_size=source_image_size, device=device
            )
        config = self.model.config
        self.tokenizer = Tokenizer(config.context_length)
        self.transform = eval_transform(tuple(config.image_size))
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.backend: Backend = backend
        self.faiss_min_rows = faiss_min_rows
        self.gallery: GalleryIndex | None = None
        self._fingerprint: str | None = None
        self._searcher: ExactSearch | FaissSearch | None = None

    @property
    def fingerprint(self) -> str:
        """The model's fingerprint (hex SHA-256 of config + weights), computed once."""
        if self._fingerprint is None:
            from gadms_cli.retrieve.fingerprint import model_fingerprint

            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @property
    def searcher(self) -> ExactSearch | FaissSearch:
        """The searcher over the indexed gallery (built on first use)."""
        gallery = self._require_index()
        if self._searcher is None:
            cache = gallery.directory / f"{FAISS_PREFIX}{_token(gallery.embeddings_file)}.index"
            self._searcher = make_searcher(gallery.embeddings, self.backend, self.faiss_min_rows, cache_file=cache)
        return self._searcher

    # --- indexing ---------------------------------------------------------------------

    def index(
        self,
        gallery: str | os.PathLike,
        index_dir: str | os.PathLike | None = None,
        save_interval_s: float | None = DEFAULT_SAVE_INTERVAL_S,
    ) -> IndexReport:
        """Index (or update the index of) the images under ``gallery``; later searches use it.

        ``index_dir``: where indexes are kept (default ``GALLERY/.gadms``); each model gets
        its own sub-folder. Returns what was done (encoded, reused, dropped, unreadable).
        """
        self.gallery, report = update_index(
            self.model,
            Path(gallery).expanduser(),
            fingerprint=self.fingerprint,
            transform=self.transform,
            index_root=index_dir,
            model_name=self.model_name,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            save_interval_s=save_interval_s,
        )
        self._searcher = None
        return report

    def _require_index(self) -> GalleryIndex:
        if self.gallery is None:
            raise GadmsError("no gallery indexed yet: call Retriever.index(FOLDER) first")
        return self.gallery

    # --- searching --------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentences -> L2-normalised embeddings float32 [Q, D] on CPU."""
        from gadms_cli.encode import encode_texts

        return encode_texts(self.model, self.tokenizer, list(texts), description="encoding queries")

    def encode_image_files(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        """Image files -> L2-normalised embeddings float32 [Q, D]; a file that cannot be read is an error."""
        from gadms_cli.encode import encode_images

        files = [Path(p).expanduser() for p in paths]
        for path in files:
            if not path.is_file():
                raise GadmsError(f"--image {path}: file not found")
        try:
            feats, bad = encode_images(self.model, files, self.transform, self.batch_size, 0, description="encoding query images")
        except ValueError:
            bad, feats = list(range(len(files))), None
        if bad:
            raise GadmsError(f"--image {files[bad[0]]}: not a readable image (jpg, png, webp, bmp ...)")
        return feats  # type: ignore[return-value]

    def search(self, query: str, top_k: int = 10, explain: bool = False, attribution: str = DEFAULT_ATTRIBUTION) -> QueryResult:
        """Rank the gallery for one sentence; with ``explain``, score its tokens against the top hit
        (``attribution``: ``"loo"`` leave-one-out or ``"ga"`` GA score, see :meth:`explain`)."""
        return self.search_texts([query], top_k, explain, attribution)[0]

    def search_texts(
        self, queries: Sequence[str], top_k: int = 10, explain: bool = False, attribution: str = DEFAULT_ATTRIBUTION
    ) -> list[QueryResult]:
        """Rank the gallery for each sentence (encoded in one batch)."""
        self._require_index()
        started = time.perf_counter()
        embeddings = self.encode_texts(queries)
        encode_ms = 1000 * (time.perf_counter() - started) / max(1, len(queries))
        results = self._rank(list(queries), "text", embeddings, top_k, encode_ms)
        if explain:
            for result in results:
                if result.hits:
                    result.explanation = self.explain(result.query, result.hits[0].path, attribution=attribution)
        return results

    def search_image(self, image: str | os.PathLike, top_k: int = 10) -> QueryResult:
        """Rank the gallery by similarity to an example image."""
        self._require_index()
        started = time.perf_counter()
        embedding = self.encode_image_files([image])
        encode_ms = 1000 * (time.perf_counter() - started)
        return self._rank([str(image)], "image", embedding, top_k, encode_ms)[0]

    def _rank(
        self, queries: list[str], kind: Literal["text", "image"], embeddings: torch.Tensor, top_k: int, encode_ms: float
    ) -> list[QueryResult]:
        gallery = self._require_index()
        searcher = self.searcher
        started = time.perf_counter()
        scores, rows = searcher.search(embeddings, top_k)
        search_ms = 1000 * (time.perf_counter() - started) / max(1, len(queries))
        results = []
        for query, score_row, index_row in zip(queries, scores.tolist(), rows.tolist()):
            hits = [
                Hit(rank, score, gallery.gallery / gallery.entries[row].path, gallery.entries[row].path)
                for rank, (score, row) in enumerate(((s, r) for s, r in zip(score_row, index_row) if r >= 0), start=1)
            ]
            results.append(QueryResult(query, kind, hits, timings_ms={"encode": encode_ms, "search": search_ms}))
        return results

    # --- explaining -------------------------------------------------------------------

    def explain(
        self,
        query: str,
        image: str | os.PathLike | None = None,
        num_layers: int = DEFAULT_LAYERS,
        attribution: str = DEFAULT_ATTRIBUTION,
    ) -> Explanation:
        """Score of each token of ``query`` against ``image`` (default: the query's top hit):
        ``attribution="loo"`` (exact leave-one-out, the default) or ``"ga"`` (the GA score).

        ``image`` may be a gallery path (relative or absolute) or any image file.
        """
        if image is None:
            hits = self.search(query, top_k=1).hits
            if not hits:
                raise GadmsError("the gallery is empty: nothing to explain")
            image = hits[0].path
        gallery = self.gallery
        row = gallery.row_of(image) if gallery is not None else None
        if row is not None:
            embedding = gallery.embeddings[row]  # type: ignore[union-attr]
            path = gallery.gallery / gallery.entries[row].path  # type: ignore[union-attr]
        else:
            embedding = self.encode_image_files([image])[0]
            path = Path(image)
        return explain_match(self.model, self.tokenizer, query, embedding, path, num_layers, attribution)


def _token(embeddings_file: str | None) -> str:
    """The random token in ``embeddings-<token>.safetensors`` (ties a faiss cache to its embeddings)."""
    if not embeddings_file:
        return "none"
    return embeddings_file.removeprefix("embeddings-").removesuffix(".safetensors")
