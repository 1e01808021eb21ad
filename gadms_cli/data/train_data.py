"""What the training loop needs from the data, whatever its kind (benchmark folder or WebPerson)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass
class TrainData:
    """The training data of one run, as the loop sees it.

    ``batches(epoch, start_batch)`` yields this process's micro-batches (dicts of tensors: image
    float32 [b, 3, H, W], tokens int64 [b, T], pid int64 [b], caption int64 [b]);
    ``steps_per_epoch`` counts optimiser steps; ``val`` is an ``EvalSplit`` or None.
    """

    batches: Callable[[int, int], Iterator[dict]]
    steps_per_epoch: int
    num_ids: int
    num_captions: int
    val: object | None
