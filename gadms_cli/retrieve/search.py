"""Top-k search of a gallery of L2-normalised embeddings by cosine similarity (= inner product).

Two searchers with one method, ``search(queries [Q, D]) -> (scores [Q, k], rows [Q, k])``:

- :class:`ExactSearch` (torch, the default): the exact top k. Ties are broken by gallery
  row (the lower row first, as a stable sort would), so the result equals a brute-force
  ranking. Scoring one query against a large gallery reads the whole [N, D] matrix, so
  its speed is the memory bandwidth; from ``COARSE_MIN_ROWS`` rows on, a query alone (or
  a few) is first scored against a float16 copy of the gallery (half the bytes), then every
  row that could still be in the top k is rescored in float32. Float16 rounding moves a
  score of unit vectors by at most about 2**-10 (inputs) + 2**-11 (output) + D * 2**-24
  (accumulation); rows within ``2 * COARSE_MARGIN`` (4x that bound) of the k-th coarse
  score are rescored, so the result is still exact. A self-check at construction falls
  back to float32 alone on a machine whose float16 kernels are less accurate.
- :class:`FaissSearch` (optional, ``pip install 'gadms[faiss]'``): a faiss HNSW graph
  (inner product, M = 32) for galleries past ``FAISS_MIN_ROWS`` rows, about 1 ms per
  query on 100k x 512 instead of about 15 ms, approximate (recall@10 measured 1.0 at
  ``ef_search`` 64 on 100k clustered vectors, see benchmarks/retrieve.py). Building the
  graph costs about two minutes per 100k rows on two cores, so it is cached in the index
  folder beside the embeddings it was built from.

:func:`make_searcher` picks one (``backend="auto"``: faiss when it is installed and the
gallery has at least ``FAISS_MIN_ROWS`` rows, else exact torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import torch

from gadms_cli.errors import GadmsError
from gadms_cli.fileio import atomic_path
from gadms_cli.progress import track

Backend = Literal["auto", "torch", "faiss"]
BACKENDS = ("auto", "torch", "faiss")
FAISS_MIN_ROWS = 250_000  # below this, exact search is fast enough and needs no graph to build
COARSE_MIN_ROWS = 50_000  # below this, float32 alone takes a few ms
COARSE_MAX_QUERIES = 4  # float16 matrix products are slow on CPUs; a float32 GEMM wins for larger batches
COARSE_MARGIN = 2.0**-8  # bound on |float16 score - float32 score| we rely on (4x the analytic bound)
QUERY_CHUNK = 64  # queries scored at once in float32 ([64, N] scores in memory)


class Searcher(Protocol):
    """What both searchers offer."""

    name: str

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def _stable_top_k(candidate_rows: torch.Tensor, candidate_scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of some candidates (rows ascending), ties to the lower row: (scores [k], rows [k])."""
    order = torch.sort(candidate_scores, descending=True, stable=True).indices[:k]
    return candidate_scores[order], candidate_rows[order]


class ExactSearch:
    """Exact top-k over ``embeddings`` float32 [N, D] (L2-normalised rows), see the module docstring."""

    name = "torch-exact"

    def __init__(self, embeddings: torch.Tensor, coarse_min_rows: int = COARSE_MIN_ROWS) -> None:
        self.embeddings = embeddings.detach().to("cpu", torch.float32).contiguous()
        self.coarse: torch.Tensor | None = None
        if len(self.embeddings) >= coarse_min_rows:
            coarse = self.embeddings.half()
            if self._coarse_is_accurate(coarse):
                self.coarse = coarse

    def _coarse_is_accurate(self, coarse: torch.Tensor, rows: int = 4096) -> bool:
        """Check this machine's float16 scores against float32 on a sample: within a quarter of the margin."""
        generator = torch.Generator().manual_seed(0)
        sample = torch.randint(0, len(self.embeddings), (min(rows, len(self.embeddings)),), generator=generator)
        queries = torch.nn.functional.normalize(self.embeddings[sample[:8]] + 0.1, dim=1)
        exact = self.embeddings[sample] @ queries.T
        for query, column in zip(queries, exact.T):
            approx = (coarse[sample] @ query.half()).float()
            if (approx - column).abs().max().item() > COARSE_MARGIN / 4:
                return False
        return True

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries float32 [Q, D] (L2-normalised) -> (cosine scores [Q, k'], gallery rows [Q, k']),
        best first, k' = min(k, N)."""
        queries = queries.detach().to("cpu", torch.float32)
        k = min(int(k), len(self.embeddings))
        if k <= 0:
            return torch.zeros(len(queries), 0), torch.zeros(len(queries), 0, dtype=torch.long)
        out_scores, out_rows = [], []
        if self.coarse is not None and len(queries) <= COARSE_MAX_QUERIES:
            for query in queries:
                approx = (self.coarse @ query.half()).float()  # [N]
                kth = torch.topk(approx, k).values[-1]
                candidates = torch.nonzero(approx >= kth - 2 * COARSE_MARGIN).squeeze(1)
                scores, rows = _stable_top_k(candidates, self.embeddings[candidates] @ query, k)
                out_scores.append(scores)
                out_rows.append(rows)
        else:
            for start in range(0, len(queries), QUERY_CHUNK):
                block = queries[start : start + QUERY_CHUNK] @ self.embeddings.T  # [q, N]
                kth = torch.topk(block, k, dim=1).values[:, -1]
                for row_scores, threshold in zip(block, kth):
                    candidates = torch.nonzero(row_scores >= threshold).squeeze(1)  # every tie of the k-th
                    scores, rows = _stable_top_k(candidates, row_scores[candidates], k)
                    out_scores.append(scores)
                    out_rows.append(rows)
        return torch.stack(out_scores), torch.stack(out_rows)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissSearch:
    """Approximate top-k with a faiss HNSW graph (inner product) over ``embeddings`` float32 [N, D].

    ``cache_file``: where the graph is stored; it is read when present and matches [N, D],
    else built (with a progress bar) and written atomically.
    """

    name = "faiss-hnsw"

    def __init__(
        self,
        embeddings: torch.Tensor,
        cache_file: Path | None = None,
        m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
    ) -> None:
        import faiss

        data = embeddings.detach().to("cpu", torch.float32).contiguous().numpy()
        self.ef_search = ef_search
        index = None
        if cache_file is not None and cache_file.is_file():
            try:
                index = faiss.read_index(str(cache_file))
            except RuntimeError:  # a damaged cache: build it again
                index = None
            if index is not None and (index.ntotal != len(data) or index.d != data.shape[1]):
                index = None
        if index is None:
            index = faiss.IndexHNSWFlat(data.shape[1], m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            step = 10_000
            starts = range(0, len(data), step)
            for start in track(starts, "building the faiss graph", total=len(starts)):
                index.add(data[start : start + step])
            if cache_file is not None:
                with atomic_path(cache_file) as tmp:
                    faiss.write_index(index, str(tmp))
        self.index = index

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries float32 [Q, D] -> (scores [Q, k'], rows [Q, k']), best first; k' = min(k, N)."""
        k = min(int(k), self.index.ntotal)
        if k <= 0:
            return torch.zeros(len(queries), 0), torch.zeros(len(queries), 0, dtype=torch.long)
        self.index.hnsw.efSearch = max(self.ef_search, k)
        scores, rows = self.index.search(queries.detach().to("cpu", torch.float32).contiguous().numpy(), k)
        out_scores, out_rows = [], []
        for score_row, index_row in zip(torch.from_numpy(scores), torch.from_numpy(rows).long()):
            found = index_row >= 0  # faiss pads with -1 when the graph yields fewer than k
            order = torch.argsort(index_row[found])  # rows ascending, then a stable sort by score
            best_scores, best_rows = _stable_top_k(index_row[found][order], score_row[found][order], k)
            pad = k - len(best_rows)
            out_scores.append(torch.cat([best_scores, torch.full((pad,), float("-inf"))]))
            out_rows.append(torch.cat([best_rows, torch.full((pad,), -1, dtype=torch.long)]))
        return torch.stack(out_scores), torch.stack(out_rows)


def make_searcher(
    embeddings: torch.Tensor,
    backend: Backend = "auto",
    faiss_min_rows: int = FAISS_MIN_ROWS,
    cache_file: Path | None = None,
) -> ExactSearch | FaissSearch:
    """The searcher for a gallery of ``embeddings`` [N, D] (see the module docstring)."""
    if backend not in BACKENDS:
        raise GadmsError(f"--backend {backend}: choose one of {', '.join(BACKENDS)}")
    if backend == "faiss" and not faiss_available():
        raise GadmsError("--backend faiss needs faiss: pip install faiss-cpu (the gadms 'faiss' extra), or use --backend torch")
    use_faiss = backend == "faiss" or (backend == "auto" and len(embeddings) >= faiss_min_rows and faiss_available())
    if use_faiss and len(embeddings):
        return FaissSearch(embeddings, cache_file=cache_file)
    return ExactSearch(embeddings)
