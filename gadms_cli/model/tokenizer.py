"""CLIP BPE tokenizer with the IRRA-family ids, including a [MASK] token.

The vocabulary is OpenAI CLIP's byte-pair encoding as shipped inside the
open_clip package (``bpe_simple_vocab_16e6.txt.gz``; no download). open_clip
lays the 49,408 ids out as::

    0 ..   255   the 256 byte symbols
    256 .. 511   the same symbols with the end-of-word marker '</w>'
    512 .. 49405 one symbol per BPE merge, in merge order (48,894 merges)
    49406        <start_of_text>   (SOT)
    49407        <end_of_text>     (EOT)

IRRA, MLLM4Text-ReID and GA-DMS keep the size at 49,408 and free id 49405
for the mask token by dropping the LAST merge ("jeky" + "ll</w>"). We drop
that merge from the merge table as well, so the word "jekyll" becomes the two
tokens "jeky" "ll</w>" instead of an id that no longer exists. Every other
text tokenizes to exactly open_clip's ids.

Text is cleaned as CLIP does (ftfy, HTML unescape, whitespace collapse, lower
case). The literal string ``<|mask|>`` in a text becomes the mask id.
A tokenized batch is ``[SOT, tokens..., EOT, 0, 0, ...]``; a text longer than
the context is truncated and its last kept position is overwritten with EOT.
EOT is the largest id, so the EOS position of a row is ``tokens.argmax(-1)``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Sequence

import regex
import torch
from open_clip.tokenizer import basic_clean, bytes_to_unicode, default_bpe, whitespace_clean

VOCAB_SIZE = 49408
MASK_ID = 49405
SOT_ID = 49406
EOT_ID = 49407
PAD_ID = 0  # padding value after EOT (also the id of the byte '!', as in CLIP)

MASK_TEXT = "<|mask|>"
_NUM_MERGES = 49152 - 256 - 2  # merges CLIP uses from the BPE file (the rest are never applied)

# CLIP's pre-tokenizer pattern, plus the literal mask string.
_WORD_PATTERN = regex.compile(
    r"""<\|mask\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def _symbol_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


class Tokenizer:
    """Callable CLIP tokenizer: ``Tokenizer(77)(["a man in a red coat"]) -> LongTensor [1, 77]``.

    Attributes mirror the module constants: ``vocab_size``, ``mask_id``,
    ``sot_id``, ``eot_id``, ``pad_id`` and ``context_length``.
    """

    vocab_size = VOCAB_SIZE
    mask_id = MASK_ID
    sot_id = SOT_ID
    eot_id = EOT_ID
    pad_id = PAD_ID

    def __init__(self, context_length: int = 77, bpe_path: str | Path | None = None) -> None:
        if context_length < 2:
            raise ValueError("context_length must leave room for SOT and EOT (>= 2)")
        self.context_length = context_length
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {symbol: byte for byte, symbol in self.byte_encoder.items()}

        lines = gzip.open(bpe_path or default_bpe()).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        merges = merges[:-1]  # the freed last merge: its id becomes the mask token

        byte_symbols = list(self.byte_encoder.values())
        vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
        vocab += [MASK_TEXT, "<start_of_text>", "<end_of_text>"]
        assert len(vocab) == VOCAB_SIZE, len(vocab)

        self.encoder: dict[str, int] = {symbol: i for i, symbol in enumerate(vocab)}
        self.decoder: dict[int, str] = {i: symbol for symbol, i in self.encoder.items()}
        self.bpe_ranks: dict[tuple[str, str], int] = {merge: rank for rank, merge in enumerate(merges)}
        self._cache: dict[str, list[int]] = {}

    # --- encoding -------------------------------------------------------------------

    def _bpe_ids(self, word: str) -> list[int]:
        """Ids of one pre-tokenized word (already mapped to byte symbols)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        symbols: tuple[str, ...] = tuple(word[:-1]) + (word[-1] + "</w>",)
        while len(symbols) > 1:
            pairs = _symbol_pairs(symbols)
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = tuple(merged)
        ids = [self.encoder[s] for s in symbols]
        self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without SOT/EOT and without truncation."""
        cleaned = whitespace_clean(basic_clean(text)).lower()
        ids: list[int] = []
        for word in _WORD_PATTERN.findall(cleaned):
            if word == MASK_TEXT:
                ids.append(MASK_ID)
                continue
            ids.extend(self._bpe_ids("".join(self.byte_encoder[b] for b in word.encode("utf-8"))))
        return ids

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.LongTensor:
        """Tokenize texts to a zero-padded LongTensor [B, context_length]: SOT ... EOT 0 0 ..."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        result = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [SOT_ID] + self.encode(text) + [EOT_ID]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = EOT_ID
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result

    # --- decoding -------------------------------------------------------------------

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special: bool = True) -> str:
        """Text of a token id sequence.

        With ``skip_special`` the SOT token is dropped and decoding stops at the
        first EOT (so padding is ignored); the mask token prints as ``<|mask|>``.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        pieces: list[str] = []
        byte_run: list[str] = []

        def flush() -> None:
            if byte_run:
                raw = bytearray(self.byte_decoder[c] for c in "".join(byte_run))
                pieces.append(raw.decode("utf-8", errors="replace").replace("</w>", " "))
                byte_run.clear()

        for token in ids:
            token = int(token)
            if skip_special and token == SOT_ID:
                continue
            if skip_special and token == EOT_ID:
                break
            if token in (MASK_ID, SOT_ID, EOT_ID):
                flush()
                pieces.append(self.decoder[token] + " ")
                continue
            byte_run.append(self.decoder[token])
        flush()
        return "".join(pieces).strip()

    def decode_batch(self, tokens: torch.Tensor) -> list[str]:
        """Decode every row of a [B, T] token tensor."""
        return [self.decode(row) for row in tokens]


def eos_positions(tokens: torch.Tensor) -> torch.LongTensor:
    """Index of the EOT token in each row of ``tokens`` [B, T] (CLIP's argmax rule) -> [B]."""
    return tokens.argmax(dim=-1)
