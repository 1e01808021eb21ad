"""Dual masking of captions driven by the GA score (docs/method.md, "Dual masking").

GA-DMS masks every caption twice, token by token, with probabilities that are a
logistic function of the token's GA score ``s`` in [0, 1]
(``sigma(x) = 1 / (1 + exp(-x))``):

- noise masking (feeds the alignment loss, SDM): low-score tokens are likely masked,
  ``p = alpha_n * sigma(lambda * ((1 - s) - gamma_n))``, alpha_n = 0.2, lambda = 20, gamma_n = 0.9;
- informative masking (feeds masked token prediction, MTP): high-score tokens are likely
  masked, ``p = alpha_i * sigma(lambda * (s - gamma_i))``, alpha_i = 0.3, lambda = 20, gamma_i = 0.1.

IRRA's fine-tuning instead masks every token uniformly with p = 0.15.

A selected token then follows the BERT rule: [MASK] with probability 0.8, a random
regular token with 0.1, unchanged with 0.1. Only content tokens are ever selected:
never SOT, EOT or padding.

All randomness comes from an optional ``torch.Generator`` so a seeded run is
reproducible. Everything here works on batches: ``tokens`` is ``[B, T]`` int64 token
ids, ``scores`` / probabilities are ``[B, T]`` floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gadms_cli.model.tokenizer import EOT_ID, MASK_ID, PAD_ID, SOT_ID, VOCAB_SIZE

IGNORE_INDEX = -100  # label of positions that the MTP loss skips (PyTorch's default ignore_index)


@dataclass(frozen=True)
class MaskedCaptions:
    """One masking of a batch of captions.

    Attributes:
        tokens: ``[B, T]`` int64, the captions after the BERT replacement rule.
        labels: ``[B, T]`` int64, the original id where a token was selected, ``-100`` elsewhere
            (what :func:`gadms_cli.gadms.losses.mtp_loss` expects).
        selected: ``[B, T]`` bool, the tokens chosen for masking (before the 80/10/10 rule).
    """

    tokens: Tensor
    labels: Tensor
    selected: Tensor


# ---------------------------------------------------------------------------
# Masking probabilities
# ---------------------------------------------------------------------------


def noise_mask_probability(
    scores: Tensor, alpha: float = 0.2, lam: float = 20.0, gamma: float = 0.9
) -> Tensor:
    """Noise-masking probability ``alpha * sigmoid(lam * ((1 - s) - gamma))`` of each token.

    Args:
        scores: GA scores in [0, 1], any shape (usually ``[B, T]``).
    Returns:
        Probabilities in [0, alpha], same shape and dtype as ``scores``.
    """
    return alpha * torch.sigmoid(lam * ((1.0 - scores) - gamma))


def informative_mask_probability(
    scores: Tensor, alpha: float = 0.3, lam: float = 20.0, gamma: float = 0.1
) -> Tensor:
    """Informative-masking probability ``alpha * sigmoid(lam * (s - gamma))`` of each token.

    Args:
        scores: GA scores in [0, 1], any shape (usually ``[B, T]``).
    Returns:
        Probabilities in [0, alpha], same shape and dtype as ``scores``.
    """
    return alpha * torch.sigmoid(lam * (scores - gamma))


def random_mask_probability(p: float = 0.15, like: Tensor | None = None) -> Tensor:
    """IRRA's uniform masking probability ``p`` for every token.

    Args:
        p: the probability, in [0, 1].
        like: optional tensor (e.g. the ``[B, T]`` tokens) whose shape the result takes.
    Returns:
        A 0-d float tensor ``p`` (it broadcasts in :func:`sample_mask`), or a float32 tensor
        filled with ``p`` of ``like``'s shape and device.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mask probability must be in [0, 1], got {p}")
    if like is None:
        return torch.tensor(p, dtype=torch.float32)
    return torch.full(like.shape, p, dtype=torch.float32, device=like.device)


# ---------------------------------------------------------------------------
# Which tokens may be masked, and sampling
# ---------------------------------------------------------------------------


def maskable_positions(
    tokens: Tensor,
    sot_id: int = SOT_ID,
    eot_id: int = EOT_ID,
    mask_id: int = MASK_ID,
) -> Tensor:
    """Content tokens of each caption: the positions strictly between SOT and the first EOT.

    Padding is found by position (everything after EOT), not by id: in CLIP's BPE
    vocabulary id 0 is the real token "!", which may appear inside a caption. A row
    without SOT is all padding (no content); a row with SOT but no EOT has content up to
    its end. Special ids (SOT, EOT, MASK) are never maskable wherever they sit.

    Args:
        tokens: ``[B, T]`` integer token ids.
    Returns:
        ``[B, T]`` bool, True where a token may be selected for masking.
    """
    after_sot = (tokens == sot_id).cumsum(dim=1) > 0
    after_first_eot = (tokens == eot_id).cumsum(dim=1) > 0
    special = (tokens == sot_id) | (tokens == eot_id) | (tokens == mask_id)
    return after_sot & ~after_first_eot & ~special


def sample_mask(
    prob: Tensor,
    maskable: Tensor,
    generator: torch.Generator | None = None,
    at_least_one: bool = True,
) -> Tensor:
    """Select each maskable token independently with its probability.

    With ``at_least_one``, a caption that has maskable tokens but drew none gets exactly
    one, sampled among its maskable tokens proportionally to ``prob`` (uniformly when all
    of them have probability 0). Sampling rather than taking the arg-max keeps the choice
    random, so a caption drawn again with the same (cached) scores does not always lose
    the same word. Note that this raises the per-token rate above ``prob`` for captions
    with few maskable tokens.

    Args:
        prob: selection probabilities in [0, 1], ``[B, T]`` or broadcastable to it (a 0-d
            tensor from :func:`random_mask_probability`).
        maskable: ``[B, T]`` bool from :func:`maskable_positions`.
        generator: torch random generator on ``maskable``'s device, for reproducibility.
        at_least_one: force one selected token per caption that has a maskable token.
    Returns:
        ``[B, T]`` bool, the selected tokens (always a subset of ``maskable``).
    """
    prob = prob.to(device=maskable.device, dtype=torch.float32).expand(maskable.shape)
    draws = torch.rand(maskable.shape, generator=generator, device=maskable.device)
    selected = (draws < prob) & maskable
    if at_least_one:
        needs_one = maskable.any(dim=1) & ~selected.any(dim=1)
        if needs_one.any():
            rows = needs_one.nonzero(as_tuple=True)[0]
            weights = prob[rows] * maskable[rows]
            all_zero = weights.sum(dim=1) == 0
            # rows whose maskable tokens all have probability 0: pick uniformly among them
            weights[all_zero] = maskable[rows][all_zero].float()
            chosen = torch.multinomial(weights, 1, generator=generator).squeeze(1)
            selected[rows, chosen] = True
    return selected


def apply_bert_replacement(
    tokens: Tensor,
    selected: Tensor,
    mask_id: int = MASK_ID,
    vocab_size: int = VOCAB_SIZE,
    generator: torch.Generator | None = None,
    excluded_ids: tuple[int, ...] = (PAD_ID, MASK_ID, SOT_ID, EOT_ID),
) -> tuple[Tensor, Tensor]:
    """Apply the BERT rule to the selected tokens and build the MTP labels.

    Each selected token becomes ``mask_id`` with probability 0.8, a random regular token
    with 0.1, and stays unchanged with 0.1. Random tokens are uniform over
    ``[0, vocab_size)`` minus ``excluded_ids`` (padding and the special ids, as IRRA
    draws from 1..49404), so a replacement never looks like SOT, EOT or [MASK].

    Args:
        tokens: ``[B, T]`` int64 token ids.
        selected: ``[B, T]`` bool, from :func:`sample_mask`.
        generator: torch random generator on ``tokens``'s device.
    Returns:
        ``(masked_tokens, labels)``, both ``[B, T]`` int64: the new tokens, and the original
        id at selected positions with ``-100`` elsewhere.
    """
    draws = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    to_mask = selected & (draws < 0.8)
    to_random = selected & (draws >= 0.8) & (draws < 0.9)

    random_ids = _uniform_regular_ids(tokens.shape, vocab_size, excluded_ids, generator, tokens.device)
    masked = torch.where(to_mask, torch.full_like(tokens, mask_id), tokens)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(selected, tokens, torch.full_like(tokens, IGNORE_INDEX))
    return masked, labels


def _uniform_regular_ids(
    shape: torch.Size,
    vocab_size: int,
    excluded_ids: tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Ids uniform over ``[0, vocab_size)`` without ``excluded_ids``, int64 of ``shape``."""
    excluded = sorted({i for i in excluded_ids if 0 <= i < vocab_size})
    n_regular = vocab_size - len(excluded)
    ids = torch.randint(0, n_regular, shape, generator=generator, device=device)
    # Map 0..n_regular-1 onto the allowed ids: step over each excluded id in increasing order.
    for excluded_id in excluded:
        ids += (ids >= excluded_id).long()
    return ids


# ---------------------------------------------------------------------------
# Convenience: the three maskings the training loop uses
# ---------------------------------------------------------------------------


def force_first_token(selected: Tensor, maskable: Tensor) -> Tensor:
    """IRRA's (and the public GA-DMS code's) rule for a caption that drew no token: select
    position 1, the first word. Returns the ``[B, T]`` bool mask of the forced positions."""
    forced = torch.zeros_like(selected)
    needs_one = maskable.any(dim=1) & ~selected.any(dim=1)
    forced[:, 1] = needs_one
    return forced


def _mask_with(
    tokens: Tensor,
    prob: Tensor,
    generator: torch.Generator | None,
    at_least_one: bool,
    mask_id: int,
    vocab_size: int,
    force_first: bool = False,
) -> MaskedCaptions:
    maskable = maskable_positions(tokens, mask_id=mask_id)
    selected = sample_mask(prob, maskable, generator=generator, at_least_one=at_least_one and not force_first)
    forced = force_first_token(selected, maskable) if at_least_one and force_first else torch.zeros_like(selected)
    selected = selected | forced
    masked, labels = apply_bert_replacement(
        tokens, selected, mask_id=mask_id, vocab_size=vocab_size, generator=generator
    )
    masked = torch.where(forced, torch.full_like(masked, mask_id), masked)  # the forced token is always [MASK]
    return MaskedCaptions(tokens=masked, labels=labels, selected=selected)


def noise_mask(
    tokens: Tensor,
    scores: Tensor,
    alpha: float = 0.2,
    lam: float = 20.0,
    gamma: float = 0.9,
    generator: torch.Generator | None = None,
    at_least_one: bool = False,
    mask_id: int = MASK_ID,
    vocab_size: int = VOCAB_SIZE,
    force_first: bool = False,
) -> MaskedCaptions:
    """Noise masking for the alignment loss: mask likely-noisy (low-score) tokens.

    ``at_least_one`` with ``force_first`` is the public code's rule (a caption that drew
    nothing loses its first word); see :func:`force_first_token`.

    Args:
        tokens: ``[B, T]`` int64 clean captions.
        scores: ``[B, T]`` GA scores in [0, 1] (detached).
    Returns:
        :class:`MaskedCaptions`; ``tokens`` go to the text encoder for SDM.
    """
    prob = noise_mask_probability(scores, alpha=alpha, lam=lam, gamma=gamma)
    return _mask_with(tokens, prob, generator, at_least_one, mask_id, vocab_size, force_first)


def informative_mask(
    tokens: Tensor,
    scores: Tensor,
    alpha: float = 0.3,
    lam: float = 20.0,
    gamma: float = 0.1,
    generator: torch.Generator | None = None,
    at_least_one: bool = True,
    mask_id: int = MASK_ID,
    vocab_size: int = VOCAB_SIZE,
    force_first: bool = False,
) -> MaskedCaptions:
    """Informative masking for MTP: mask likely-informative (high-score) tokens.

    At least one token per caption is selected by default (MTP needs one): sampled in
    proportion to the probabilities, or with ``force_first`` the first word (public code).

    Args:
        tokens: ``[B, T]`` int64 clean captions.
        scores: ``[B, T]`` GA scores in [0, 1] (detached).
    Returns:
        :class:`MaskedCaptions`; ``tokens`` go to the MTP decoder, ``labels`` to :func:`mtp_loss`.
    """
    prob = informative_mask_probability(scores, alpha=alpha, lam=lam, gamma=gamma)
    return _mask_with(tokens, prob, generator, at_least_one, mask_id, vocab_size, force_first)


def random_mask(
    tokens: Tensor,
    p: float = 0.15,
    generator: torch.Generator | None = None,
    at_least_one: bool = False,
    mask_id: int = MASK_ID,
    vocab_size: int = VOCAB_SIZE,
    force_first: bool = False,
) -> MaskedCaptions:
    """IRRA's uniform masking for MLM during fine-tuning (each content token with ``p``).

    IRRA forces one token in a caption that drew none: its first word, as [MASK]
    (``at_least_one=True, force_first=True``). With ``at_least_one=False`` a caption may
    stay unmasked (the MTP loss is then 0 for a batch with no masked token).

    Args:
        tokens: ``[B, T]`` int64 clean captions.
    Returns:
        :class:`MaskedCaptions`.
    """
    prob = random_mask_probability(p)
    return _mask_with(tokens, prob, generator, at_least_one, mask_id, vocab_size, force_first)
