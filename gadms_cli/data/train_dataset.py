"""Training datasets: (image, caption) pairs as tensors, with unreadable images skipped and counted.

Each item is a dict:
    image     float32 [3, H, W], normalised (see transforms.py)
    tokens    int64 [T], SOT ... EOT, zero padding
    pid       int64 [], identity remapped to 0..N-1
    caption   int64 [], a stable caption index (row of the cached GA-score table)

and, with ``query_attributes > 0`` (the recipe's ``method.query_attributes``), a short
attribute query written from the caption (data/attribute_phrases.py):
    query_tokens  int64 [T], the query's tokens
    query_keys    bool [K], the attribute keys the query asserts
    caption_keys  bool [K], the attribute keys the caption states

and, with ``identity_keys`` given (``method.attribute_targets: identity``):
    identity_keys bool [K], the keys every caption of the item's identity states together

and, with ``noise_tokens`` given (``method.token_score: oracle``, SketchPedes only):
    noise_tokens  bool [T], True at the caption's written-wrong tokens (data/synth/noise_labels.py)

An image that cannot be read yields ``None``; :func:`collate_train` replaces it
by another item of the same batch and counts it, so one corrupt file never stops
an epoch and every process keeps the same batch size (which the data-parallel
all-gather of SDM needs).

Augmentation randomness is a function of (seed, epoch, item index) only, not
of which worker or how many items came before, so a run resumed mid-epoch sees
exactly the augmented images an uninterrupted run would have seen.
"""

from __future__ import annotations

import random
import sys
from typing import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from gadms_cli.data.attribute_phrases import attribute_query
from gadms_cli.data.caption_dropout import drop_phrases
from gadms_cli.data.records import TrainSample

Tokenize = Callable[[list[str]], torch.Tensor]


def load_rgb(path) -> Image.Image:
    """Open an image file fully (so errors surface here, not later) as RGB."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


class CaptionedImageDataset(Dataset):
    """Map-style dataset over :class:`TrainSample` (one item per caption)."""

    def __init__(
        self,
        samples: Sequence[TrainSample],
        transform: Callable,
        tokenize: Tokenize,
        seed: int = 0,
        caption_dropout: float = 0.0,
        query_attributes: int = 0,
        noise_tokens: Sequence[torch.Tensor] | None = None,
        identity_keys: Sequence[torch.Tensor] | None = None,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.tokenize = tokenize
        self.seed = seed
        self.caption_dropout = caption_dropout  # per-phrase drop probability (data/caption_dropout.py)
        self.query_attributes = query_attributes  # 0: no attribute query; else at most this many attributes
        self.noise_tokens = noise_tokens  # one bool [T] per sample, or None
        self.identity_keys = identity_keys  # one bool [K] per sample (attribute_phrases.identity_keys), or None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (changes the augmentation draws); call before creating the DataLoader."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict | None:
        sample = self.samples[index]
        try:
            image = load_rgb(sample.image_path)
        except (OSError, UnidentifiedImageError, ValueError) as error:
            # Named here (DataLoader workers share stderr); the collate step replaces and counts it.
            print(f"warning: unreadable image replaced in its batch: {sample.image_path} ({type(error).__name__}: {error})",
                  file=sys.stderr, flush=True)
            return None
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would also reseed (and leak, fork_rng(devices=[])
            # restores the CPU state only) every GPU generator, and costs ~0.3 ms per item on the CPU.
            torch.default_generator.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
            pixels = self.transform(image)
        caption = sample.caption
        if self.caption_dropout > 0:
            caption = drop_phrases(caption, self.caption_dropout, random.Random(f"caption-dropout:{self.seed}:{self.epoch}:{index}"))
        item = {
            "image": pixels,
            "tokens": self.tokenize([caption])[0],
            "pid": torch.tensor(sample.pid, dtype=torch.long),
            "caption": torch.tensor(index, dtype=torch.long),
        }
        if self.noise_tokens is not None:
            item["noise_tokens"] = self.noise_tokens[index]
        if self.query_attributes > 0:
            rng = random.Random(f"attribute-query:{self.seed}:{self.epoch}:{index}")
            item.update(attribute_query(caption, self.query_attributes, rng, self.tokenize))
            if self.identity_keys is not None:
                item["identity_keys"] = self.identity_keys[index]
        return item


def collate_train(items: list[dict | None]) -> dict:
    """Stack items into a batch.

    ``None`` items (unreadable images) are replaced by the nearest readable item
    before them (or after, for the first) and counted in ``batch["skipped"]``.
    Raises ``ValueError`` if no item of the batch could be read.
    """
    kept = [item for item in items if item is not None]
    if not kept:
        raise ValueError("no image of this batch could be read")
    filled, last = [], None
    for item in items:
        last = item if item is not None else last
        filled.append(last)
    filled = [item if item is not None else kept[0] for item in filled]
    batch: dict = {"skipped": len(items) - len(kept)}
    for key in kept[0]:
        batch[key] = torch.stack([item[key] for item in filled])
    return batch
