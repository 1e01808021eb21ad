"""retrieval_metrics against a hand-computed example and a plain-Python brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gadms_cli import evaluate
from gadms_cli.errors import GadmsError
from gadms_cli.evaluate import retrieval_metrics


def brute_force_metrics(similarity, query_ids, gallery_ids, ks=(1, 5, 10), unmatched="exclude"):
    """docs/metrics.md written out with loops: a full stable sort of every row."""
    hits = {k: 0 for k in ks}
    ap_sum = inp_sum = 0.0
    scored = unmatched_count = 0
    for q in range(len(query_ids)):
        row = [float(v) for v in similarity[q]]
        order = sorted(range(len(row)), key=lambda g: -row[g])  # sorted() is stable
        m = [1 if gallery_ids[g] == query_ids[q] else 0 for g in order]
        n_q = sum(m)
        if n_q == 0:
            unmatched_count += 1
            if unmatched == "miss":
                scored += 1
            continue
        scored += 1
        for k in ks:
            hits[k] += 1 if any(m[:k]) else 0
        ap = 0.0
        found = 0
        last = 0
        for position, is_match in enumerate(m, start=1):
            if is_match:
                found += 1
                ap += found / position
                last = position
        ap_sum += ap / n_q
        inp_sum += n_q / last
    result = {f"R{k}": 100.0 * hits[k] / scored for k in ks}
    result["mAP"] = 100.0 * ap_sum / scored
    result["mINP"] = 100.0 * inp_sum / scored
    result["num_queries"] = scored
    result["num_unmatched_queries"] = unmatched_count
    return result


def assert_same(ours, reference):
    assert ours.keys() == reference.keys()
    for key, value in reference.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_hand_computed_example_with_a_tie():
    # gallery ids [1, 2, 1, 3]
    # q0 (id 1): order g0 g1 g3 g2 -> matches at ranks 1 and 4: AP = (1/1 + 2/4) / 2, INP = 2/4
    # q1 (id 2): g2 0.9, then g0 and g1 tie at 0.5 -> g0 first (lower index), match g1 at rank 3
    similarity = np.array([[0.9, 0.8, 0.3, 0.5], [0.5, 0.5, 0.9, 0.1]], dtype=np.float32)
    result = retrieval_metrics(similarity, [1, 2], [1, 2, 1, 3], ks=(1, 2, 5))
    assert result["R1"] == pytest.approx(50.0)
    assert result["R2"] == pytest.approx(50.0)  # 100 if the tie went the other way
    assert result["R5"] == pytest.approx(100.0)
    assert result["mAP"] == pytest.approx(100 * (0.75 + 1 / 3) / 2)
    assert result["mINP"] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
    assert result["num_queries"] == 2 and result["num_unmatched_queries"] == 0


def random_case(seed, num_queries=37, num_gallery=53, num_ids=9, levels=None):
    """Random ids (several matches per query, some query ids absent from the gallery) and
    scores; with ``levels``, integer scores in [0, levels) so that ties are everywhere."""
    rng = np.random.default_rng(seed)
    gallery_ids = rng.integers(0, num_ids, num_gallery)
    query_ids = rng.integers(0, num_ids + 3, num_queries)  # ids >= num_ids have no match
    if levels is None:
        similarity = rng.standard_normal((num_queries, num_gallery))
    else:
        similarity = rng.integers(0, levels, (num_queries, num_gallery)).astype(np.float64)
    return similarity, query_ids, gallery_ids


@pytest.mark.parametrize("ties_for_key_sort", [0.0, math.inf], ids=["key-sort", "tie-scan"])
@pytest.mark.parametrize("levels", [None, 3, 40], ids=["continuous", "3-levels", "40-levels"])
@pytest.mark.parametrize("unmatched", ["exclude", "miss"])
def test_matches_brute_force_with_ties_and_unmatched_queries(
    monkeypatch, ties_for_key_sort, levels, unmatched
):
    monkeypatch.setattr(evaluate, "_TIES_PER_QUERY_FOR_KEY_SORT", ties_for_key_sort)
    similarity, query_ids, gallery_ids = random_case(seed=7, levels=levels)
    if levels is None:
        # a few exact ties between a match and other items
        similarity[:, 5] = similarity[:, 20]
        similarity[3, 1:4] = similarity[3, 30]
    similarity = similarity.astype(np.float32)
    reference = brute_force_metrics(similarity, query_ids, gallery_ids, unmatched=unmatched)
    assert reference["num_unmatched_queries"] > 0
    for chunk_size in (None, 1, 4):
        ours = retrieval_metrics(
            similarity, query_ids, gallery_ids, chunk_size=chunk_size, unmatched=unmatched
        )
        assert_same(ours, reference)


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: torch.from_numpy(a.astype(np.float16)),
        lambda a: torch.from_numpy(a).to(torch.bfloat16),
        lambda a: torch.from_numpy(a.astype(np.float64)),
        lambda a: a.astype(np.float16),
    ],
    ids=["torch-f16", "torch-bf16", "torch-f64", "numpy-f16"],
)
def test_dtypes_and_torch_inputs(convert):
    similarity, query_ids, gallery_ids = random_case(seed=3, levels=None)
    converted = convert(similarity.astype(np.float32))
    # the reference sees exactly the values the function gets
    as_float = converted.float().numpy() if isinstance(converted, torch.Tensor) else converted
    reference = brute_force_metrics(as_float.astype(np.float64), query_ids, gallery_ids)
    ours = retrieval_metrics(converted, torch.from_numpy(query_ids), torch.from_numpy(gallery_ids))
    assert_same(ours, reference)


def test_float64_values_that_float32_would_merge_stay_exact():
    # 1 + 1e-12 and 1 are distinct in float64 but equal in float32: the match must win.
    similarity = np.array([[1.0, 1.0 + 1e-12, 0.5]])
    result = retrieval_metrics(similarity, [7], [3, 7, 3], ks=(1,))
    assert result["R1"] == 100.0
    # and a float64 matrix with ties and non-float32 values goes through the tie scan
    similarity, query_ids, gallery_ids = random_case(seed=11, levels=4)
    similarity = similarity + 1e-12
    assert_same(
        retrieval_metrics(similarity, query_ids, gallery_ids, chunk_size=5),
        brute_force_metrics(similarity, query_ids, gallery_ids),
    )


def test_image_to_text_by_transposing():
    similarity, query_ids, gallery_ids = random_case(seed=5, levels=6)
    transposed = similarity.astype(np.float32).T  # a non-contiguous view
    assert_same(
        retrieval_metrics(transposed, gallery_ids, query_ids, chunk_size=7),
        brute_force_metrics(transposed, gallery_ids, query_ids),
    )


def test_errors():
    with pytest.raises(ValueError, match="does not fit"):
        retrieval_metrics(np.zeros((2, 3)), [1, 2], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[0.1, np.nan]]), [1], [1, 2])
    with pytest.raises(GadmsError, match="no query identity"):
        retrieval_metrics(np.zeros((2, 2)), [5, 6], [1, 2])
    assert retrieval_metrics(np.zeros((2, 2)), [5, 6], [1, 2], unmatched="miss")["R1"] == 0.0
