"""Evaluation: retrieval metrics of the IRRA protocol (docs/metrics.md, docs/metrics.md).

:func:`retrieval_metrics` turns a query x gallery similarity matrix and the identities
of both sides into R@K, mAP and mINP, exactly as the field computes them, without ever
sorting a whole gallery index list:

- the rank of a matching gallery item is 1 + the number of gallery items that beat it
  (a higher score, or the same score at a lower gallery index: ties go by gallery order,
  as a stable sort would put them);
- that count comes from the row's sorted VALUES (no argsort, no index array) and a binary
  search of the few matching scores; ties with a match are resolved by counting equal
  scores at lower indices (or, when a chunk has many ties, by sorting int64 keys that
  combine score and index and cannot tie);
- R@K, AP and INP only need the ranks of the matches.

Queries are processed in chunks of rows, so memory stays at a few copies of one chunk
whatever the matrix size; each chunk's rows are sorted on all CPU threads torch may use
(``torch.get_num_threads()``; numpy's sort releases the GIL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from gadms_cli.errors import GadmsError

# Rows per chunk by default: about 2**24 similarity values (64 MB in float32) per chunk.
_CHUNK_VALUES = 1 << 24
# Above this many tied matches per query (on average over a chunk), resolving each tie
# by scanning its row costs more than sorting (score, index) keys that cannot tie.
_TIES_PER_QUERY_FOR_KEY_SORT = 0.25


def retrieval_metrics(
    similarity: Any,
    query_ids: Any,
    gallery_ids: Any,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    unmatched: str = "exclude",
) -> dict[str, float | int]:
    """R@K, mAP and mINP (percent) of a retrieval, IRRA protocol.

    For query ``q`` the gallery is ranked by descending similarity; ``m_k = 1`` when the
    k-th item has ``q``'s identity, ``n_q`` is the number of such items.
    ``R@K = 100 * mean_q any(m_1..m_K)``;
    ``AP_q = (1/n_q) * sum_k m_k * (sum_{j<=k} m_j) / k``, ``mAP = 100 * mean_q AP_q``;
    ``INP_q = n_q / rank of the last match``, ``mINP = 100 * mean_q INP_q``.

    Ties: equal scores are ordered by gallery index (a stable sort), so of a match and a
    non-match with the same score, the one with the lower gallery index ranks first.

    Queries whose identity has no item in the gallery: with ``unmatched="exclude"``
    (default, the re-identification convention, e.g. Market-1501's evaluation) they are
    left out of every mean; with ``unmatched="miss"`` they count as misses (R@K, AP and INP
    all 0). The text-based person retrieval benchmarks have none. Either way their number
    is reported.

    Image-to-text retrieval is ``retrieval_metrics(similarity.T, gallery_ids, query_ids)``.

    Args:
        similarity: ``[Q, G]`` scores (cosine similarity), numpy array or torch tensor
            (any device) of float16, bfloat16, float32 or float64. Not modified.
        query_ids: ``[Q]`` identity of each query (numpy, torch or a sequence).
        gallery_ids: ``[G]`` identity of each gallery item.
        ks: the K of R@K.
        chunk_size: queries per chunk; default about 2**24 / G rows.
        unmatched: ``"exclude"`` or ``"miss"`` (see above).
    Returns:
        ``{"R1", "R5", "R10" (one "R{k}" per k), "mAP", "mINP"}`` as floats in percent, plus
        ``"num_queries"`` (queries the means run over) and ``"num_unmatched_queries"`` (ints).
    Raises:
        ValueError: shapes that do not fit, NaN scores, bad ``unmatched`` or ``ks``.
        GadmsError: with ``unmatched="exclude"``, when no query has a match in the gallery.
    """
    if unmatched not in ("exclude", "miss"):
        raise ValueError(f'unmatched must be "exclude" or "miss", got {unmatched!r}')
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"every K of R@K must be >= 1, got {ks}")
    query_ids = _as_ids(query_ids)
    gallery_ids = _as_ids(gallery_ids)
    num_queries, num_gallery = (int(n) for n in similarity.shape)
    if similarity.ndim != 2 or num_queries != len(query_ids) or num_gallery != len(gallery_ids):
        raise ValueError(
            f"similarity of shape {tuple(similarity.shape)} does not fit "
            f"{len(query_ids)} query ids x {len(gallery_ids)} gallery ids"
        )
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_VALUES // max(num_gallery, 1))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    matches = _GalleryMatches.build(query_ids, gallery_ids)
    totals = _QueryTotals(ks)
    workers = max(1, torch.get_num_threads())
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, num_queries, chunk_size):
            stop = min(start + chunk_size, num_queries)
            scores = _chunk_as_numpy(similarity, start, stop)
            match_index, match_valid = matches.table(start, stop)
            ranks = _match_ranks(scores, match_index, match_valid, pool, workers)
            totals.add(ranks, match_valid)

    num_unmatched = int((matches.num_matches == 0).sum())
    scored = num_queries - num_unmatched if unmatched == "exclude" else num_queries
    if scored == 0:
        if num_queries == 0:
            raise ValueError("retrieval_metrics needs at least one query")
        raise GadmsError(
            "no query identity appears in the gallery: check that query and gallery ids "
            "come from the same split and use the same id numbering"
        )
    result: dict[str, float | int] = {f"R{k}": 100.0 * totals.hits[k] / scored for k in ks}
    result["mAP"] = 100.0 * totals.ap_sum / scored
    result["mINP"] = 100.0 * totals.inp_sum / scored
    result["num_queries"] = scored
    result["num_unmatched_queries"] = num_unmatched
    return result


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def _as_ids(ids: Any) -> np.ndarray:
    """A 1-D numpy array of identities from numpy, torch or a sequence."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"identity arrays must be 1-D, got shape {ids.shape}")
    return ids


def _chunk_as_numpy(similarity: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` as a C-contiguous float32 array, or float64 when float32 would
    round some value (a rounding could create or break a tie)."""
    if isinstance(similarity, torch.Tensor):
        rows = similarity[start:stop].detach()
        if rows.dtype in (torch.float16, torch.bfloat16):
            rows = rows.float()
        rows = rows.cpu().numpy()
    else:
        rows = np.asarray(similarity[start:stop])
    if rows.dtype == np.float64:
        as32 = rows.astype(np.float32)
        if np.array_equal(as32.astype(np.float64), rows):
            return as32
        return np.ascontiguousarray(rows)
    if not np.issubdtype(rows.dtype, np.floating):
        raise ValueError(f"similarity must be a float array, got dtype {rows.dtype}")
    return np.ascontiguousarray(rows, dtype=np.float32)


@dataclass
class _GalleryMatches:
    """For each query, the gallery indices of its identity, in increasing index order."""

    query_group: np.ndarray  # [Q] first position of the query's identity in ``order``
    num_matches: np.ndarray  # [Q] n_q (0 when the identity is absent from the gallery)
    order: np.ndarray  # [G] gallery indices sorted by (identity, index)

    @classmethod
    def build(cls, query_ids: np.ndarray, gallery_ids: np.ndarray) -> "_GalleryMatches":
        order = np.argsort(gallery_ids, kind="stable")
        unique_ids, group_start, group_size = np.unique(
            gallery_ids[order], return_index=True, return_counts=True
        )
        position = np.searchsorted(unique_ids, query_ids)
        position = np.minimum(position, max(len(unique_ids) - 1, 0))
        if len(unique_ids):
            found = unique_ids[position] == query_ids
            start = np.where(found, group_start[position], 0)
            count = np.where(found, group_size[position], 0)
        else:
            start = count = np.zeros(len(query_ids), dtype=np.int64)
        return cls(start.astype(np.int64), count.astype(np.int64), order)

    def table(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Matches of queries ``[start, stop)``, padded to the chunk's largest ``n_q``.

        Returns ``(index [C, N] int64, valid [C, N] bool)``; padded entries have index 0.
        """
        count = self.num_matches[start:stop]
        width = int(count.max()) if len(count) else 0
        column = np.arange(width)
        valid = column[None, :] < count[:, None]
        slots = np.where(valid, self.query_group[start:stop, None] + column[None, :], 0)
        index = np.where(valid, self.order[slots] if len(self.order) else 0, 0)
        return index.astype(np.int64), valid


# ---------------------------------------------------------------------------
# Ranks of the matches
# ---------------------------------------------------------------------------


def _sort_rows(values: np.ndarray, pool: ThreadPoolExecutor, workers: int) -> np.ndarray:
    """Each row of ``values`` sorted ascending (a new array), rows split across threads."""
    out = np.empty_like(values)
    bounds = np.linspace(0, len(values), workers + 1).astype(int)

    def sort_block(i: int) -> None:
        block = out[bounds[i] : bounds[i + 1]]
        block[...] = values[bounds[i] : bounds[i + 1]]
        block.sort(axis=1)

    list(pool.map(sort_block, range(workers)))
    return out


def _count_at_or_below(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, how many entries of ``sorted_rows`` ``[C, G]`` (ascending) are <= each of
    ``values`` ``[C, N]``; ``[C, N]`` int64."""
    return torch.searchsorted(
        torch.from_numpy(sorted_rows), torch.from_numpy(np.ascontiguousarray(values)), side="right"
    ).numpy()


def _match_ranks(
    scores: np.ndarray,
    match_index: np.ndarray,
    match_valid: np.ndarray,
    pool: ThreadPoolExecutor,
    workers: int,
) -> np.ndarray:
    """1-based rank of every match of every query in the chunk.

    Args:
        scores: ``[C, G]`` float32 or float64 similarity rows.
        match_index, match_valid: ``[C, N]`` from :meth:`_GalleryMatches.table`.
    Returns:
        ``[C, N]`` int64 ranks (arbitrary at invalid entries).
    """
    if match_index.shape[1] == 0:
        return np.zeros(match_index.shape, dtype=np.int64)
    match_scores = np.take_along_axis(scores, match_index, axis=1)
    sorted_rows = _sort_rows(scores, pool, workers)
    if np.isnan(sorted_rows[:, -1]).any():  # NaN sorts last in numpy
        raise ValueError("similarity contains NaN")
    at_or_below = _count_at_or_below(sorted_rows, match_scores)
    strictly_above = scores.shape[1] - at_or_below
    # sorted_rows[at_or_below - 1] is the match's own score; another item has the same
    # score exactly when the entry before it is equal too.
    before = np.take_along_axis(sorted_rows, np.maximum(at_or_below - 2, 0), axis=1)
    tied = match_valid & (at_or_below >= 2) & (before == match_scores)
    num_tied = int(tied.sum())
    if num_tied == 0:
        return strictly_above + 1
    if scores.dtype == np.float32 and num_tied > _TIES_PER_QUERY_FOR_KEY_SORT * len(scores):
        return _match_ranks_by_keys(scores, match_index, pool, workers)
    earlier_ties = np.zeros(match_index.shape, dtype=np.int64)
    rows, slots = np.nonzero(tied)
    earlier_ties[rows, slots] = _count_earlier_equal(
        scores, rows, match_index[rows, slots], match_scores[rows, slots]
    )
    return strictly_above + earlier_ties + 1


def _count_earlier_equal(
    scores: np.ndarray, rows: np.ndarray, columns: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """For each (row, column, value): how many entries of ``scores[row, :column]`` equal value."""
    num_gallery = scores.shape[1]
    per_batch = max(1, _CHUNK_VALUES // 4 // max(num_gallery, 1))
    counts = np.empty(len(rows), dtype=np.int64)
    position = np.arange(num_gallery)
    for start in range(0, len(rows), per_batch):
        part = slice(start, start + per_batch)
        equal = scores[rows[part]] == values[part, None]
        equal &= position[None, :] < columns[part, None]
        counts[part] = equal.sum(axis=1)
    return counts


def _match_ranks_by_keys(
    scores: np.ndarray, match_index: np.ndarray, pool: ThreadPoolExecutor, workers: int
) -> np.ndarray:
    """Ranks from int64 keys that order by (score, -gallery index) and never tie.

    Used for float32 rows with many ties (e.g. similarities computed in float16). The
    float32 bit pattern, with the 31 low bits flipped for negative numbers, is an int32
    in the same order as the floats; shifted up 32 bits, its low half holds
    ``G - 1 - index`` so that equal scores order by gallery index.
    """
    num_gallery = scores.shape[1]
    bits = (scores + np.float32(0.0)).view(np.int32)  # + 0.0 turns -0.0 into +0.0
    ordered = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64)
    keys = (ordered << 32) | np.arange(num_gallery - 1, -1, -1, dtype=np.int64)[None, :]
    match_keys = np.take_along_axis(keys, match_index, axis=1)
    sorted_keys = _sort_rows(keys, pool, workers)
    return num_gallery - _count_at_or_below(sorted_keys, match_keys) + 1


# ---------------------------------------------------------------------------
# From ranks to metrics
# ---------------------------------------------------------------------------


class _QueryTotals:
    """Running sums over queries of R@K hits, AP and INP."""

    def __init__(self, ks: tuple[int, ...]) -> None:
        self.ks = ks
        self.hits = {k: 0 for k in ks}
        self.ap_sum = 0.0
        self.inp_sum = 0.0

    def add(self, ranks: np.ndarray, valid: np.ndarray) -> None:
        """Add the queries of one chunk: ``ranks`` / ``valid`` ``[C, N]`` as from :func:`_match_ranks`.

        Queries without a valid entry add 0 to every sum.
        """
        if ranks.shape[1] == 0:
            return
        big = np.iinfo(np.int64).max
        ranks = np.sort(np.where(valid, ranks, big), axis=1)  # valid ranks first, ascending
        count = valid.sum(axis=1)
        has_match = count > 0
        for k in self.ks:
            self.hits[k] += int((has_match & (ranks[:, 0] <= k)).sum())
        # k-th best match (1-based) at rank r_k contributes k / r_k to AP before dividing by n_q.
        position = np.arange(1, ranks.shape[1] + 1, dtype=np.float64)
        precision = np.where(_first_n(count, ranks.shape[1]), position[None, :] / ranks, 0.0)
        safe_count = np.maximum(count, 1)
        self.ap_sum += float((precision.sum(axis=1) / safe_count)[has_match].sum())
        last_rank = ranks[np.arange(len(ranks)), np.maximum(count - 1, 0)]
        self.inp_sum += float((count / last_rank)[has_match].sum())


def _first_n(count: np.ndarray, width: int) -> np.ndarray:
    """``[C, width]`` bool, True in the first ``count[c]`` columns of row ``c``."""
    return np.arange(width)[None, :] < count[:, None]


# ---------------------------------------------------------------------------
# Evaluating a model on a benchmark split
# ---------------------------------------------------------------------------


def evaluate_split(
    model: torch.nn.Module,
    split: Any,
    tokenize: Any,
    transform: Any,
    image_batch_size: int = 128,
    text_batch_size: int = 512,
    num_workers: int = 0,
    return_similarity: bool = False,
) -> dict:
    """Text-to-image metrics of ``model`` on an :class:`~gadms_cli.data.records.EvalSplit`.

    Every caption is a query, every image of the split is in the gallery (docs/data-formats.md).
    Returns ``retrieval_metrics``'s dict plus ``queries`` and ``gallery`` counts (and the
    float32 [queries, gallery] cosine matrix under ``similarity`` if asked).
    """
    from gadms_cli.encode import encode_images, encode_texts

    was_training = model.training
    model.eval()
    try:
        image_feats, unreadable = encode_images(model, split.gallery_paths, transform, image_batch_size, num_workers)
        if unreadable:
            raise GadmsError(
                f"{len(unreadable)} gallery images could not be read (first: {split.gallery_paths[unreadable[0]]}); "
                "fix or remove them (gadms data inspect --decode lists them), or pass --skip-missing"
            )
        text_feats = encode_texts(model, tokenize, split.queries, text_batch_size)
    finally:
        model.train(was_training)
    similarity = text_feats @ image_feats.t()
    metrics: dict = dict(retrieval_metrics(similarity, split.query_ids, split.gallery_ids))
    metrics["queries"] = len(split.queries)
    metrics["gallery"] = len(split.gallery_paths)
    if return_similarity:
        metrics["similarity"] = similarity
    return metrics


def top_k_ranking(similarity: torch.Tensor, k: int, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query, the ``k`` best gallery items: (scores [Q, k], gallery indices [Q, k]), best first.

    Ties go by gallery order, as in :func:`retrieval_metrics` (``torch.topk`` does not
    promise an order among equal scores, so each chunk is ranked by a stable sort).
    """
    k = min(k, similarity.shape[1])
    scores, indices = [], []
    for start in range(0, similarity.shape[0], chunk):
        block = similarity[start : start + chunk]
        order = torch.sort(block, dim=1, descending=True, stable=True).indices[:, :k]
        indices.append(order)
        scores.append(torch.gather(block, 1, order))
    return torch.cat(scores), torch.cat(indices)


def evaluate_benchmark(
    model: torch.nn.Module,
    root: Any,
    split: str = "test",
    *,
    skip_missing: bool = False,
    image_batch_size: int = 128,
    num_workers: int = 0,
    ranking_k: int = 0,
    name: str | None = None,
    clean: bool = False,
    interpolation: str = "bilinear",
) -> dict:
    """Load the benchmark folder ``root`` and evaluate ``model`` on ``split`` (records counted as
    IRRA counts them unless ``clean``: see :func:`~gadms_cli.data.benchmarks.load_benchmark`);
    ``interpolation``: the resize filter, ``bilinear`` (IRRA's) or ``bicubic`` (CLIP's).

    Returns ``{"bench", "format", "root", "split", "R1", "R5", "R10", "mAP", "mINP", "queries",
    "gallery", "problems"}`` (``problems``: the benchmark's warnings, skipped images included; plus
    ``"ranking"``: per-query top-``ranking_k`` when asked). ``bench`` is
    ``name`` if given, else the folder's name.
    """
    from pathlib import Path

    from gadms_cli.data.benchmarks import load_benchmark
    from gadms_cli.data.transforms import eval_transform
    from gadms_cli.model.tokenizer import Tokenizer

    # Only the split in use is checked; with skip_missing its images are decoded, so damaged ones are skipped too.
    bench = load_benchmark(Path(root), skip_missing=skip_missing, splits=[split], decode=skip_missing, clean=clean)
    if split not in bench.split_names:
        hint = " (ICFG-PEDES has no validation split)" if bench.format == "icfg-pedes" else ""
        raise GadmsError(
            f"{bench.root}: no '{split}' split{hint}; --split must be one of {', '.join(bench.split_names)}"
        )
    data = bench.eval_split(split)
    config = model.config
    metrics = evaluate_split(
        model,
        data,
        Tokenizer(config.context_length),
        eval_transform(tuple(config.image_size), interpolation),
        image_batch_size=image_batch_size,
        num_workers=num_workers,
        return_similarity=ranking_k > 0,
    )
    result = {"bench": name or bench.root.name, "format": bench.format, "root": str(bench.root), "split": split}
    result.update({key: metrics[key] for key in ("R1", "R5", "R10", "mAP", "mINP", "queries", "gallery")})
    result["problems"] = list(bench.problems)
    if ranking_k > 0:
        scores, indices = top_k_ranking(metrics["similarity"], ranking_k)
        result["ranking"] = [
            {
                "query": data.queries[q],
                "id": data.query_ids[q],
                "top": [
                    {
                        "rank": r + 1,
                        "path": str(data.gallery_paths[int(g)]),
                        "id": data.gallery_ids[int(g)],
                        "score": round(float(s), 6),
                    }
                    for r, (s, g) in enumerate(zip(scores[q], indices[q]))
                ],
            }
            for q in range(len(data.queries))
        ]
    return result
