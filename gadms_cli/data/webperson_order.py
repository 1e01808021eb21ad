"""The rows of one WebPerson stream in an epoch's order (for ``webperson_training.py``).

A stream's rows are read in a shuffled order that is a function of (seed, epoch) only: parquet row
groups gathered into blocks of at least ``BLOCK_ROWS`` rows are read in a shuffled order, then a
bounded shuffle buffer mixes rows across blocks. JSON and Hub streams keep their file order and get
the buffer only. Hub streams are split per process and DataLoader worker by ``datasets``.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable, Iterator

import numpy as np

from gadms_cli.data.webperson import HubWebPerson, ParquetWebPerson, WebPersonRecord
from gadms_cli.errors import GadmsError

BLOCK_ROWS = 512  # parquet rows read as one unit of the shuffled read order (whole row groups)
_HUB_READ_ROWS = 64  # rows fetched from a Hub stream at a time


class _RowStream:
    """A ``datasets.IterableDataset`` read row by row through ``.iter(batch_size)``.

    ``iter(dataset)`` inside a DataLoader worker splits the rows again among the workers;
    here every worker already has its own stream, so that second split would drop rows.
    """

    def __init__(self, dataset, read_rows: int = _HUB_READ_ROWS) -> None:
        self.dataset = dataset
        self.read_rows = read_rows

    def __iter__(self) -> Iterator[dict]:
        for batch in self.dataset.iter(batch_size=self.read_rows):
            names = list(batch)
            for i in range(len(batch[names[0]])):
                yield {name: batch[name][i] for name in names}


def stream_source(source, num_processes: int, process: int, num_streams: int, stream: int):
    """The rows of stream ``stream`` of process ``process`` (see :func:`stream_rows`)."""
    if isinstance(source, HubWebPerson):
        from datasets.distributed import split_dataset_by_node

        total, index = num_processes * num_streams, process + num_processes * stream
        split = split_dataset_by_node(source.stream, rank=index, world_size=total)
        return HubWebPerson(source.dataset_id, source.split, total, index, stream=_RowStream(split))
    return source.shard(num_processes, process).shard(num_streams, stream)


def parquet_blocks(source: ParquetWebPerson, block_rows: int = BLOCK_ROWS) -> list[tuple[int, int]]:
    """``[start, end)`` global row ranges covering the source's rows: runs of whole row groups of one
    file, each at least ``block_rows`` rows long (except a file's last), cut to the source's range."""
    start, end = source.row_range
    blocks: list[tuple[int, int]] = []
    offset = 0
    for group_rows in source.row_group_rows:
        block_start = block_end = None
        for rows in group_rows:
            low, high = max(offset, start), min(offset + rows, end)
            offset += rows
            if low >= high:
                continue
            block_start = low if block_start is None else block_start
            block_end = high
            if block_end - block_start >= block_rows:
                blocks.append((block_start, block_end))
                block_start = None
        if block_start is not None:
            blocks.append((block_start, block_end))
    return blocks


def _parquet_range(source: ParquetWebPerson, start: int, end: int) -> ParquetWebPerson:
    """The same files limited to global rows ``[start, end)`` (no footer is read again)."""
    part = copy.copy(source)
    part.row_range = (start, end)
    return part


def read_order(source, rng: np.random.Generator, block_rows: int = BLOCK_ROWS) -> Iterator[WebPersonRecord]:
    """One pass over a stream's rows: parquet blocks in an ``rng``-shuffled order; other sources as stored."""
    if not isinstance(source, ParquetWebPerson):
        yield from source
        return
    blocks = parquet_blocks(source, block_rows)
    for index in rng.permutation(len(blocks)):
        yield from _parquet_range(source, *blocks[index])


def take_rows(passes: Callable[[], Iterable[WebPersonRecord]], count: int, where: str) -> Iterator[WebPersonRecord]:
    """The first ``count`` rows of ``passes()``, starting a new pass when one runs out (Hub shares that
    are shorter than their estimate)."""
    taken = 0
    while taken < count:
        before = taken
        for record in passes():
            yield record
            taken += 1
            if taken == count:
                return
        if taken == before:
            raise GadmsError(f"{where}: a data stream has no rows; use fewer data.num_workers or processes")


def shuffle_buffer(records: Iterable[WebPersonRecord], size: int, rng: np.random.Generator) -> Iterator[WebPersonRecord]:
    """Bounded shuffle: hold ``size`` rows, emit a random one as each new row arrives, shuffle the rest at the end."""
    buffer: list[WebPersonRecord] = []
    for record in records:
        if len(buffer) < size:
            buffer.append(record)
            continue
        slot = int(rng.integers(size))
        yield buffer[slot]
        buffer[slot] = record
    rng.shuffle(buffer)
    yield from buffer
