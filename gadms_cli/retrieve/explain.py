"""Why did an image match a query? The GA score of each query token against that image.

The GA score (gadms_cli/gadms/ga_score.py, METHOD.md) is the method's own measure of how
much each caption token drives the caption's similarity with an image: gradient of the
cosine similarity with respect to the attention output, weighted by the EOS token's
attention, over the last text layers. GA-DMS trains with it (tokens with low scores are
masked as noise, high-scoring ones are predicted); here it explains a retrieval: scored
against the top match, the words with high scores are the ones that carried the match.

Scores are min-max normalised over the query's own tokens (``normalize="sample"``): the
strongest token scores 1; the start and end tokens score 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from gadms_cli.gadms.ga_score import content_mask, ga_score_terms, minmax_normalize
from gadms_cli.model.tokenizer import EOT_ID, MASK_ID, SOT_ID, Tokenizer

DEFAULT_LAYERS = 8  # the paper's L; clamped to the text tower's depth


@dataclass(frozen=True)
class TokenScore:
    """One query token: its text (a BPE piece), GA score in [0, 1], whether it is the start/end
    token, and whether it ends a word (the next piece starts a new word)."""

    text: str
    score: float
    special: bool
    ends_word: bool


@dataclass
class Explanation:
    """The GA scores of a query's tokens against one gallery image (``similarity``: their cosine)."""

    query: str
    path: Path
    similarity: float
    tokens: list[TokenScore]

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
    num_layers: int = DEFAULT_LAYERS,
) -> Explanation:
    """GA scores of ``query``'s tokens against one image.

    ``tokenize`` is the model's :class:`Tokenizer`; ``image_embedding`` [D] is the image's
    embedding (normalised or not: the score depends on its direction only). Returns one
    :class:`TokenScore` per token from the start token to the end token inclusive
    (padding excluded; a query longer than the context is truncated as in retrieval).
    """
    device = next(model.parameters()).device
    tokens = tokenize([query]).to(device)  # [1, T]
    image = image_embedding.detach().reshape(1, -1).to(device, torch.float32)  # [1, D]
    terms = ga_score_terms(model, image, tokens, num_layers)
    scores = minmax_normalize(terms.raw, content_mask(tokens), "sample")[0].cpu()  # [T]
    eos = int(tokens[0].argmax())
    ids = tokens[0, : eos + 1].tolist()
    tokenizer = tokenize if isinstance(tokenize, Tokenizer) else Tokenizer()
    items = [
        TokenScore(text, 0.0 if special else float(scores[position]), special, ends_word)
        for position, (text, special, ends_word) in enumerate(token_pieces(tokenizer, ids))
    ]
    return Explanation(query=query, path=Path(path), similarity=float(terms.similarity[0]), tokens=items)
