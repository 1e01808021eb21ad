"""The per-caption GA-score table of the paper's ``cached`` score timing (docs/method.md "Score timing").

The paper stores each caption's token scores and masks the caption with them
the NEXT time it is drawn (every token starts at 0.85). Its code kept one table
per process, so under data parallel each process masked with its own stale
view. Here every update is all-gathered, so the table is identical on every
process.

Scores are stored quantised to uint8 (``round(255 * s)``, error <= 0.002, far
below what changes a masking probability) so 10M captions x 77 tokens take
770 MB instead of 3 GB in float32.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

_LEVELS = 255


class ScoreTable:
    """``num_captions x context_length`` token scores in [0, 1], indexed by caption id."""

    def __init__(self, num_captions: int, context_length: int, initial: float = 0.85) -> None:
        self.scores = torch.full((num_captions, context_length), round(initial * _LEVELS), dtype=torch.uint8)

    def lookup(self, caption_ids: Tensor) -> Tensor:
        """float32 ``[B, T]`` scores of the given captions (on ``caption_ids``'s device)."""
        rows = self.scores[caption_ids.cpu()]
        return rows.to(caption_ids.device, torch.float32) / _LEVELS

    def update(self, caption_ids: Tensor, scores: Tensor) -> None:
        """Store ``scores`` [B, T] for ``caption_ids`` [B], from ALL processes (collective call)."""
        ids, values = caption_ids.detach(), scores.detach().float()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ids, values = _gather_padded(ids, values)
        quantised = (values.clamp(0, 1) * _LEVELS).round().to(torch.uint8).cpu()
        self.scores[ids.cpu()] = quantised

    def state_dict(self) -> dict[str, Tensor]:
        return {"scores": self.scores}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if state["scores"].shape != self.scores.shape:
            raise ValueError(f"score table shape {tuple(state['scores'].shape)} != {tuple(self.scores.shape)}")
        self.scores = state["scores"].to(torch.uint8).clone()


def _gather_padded(ids: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """All-gather rows whose count may differ between processes (padded to the largest, then trimmed)."""
    world = dist.get_world_size()
    count = torch.tensor([ids.shape[0]], device=ids.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    largest = int(max(c.item() for c in counts))
    pad = largest - ids.shape[0]
    ids_p = torch.cat([ids, ids.new_zeros(pad)])
    values_p = torch.cat([values, values.new_zeros(pad, values.shape[1])])
    all_ids = [torch.zeros_like(ids_p) for _ in range(world)]
    all_values = [torch.zeros_like(values_p) for _ in range(world)]
    dist.all_gather(all_ids, ids_p)
    dist.all_gather(all_values, values_p)
    keep = [slice(0, int(c.item())) for c in counts]
    return (
        torch.cat([a[k] for a, k in zip(all_ids, keep)]),
        torch.cat([v[k] for v, k in zip(all_values, keep)]),
    )
