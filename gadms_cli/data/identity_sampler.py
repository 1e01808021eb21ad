"""Identity-balanced batches: P identities x K samples each, also under data parallel.

SDM and the ID loss need several samples of one identity in a batch. Each
epoch the sampler builds one GLOBAL order of indices, the same on every
process (it only depends on ``seed`` and the epoch): identities' samples are
shuffled and cut into groups of K (an identity with fewer than K samples is
topped up by drawing again from its own samples), then P identities with
groups left are drawn at random for each global batch of P*K. Under data
parallel, process ``rank`` takes the slice ``[rank*b, (rank+1)*b)`` of every
global batch, ``b = P*K / num_replicas``, so the processes together see
exactly the global batch and an all-gather rebuilds it.

Iteration can start part-way through an epoch (``start_batch``) so a resumed
run continues with exactly the batches it would have seen.

With ``neighbours`` (identity -> look-alike identities, see ``lookalike_identities``)
and ``group_size`` G > 1, the P identities of a batch are drawn as groups: a random
identity, then up to G - 1 of its look-alikes that still have samples left, and so on
until the batch holds P identities.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class IdentityBatchSampler(Sampler[list[int]]):
    """Yields this process's share of each global P x K batch as a list of dataset indices.

    Args:
        pids: identity of every dataset item (any hashable ints), length N.
        ids_per_batch: P, identities per GLOBAL batch.
        samples_per_id: K, items per identity in a batch.
        num_replicas, rank: data-parallel world size and this process's rank.
        seed: base seed; the order of epoch e depends on (seed, e) only.
        neighbours, group_size: look-alike groups of ``group_size`` identities per batch (module docstring).
    """

    def __init__(
        self,
        pids: Sequence[int],
        ids_per_batch: int,
        samples_per_id: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        neighbours: dict[int, list[int]] | None = None,
        group_size: int = 1,
    ) -> None:
        if ids_per_batch < 1 or samples_per_id < 1:
            raise ValueError("ids_per_batch and samples_per_id must be >= 1")
        global_batch = ids_per_batch * samples_per_id
        if global_batch % num_replicas:
            raise ValueError(
                f"global batch P*K = {global_batch} is not divisible by the {num_replicas} processes"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.ids_per_batch = ids_per_batch
        self.samples_per_id = samples_per_id
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.neighbours = neighbours or {}
        self.group_size = group_size if neighbours else 1
        self.epoch = 0
        self.start_batch = 0
        self._by_pid: dict[int, list[int]] = {}
        for index, pid in enumerate(pids):
            self._by_pid.setdefault(int(pid), []).append(index)
        if len(self._by_pid) < ids_per_batch:
            raise ValueError(f"{len(self._by_pid)} identities cannot fill batches of P={ids_per_batch} identities")
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (changes the order) and the batch to start from (for resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def global_batches(self) -> list[list[int]]:
        """All global batches of the current epoch (each P*K indices), identical on every process."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        k = self.samples_per_id
        groups: dict[int, list[list[int]]] = {}
        for pid in sorted(self._by_pid):
            items = self._by_pid[pid]
            if len(items) < k:
                extra = torch.randint(len(items), (k - len(items),), generator=gen).tolist()
                items = items + [items[i] for i in extra]
            order = torch.randperm(len(items), generator=gen).tolist()
            shuffled = [items[i] for i in order]
            groups[pid] = [shuffled[i : i + k] for i in range(0, len(shuffled) - k + 1, k)]
        batches: list[list[int]] = []
        available = [pid for pid in sorted(groups) if groups[pid]]
        while len(available) >= self.ids_per_batch:
            batch: list[int] = []
            for pid in self._pick_identities(available, gen):
                batch += groups[pid].pop()
            batches.append(batch)
            available = [pid for pid in available if groups[pid]]
        self._cache = (self.epoch, batches)
        return batches

    def _pick_identities(self, available: list[int], gen: torch.Generator) -> list[int]:
        """P distinct identities of ``available``: at random, or in look-alike groups (in pick order)."""
        order = torch.randperm(len(available), generator=gen)
        if self.group_size == 1:
            return [available[i] for i in sorted(order[: self.ids_per_batch].tolist())]
        left = set(available)
        picks: list[int] = []
        for i in order.tolist():
            seed_pid = available[i]
            if seed_pid not in left:
                continue
            group = [seed_pid]
            for other in self.neighbours.get(seed_pid, []):
                if len(group) == self.group_size:
                    break
                if other in left and other not in group:
                    group.append(other)
            for pid in group[: self.ids_per_batch - len(picks)]:
                picks.append(pid)
                left.discard(pid)
            if len(picks) == self.ids_per_batch:
                break
        return picks

    def __iter__(self) -> Iterator[list[int]]:
        share = self.ids_per_batch * self.samples_per_id // self.num_replicas
        for batch in self.global_batches()[self.start_batch :]:
            yield batch[self.rank * share : (self.rank + 1) * share]

    def __len__(self) -> int:
        return max(0, len(self.global_batches()) - self.start_batch)
