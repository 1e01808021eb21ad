"""Why did an image match a query? A score per query token against that image.

Two attributions (``attribution``):

- ``"loo"`` (the default): exact leave-one-out, ``cos(query, image) - cos(query with the
  token replaced by [MASK], image)`` (gadms_cli/gadms/attribution.py): one batched text
  forward of all the variants. It is what "the words that carried the match" means, and
  measured against it the GA score of a small model often points at "a" or "the"
  (docs/results/explain-agreement.md), so it is what ``--explain`` shows.
- ``"ga"``: the GA score (gadms_cli/gadms/ga_score.py), the method's own fast estimate of
  the same thing (one forward and one backward), which GA-DMS trains with.

Displayed scores lie in [0, 1]: the positive part of the attribution divided by the
query's largest (GA: min-max over the query's tokens after the ReLU, as the paper), so
the strongest token scores 1; the start and end tokens, and tokens that worked AGAINST
the match, score 0. ``Explanation.raw`` keeps the unscaled values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from gadms_cli.gadms.attribution import leave_one_out_scores
from gadms_cli.gadms.ga_score import content_mask, ga_score_terms, minmax_normalize
from gadms_cli.model.tokenizer import EOT_ID, MASK_ID, SOT_ID, Tokenizer

DEFAULT_LAYERS = 8  # the paper's L; clamped to the text tower's depth (all layers of a small tower)
ATTRIBUTIONS = ("loo", "ga")
DEFAULT_ATTRIBUTION = "loo"
ATTRIBUTION_NAMES = {"loo": "leave-one-out", "ga": "GA score"}


@dataclass(frozen=True)
class TokenScore:
    """One query token: its text (a BPE piece), GA score in [0, 1], whether it is the start/end
    token, and whether it ends a word (the next piece starts a new word)."""

    text: str
    score: float
    special: bool
    ends_word: bool
    raw: float = 0.0  # the unscaled attribution (LOO: change of cosine; GA: the ReLU'd layer sum)


@dataclass
class Explanation:
    """The GA scores of a query's tokens against one gallery image (``similarity``: their cosine)."""

    query: str
    path: Path
    similarity: float
    tokens: list[TokenScore]
    attribution: str = DEFAULT_ATTRIBUTION  # "loo" or "ga": which score the tokens hold

    def top_word(self) -> str | None:
        """The word with the highest score (None for a query with no scored word)."""
        words = self.words()
        return max(words, key=lambda item: item[1])[0] if words else None

    def words(self) -> list[tuple[str, float]]:
        """The query's words (BPE pieces joined) with the highest score of their pieces; special tokens left out."""
        words: list[tuple[str, float]] = []
        text, score = "", 0.0
        for token in self.tokens:
            if token.special:
                continue
            text, score = text + token.text, max(score, token.score)
            if token.ends_word:
                words.append((text, score))
                text, score = "", 0.0
        if text:
            words.append((text, score))
        return words


def token_pieces(tokenizer: Tokenizer, ids: list[int]) -> list[tuple[str, bool, bool]]:
    """``(text, special, ends_word)`` of each token id (start/end tokens keep their names)."""
    pieces = []
    for token in ids:
        special = token in (SOT_ID, EOT_ID)
        text = tokenizer.decoder[token] if special else tokenizer.decode([token], skip_special=False)
        ends_word = special or token == MASK_ID or tokenizer.decoder[token].endswith("</w>")
        pieces.append((text, special, ends_word))
    return pieces


def explain_match(
    model: nn.Module,
    tokenize: Callable[[list[str]], torch.Tensor],
    query: str,
    image_embedding: torch.Tensor,
    path: str | Path,
    num_layers: int | str = DEFAULT_LAYERS,
    attribution: str = DEFAULT_ATTRIBUTION,
) -> Explanation:
    """Token scores of ``query`` against one image (see the module docstring).

    ``tokenize`` is the model's :class:`Tokenizer`; ``image_embedding`` [D] is the image's
    embedding (normalised or not: the scores depend on its direction only). Returns one
    :class:`TokenScore` per token from the start token to the end token inclusive
    (padding excluded; a query longer than the context is truncated as in retrieval).
    ``num_layers`` is used by ``attribution="ga"`` only.
    """
    if attribution not in ATTRIBUTIONS:
        raise ValueError(f"attribution must be one of {', '.join(ATTRIBUTIONS)}, got {attribution!r}")
    device = next(model.parameters()).device
    tokens = tokenize([query]).to(device)  # [1, T]
    eos = int(tokens[0].argmax())
    tokens = tokens[:, : eos + 1]
    image = image_embedding.detach().reshape(1, -1).to(device, torch.float32)  # [1, D]
    content = content_mask(tokens)
    if attribution == "ga":
        terms = ga_score_terms(model, image, tokens, num_layers)
        raw = terms.raw[0].cpu()
        scores = minmax_normalize(terms.raw, content, "sample")[0].cpu()  # [T]
        similarity = float(terms.similarity[0])
    else:
        raw = leave_one_out_scores(model, image, tokens)[0].cpu()
        positive = raw.clamp(min=0) * content[0].cpu()
        top = float(positive.max())
        scores = positive / top if top > 0 else torch.zeros_like(positive)
        with torch.no_grad():
            text = model.encode_text(tokens)
        similarity = float(torch.nn.functional.cosine_similarity(text.float(), image)[0])
    ids = tokens[0].tolist()
    tokenizer = tokenize if isinstance(tokenize, Tokenizer) else Tokenizer()
    items = [
        TokenScore(text, 0.0 if special else float(scores[position]), special, ends_word, 0.0 if special else float(raw[position]))
        for position, (text, special, ends_word) in enumerate(token_pieces(tokenizer, ids))
    ]
    return Explanation(query=query, path=Path(path), similarity=similarity, tokens=items, attribution=attribution)
