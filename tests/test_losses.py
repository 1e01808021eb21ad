"""SDM, ITC, ID and MTP losses against independent computations written with loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gadms_cli.gadms.losses import id_loss, itc_loss, mtp_loss, sdm_loss


def normalised(rows: np.ndarray) -> np.ndarray:
    return rows / np.sqrt((rows**2).sum(axis=1, keepdims=True))


def reference_sdm(images, texts, pids, scale=50.0, eps=1e-8) -> float:
    """IRRA's SDM written out row by row in float64."""
    images, texts = normalised(images), normalised(texts)
    total = 0.0
    for queries, keys in ((texts, images), (images, texts)):
        direction = 0.0
        for a in range(len(queries)):
            logits = [scale * float(np.dot(queries[a], keys[b])) for b in range(len(keys))]
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            p = [e / sum(exps) for e in exps]
            same = [1.0 if pids[a] == pids[b] else 0.0 for b in range(len(keys))]
            q = [v / sum(same) for v in same]
            direction += sum(p[b] * (math.log(p[b]) - math.log(q[b] + eps)) for b in range(len(keys)))
        total += direction / len(queries)
    return total


def features(seed: int, batch: int = 8, dim: int = 6):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, dim)) * 3.0  # not normalised: the loss normalises
    texts = images + rng.standard_normal((batch, dim))
    return images, texts


def test_sdm_matches_row_by_row_reference():
    images, texts = features(0)
    pids = np.array([3, 3, 7, 1, 7, 7, 2, 1])
    ours = sdm_loss(torch.from_numpy(images), torch.from_numpy(texts), torch.from_numpy(pids))
    assert ours.item() == pytest.approx(reference_sdm(images, texts, pids), rel=1e-9)
    scaled = sdm_loss(
        torch.from_numpy(images), torch.from_numpy(texts), torch.from_numpy(pids), logit_scale=10.0
    )
    assert scaled.item() == pytest.approx(reference_sdm(images, texts, pids, scale=10.0), rel=1e-9)


def test_sdm_float32_and_gradcheck():
    images, texts = features(1, batch=5, dim=4)
    pids = np.array([0, 1, 0, 2, 1])
    single = sdm_loss(
        torch.from_numpy(images).float(), torch.from_numpy(texts).float(), torch.from_numpy(pids)
    )
    assert single.item() == pytest.approx(reference_sdm(images, texts, pids), rel=1e-4)
    img = torch.from_numpy(images).requires_grad_()
    txt = torch.from_numpy(texts).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda i, t: sdm_loss(i, t, torch.from_numpy(pids), logit_scale=5.0), (img, txt)
    )


def test_itc_matches_loop_reference():
    images, texts = features(2)
    i_n, t_n = normalised(images), normalised(texts)
    expected = 0.0
    for queries, keys in ((i_n, t_n), (t_n, i_n)):
        for a in range(len(queries)):
            logits = [50.0 * float(np.dot(queries[a], keys[b])) for b in range(len(keys))]
            top = max(logits)
            log_sum = top + math.log(sum(math.exp(v - top) for v in logits))
            expected += (log_sum - logits[a]) / len(queries)
    expected /= 2
    assert itc_loss(torch.from_numpy(images), torch.from_numpy(texts)).item() == pytest.approx(expected)


def test_id_loss_matches_hand_formula():
    rng = np.random.default_rng(3)
    logits_img, logits_txt = rng.standard_normal((2, 6, 5))
    pids = np.array([0, 4, 2, 2, 1, 3])

    def cross_entropy(logits):
        return np.mean(
            [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits, pids)]
        )

    expected = (cross_entropy(logits_img) + cross_entropy(logits_txt)) / 2
    ours = id_loss(torch.from_numpy(logits_img), torch.from_numpy(logits_txt), torch.from_numpy(pids))
    assert ours.item() == pytest.approx(expected, rel=1e-6)


def test_mtp_loss_only_masked_positions():
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 5, 11))
    labels = np.full((3, 5), -100)
    labels[0, 1], labels[0, 3], labels[2, 4] = 7, 0, 10  # id 0 is a real token, not ignored
    terms = []
    for b in range(3):
        for t in range(5):
            if labels[b, t] != -100:
                row = logits[b, t]
                terms.append(math.log(sum(math.exp(v) for v in row)) - row[labels[b, t]])
    expected = sum(terms) / len(terms)
    ours = mtp_loss(torch.from_numpy(logits), torch.from_numpy(labels))
    assert ours.item() == pytest.approx(expected, rel=1e-6)
    # half precision logits are computed in float32 at the selected positions
    half = mtp_loss(torch.from_numpy(logits).half(), torch.from_numpy(labels))
    assert half.dtype == torch.float32 and half.item() == pytest.approx(expected, rel=1e-2)


def test_mtp_loss_without_masked_tokens_is_zero_with_a_graph():
    logits = torch.randn(2, 4, 9, requires_grad=True)
    loss = mtp_loss(logits, torch.full((2, 4), -100))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)
