"""Streaming WebPerson micro-batches for ``gadms pretrain`` (``data.kind: webperson``).

WebPerson is far too large to hold in memory, so it is read as a stream. Every
process gets ``W`` *streams* of rows (``W`` = ``data.num_workers``, at least 1);
DataLoader worker ``w`` reads one stream and nothing else (with 0 workers the single
stream is read in the training process). Each micro-batch holds
``h`` images with both of their captions, so ``b = 2h`` items, laid out in
adjacent pairs (``data.caption_pairing: caption``, the public GA-DMS script's view: ``b`` images
with ONE caption each, caption ``(identity + epoch) mod 2``, and every caption its own identity
``2 * identity + j``, so two epochs here see each caption once, as one of theirs does)::

    image    float32 [b, 3, H, W]   item 2k and 2k+1 show the same image (augmented separately)
    tokens   int64   [b, T]         item 2k: caption1, item 2k+1: caption2
    pid      int64   [b]            the image's identity (each image is its own identity)
    caption  int64   [b]            2 * identity + j for caption j: a row of the GA-score table
    skipped  int                    unreadable images in this batch (replaced, see below)

How an epoch is cut (all from the row counts, before reading any image):

* processes: contiguous row ranges (parquet) or entry positions modulo ``P`` (GA-DMS
  JSON), via ``source.shard``; then each process range is split again into ``W`` streams;
* batch ``i`` of a process comes from stream ``i mod W``; every process yields the same
  number ``N`` of micro-batches, the largest all streams of all processes can fill, rounded
  down to a multiple of ``train.grad_accumulation``. A stream's last few rows that cannot
  fill its share are dropped (different rows each epoch, as the order is reshuffled);
* order within a stream, deterministic in (seed, epoch): the parquet row groups, gathered
  into blocks of at least ``BLOCK_ROWS`` rows, are read in a shuffled order, then a bounded
  shuffle buffer (``SHUFFLE_BUFFER_ROWS``) mixes rows across blocks. JSON and Hub streams
  keep their file order and get the buffer only.

An image that cannot be decoded never stops the epoch: its slot in the batch takes the
nearest readable image of the same batch (before it, else after it), or, when the whole
batch is unreadable, the latest readable row before the batch (within ``LOOKBACK_ROWS``),
else the next one ahead (within ``LOOKAHEAD_ROWS``); the batch's ``skipped`` counts it.
Rows are consumed at a fixed ``h`` per batch whatever is unreadable, so resuming never
needs to decode anything it skips.

Resume: ``batches(epoch, k)`` yields exactly micro-batches ``k, k+1, ..., N-1`` of the
uninterrupted epoch (same rows, same augmentation), for the same number of processes and
workers: each worker skips (reads without decoding) the rows of its stream's batches
before ``k``, and the workers are rotated so that the DataLoader's round robin starts at
stream ``k mod W``. Augmentation randomness is a function of (seed, epoch, caption index)
only, as in :class:`gadms_cli.data.train_dataset.CaptionedImageDataset`.

Hugging Face Hub streams: the epoch is sized from the row count the dataset publishes
(``info.splits``); each of the ``P * W`` streams takes ``num_rows // (P * W)`` rows,
starting over if its share of the files is shorter (``split_dataset_by_node`` splits by
files when their number divides evenly, and files differ in size).
"""

from __future__ import annotations

import random
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gadms_cli.data.benchmarks import load_benchmark
from gadms_cli.data.caption_dropout import drop_phrases
from gadms_cli.data.attribute_phrases import attribute_query, identity_keys
from gadms_cli.data.webperson import HubWebPerson, JsonWebPerson, ParquetWebPerson, WebPersonRecord, open_webperson
from gadms_cli.data.webperson_order import BLOCK_ROWS, read_order, shuffle_buffer, stream_source, take_rows
from gadms_cli.data.train_data import TrainData
from gadms_cli.errors import GadmsError
from gadms_cli.progress import track

SHUFFLE_BUFFER_ROWS = 1024  # rows a stream holds to mix its order (parquet/Hub rows carry image bytes: ~30 MB)
JSON_SHUFFLE_BUFFER_ROWS = 16384  # GA-DMS JSON rows carry only a path and two captions
LOOKBACK_ROWS = 256  # how far back a batch with no readable image looks for a stand-in ...
LOOKAHEAD_ROWS = 4096  # ... and then how far ahead

Tokenize = Callable[[list[str]], torch.Tensor]
Transform = Callable[[object], torch.Tensor]


@dataclass(frozen=True)
class EpochLayout:
    """How one epoch is cut: ``num_processes`` x ``num_streams`` streams, ``images_per_batch`` images
    (2x as many items) per micro-batch, ``batches_per_epoch`` micro-batches on every process."""

    num_processes: int
    num_streams: int
    images_per_batch: int
    batches_per_epoch: int

    def stream_batches(self, stream: int, before: int | None = None) -> int:
        """How many of the micro-batches ``0 .. before-1`` (default: all) come from ``stream``."""
        limit = self.batches_per_epoch if before is None else min(before, self.batches_per_epoch)
        return (limit - stream + self.num_streams - 1) // self.num_streams if limit > stream else 0


# --- row counts and the epoch layout -------------------------------------------------


def hub_num_rows(source: HubWebPerson) -> int:
    """The row count a Hub dataset publishes for its split (``dataset_info``), else a GadmsError."""
    splits = getattr(source.stream.info, "splits", None) or {}
    info = splits.get(source.split) if hasattr(splits, "get") else None
    rows = getattr(info, "num_examples", 0) or 0
    if rows <= 0:
        raise GadmsError(
            f"'data.path': the Hub dataset '{source.dataset_id}' publishes no row count for split '{source.split}', so "
            f"epochs cannot be sized; download it (hf download {source.dataset_id} --repo-type dataset --local-dir DIR) "
            f"and set data.path=DIR"
        )
    return int(rows)


def count_rows(source) -> int:
    """Rows (images) of a WebPerson source: parquet footers, one pass over a GA-DMS JSON, or the Hub's info.

    The JSON pass also validates every entry, so a malformed one stops the run before training starts.
    """
    if isinstance(source, ParquetWebPerson):
        return source.num_rows
    if isinstance(source, JsonWebPerson):
        return sum(1 for _ in track(source, f"counting entries of {source.json_file.name}"))
    return hub_num_rows(source)


def stream_rows(source, num_rows: int, num_processes: int, num_streams: int) -> list[list[int]]:
    """Rows of every stream, ``[process][stream]``, the way :func:`stream_source` cuts them.

    Exact for parquet (contiguous ranges) and JSON (positions modulo ``P * W``); for a Hub
    stream every stream is given an equal share ``num_rows // (P * W)``.
    """
    total = num_processes * num_streams
    if isinstance(source, ParquetWebPerson):
        return [[source.shard(num_processes, p).shard(num_streams, s).num_rows for s in range(num_streams)]
                for p in range(num_processes)]
    if isinstance(source, JsonWebPerson):
        # Entry position q goes to process q % P and, within it, to stream (q // P) % W.
        def count(residue: int) -> int:
            return (num_rows - residue + total - 1) // total if num_rows > residue else 0

        return [[count(p + num_processes * s) for s in range(num_streams)] for p in range(num_processes)]
    return [[num_rows // total] * num_streams for _ in range(num_processes)]


def plan_epoch(rows: list[list[int]], images_per_batch: int, grad_accumulation: int) -> EpochLayout:
    """The largest per-process batch count that every stream of every process can fill.

    Stream ``s`` of ``W`` serves batches ``s, s+W, s+2W, ...``; with ``m`` full batches of rows
    it can serve every batch below ``m*W + s``.
    """
    num_streams = len(rows[0])
    limit = min(
        (count // images_per_batch) * num_streams + stream
        for process_rows in rows
        for stream, count in enumerate(process_rows)
    )
    return EpochLayout(
        num_processes=len(rows),
        num_streams=num_streams,
        images_per_batch=images_per_batch,
        batches_per_epoch=limit - limit % grad_accumulation,
    )


# --- decoding and batches --------------------------------------------------------------


def decode(record: WebPersonRecord):
    """The record's RGB PIL image, or None when it cannot be read (missing file, damaged or non-image bytes)."""
    from PIL import Image

    try:
        return record.open_image()
    except (GadmsError, OSError, ValueError, Image.DecompressionBombError) as error:
        where = record.image_file or record.image_path
        print(f"warning: unreadable image replaced in its batch: {record.source}: {where!s:.200} ({type(error).__name__})",
              file=sys.stderr, flush=True)
        return None


class _DecodedRows:
    """A stream's rows in order, each decoded at most once, with a look-back and a look-ahead for stand-ins.

    Both windows depend only on the stream's row order, so a resumed epoch picks the same stand-ins.
    """

    def __init__(self, records: Iterator[WebPersonRecord], lookback_rows: int) -> None:
        self.records = records
        self.ahead: deque = deque()  # (record, image or None), decoded but not yet consumed
        self.recent: deque = deque(maxlen=lookback_rows)  # records consumed lately, newest last (kept encoded)

    def skip(self, count: int) -> None:
        """Consume ``count`` rows without decoding them."""
        for _ in range(count):
            self.recent.append(self.ahead.popleft()[0] if self.ahead else next(self.records))

    def next(self):
        """(record, image or None) of the next row."""
        if self.ahead:
            pair = self.ahead.popleft()
        else:
            record = next(self.records)
            pair = (record, decode(record))
        self.recent.append(pair[0])
        return pair

    def previous_readable(self):
        """(record, image) of the latest readable row among the look-back window, or None."""
        for record in reversed(self.recent):
            image = decode(record)
            if image is not None:
                return record, image
        return None

    def next_readable(self, limit: int):
        """(record, image) of the first readable row among the next ``limit`` rows (not consumed), or None."""
        for pair in self.ahead:
            if pair[1] is not None:
                return pair
        while len(self.ahead) < limit:
            record = next(self.records, None)
            if record is None:
                return None
            pair = (record, decode(record))
            self.ahead.append(pair)
            if pair[1] is not None:
                return pair
        return None


def _random_seed(seed: int, epoch: int, caption: int) -> int:
    """The augmentation seed of one caption's item (the formula of ``CaptionedImageDataset``)."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + caption) % (1 << 63)


class WebPersonBatches(IterableDataset):
    """This process's micro-batches of one epoch, as a torch ``IterableDataset`` (batch_size=None).

    Run it in a DataLoader with exactly ``layout.num_streams`` workers, or iterate it in this process
    when ``num_streams`` is 1. Call :meth:`set_position` before creating each DataLoader.
    """

    def __init__(
        self,
        source,
        layout: EpochLayout,
        process_index: int,
        transform: Transform,
        tokenize: Tokenize,
        *,
        seed: int = 0,
        buffer_rows: int | None = None,
        block_rows: int = BLOCK_ROWS,
        lookahead_rows: int = LOOKAHEAD_ROWS,
        pairing: str = "image",
        caption_dropout: float = 0.0,
        query_attributes: int = 0,
        identity_keys: bool = False,
    ) -> None:
        self.identity_keys = identity_keys  # also yield identity_keys: the keys of all of a row's captions in the batch
        self.caption_dropout = caption_dropout  # per-phrase drop probability (data/caption_dropout.py)
        self.query_attributes = query_attributes  # > 0: attribute queries for the phrase alignment loss
        self.pairing = pairing  # "image": both captions of a row, one identity; "caption": one caption, its own identity
        self.source = source
        self.layout = layout
        self.process_index = process_index
        self.transform = transform
        self.tokenize = tokenize
        self.seed = seed
        if buffer_rows is None:
            buffer_rows = JSON_SHUFFLE_BUFFER_ROWS if isinstance(source, JsonWebPerson) else SHUFFLE_BUFFER_ROWS
        self.buffer_rows = buffer_rows
        self.block_rows = block_rows
        self.lookahead_rows = lookahead_rows
        self.epoch = 0
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Yield micro-batches ``start_batch ..`` of ``epoch`` next."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _rng(self, stream: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.seed % (1 << 63), self.epoch, self.process_index, stream, purpose])

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.layout.num_streams:
            raise RuntimeError(f"WebPersonBatches needs {self.layout.num_streams} DataLoader workers, got {workers}")
        # Rotate so that the DataLoader's round robin (worker 0 first) starts at batch start_batch.
        yield from self.stream_batches((self.start_batch + worker) % workers)

    def stream_batches(self, stream: int) -> Iterator[dict]:
        """The micro-batches of ``stream`` from ``start_batch`` on (batches ``stream``, ``stream + W``, ...)."""
        layout, h = self.layout, self.layout.images_per_batch
        total = layout.stream_batches(stream)
        skip = layout.stream_batches(stream, before=self.start_batch)
        if skip >= total:
            return
        source = stream_source(self.source, layout.num_processes, self.process_index, layout.num_streams, stream)
        order_rng = self._rng(stream, 0)
        rows = take_rows(lambda: read_order(source, order_rng, self.block_rows), total * h, self.source_name)
        rows = _DecodedRows(shuffle_buffer(rows, self.buffer_rows, self._rng(stream, 1)), LOOKBACK_ROWS)
        rows.skip(skip * h)
        for _ in range(total - skip):
            yield self._batch([rows.next() for _ in range(h)], rows)

    @property
    def source_name(self) -> str:
        """The dataset as the user named it (for messages)."""
        if isinstance(self.source, HubWebPerson):
            return self.source.dataset_id
        if isinstance(self.source, JsonWebPerson):
            return str(self.source.json_file)
        return str(self.source.files[0].parent)

    def _batch(self, pairs: list, rows: _DecodedRows) -> dict:
        """Stack ``h`` (record, image) rows into a micro-batch of ``2h`` items (see the module docstring)."""
        readable = [pair for pair in pairs if pair[1] is not None]
        if not readable:
            stand_in = rows.previous_readable() or rows.next_readable(self.lookahead_rows)
            if stand_in is None:
                first = pairs[0][0]
                raise GadmsError(
                    f"{first.source}: no readable image in a batch nor in the {LOOKBACK_ROWS} rows before it and "
                    f"{self.lookahead_rows} after it "
                    f"(first: {str(first.image_file or first.image_path)!r}); check that the images exist and decode"
                )
            readable = [stand_in]
        filled, last = [], None
        for pair in pairs:
            last = pair if pair[1] is not None else last
            filled.append(last if last is not None else readable[0])
        images, captions, pids, indices = [], [], [], []
        for record, image in filled:
            chosen = list(enumerate(record.captions))
            if self.pairing == "caption":  # one caption per row, alternating by epoch: each caption its own identity
                chosen = [chosen[(record.identity + self.epoch) % 2]]
            for j, text in chosen:
                index = 2 * record.identity + j
                with torch.random.fork_rng(devices=[]):
                    # The CPU generator only: torch.manual_seed would also reseed (and leak, fork_rng(devices=[])
                    # restores the CPU state only) every GPU generator, and costs ~0.3 ms per item on the CPU.
                    torch.default_generator.manual_seed(_random_seed(self.seed, self.epoch, index))
                    images.append(self.transform(image))
                if self.caption_dropout > 0:
                    text = drop_phrases(text, self.caption_dropout, random.Random(f"caption-dropout:{self.seed}:{self.epoch}:{index}"))
                captions.append(text)
                pids.append(record.identity if self.pairing == "image" else index)
                indices.append(index)
        batch = {
            "image": torch.stack(images).float(),
            "tokens": self.tokenize(captions).long(),
            "pid": torch.tensor(pids, dtype=torch.long),
            "caption": torch.tensor(indices, dtype=torch.long),
            "skipped": len(pairs) - sum(pair[1] is not None for pair in pairs),
        }
        if self.query_attributes > 0:
            queries = [
                attribute_query(text, self.query_attributes, random.Random(f"attribute-query:{self.seed}:{self.epoch}:{index}"), self.tokenize)
                for text, index in zip(captions, indices)
            ]
            for key in ("query_tokens", "query_keys", "caption_keys"):
                batch[key] = torch.stack([query[key] for query in queries])
            if self.identity_keys:
                batch["identity_keys"] = torch.stack(identity_keys(captions, pids))
        return batch


# --- the loader ------------------------------------------------------------------------

_WORKER_ERROR_PREFIX = "gadms_cli.errors.GadmsError: "


def _one_line_errors(batches: Iterator[dict]) -> Iterator[dict]:
    """Pass a DataLoader's batches through, turning a GadmsError raised in a worker (re-raised by the
    DataLoader as a RuntimeError holding the worker's traceback) back into the one-line GadmsError."""
    try:
        yield from batches
    except RuntimeError as exc:
        lines = [line for line in str(exc).splitlines() if line.startswith(_WORKER_ERROR_PREFIX)]
        if not lines:
            raise
        # The error's traceback keeps the loader alive; stop its workers now rather than at garbage collection.
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        raise GadmsError(lines[-1][len(_WORKER_ERROR_PREFIX):]) from None


def _single_threaded(batches: Iterator[dict]) -> Iterator[dict]:
    """Build each batch with one torch thread: the per-image ops are tiny and intra-op threads only add
    overhead (5-10x slower transforms measured on 2 cores). DataLoader workers already run this way."""
    while True:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            batch = next(batches, None)
        finally:
            torch.set_num_threads(threads)
        if batch is None:
            return
        yield batch


def load_batches(dataset: WebPersonBatches, num_workers: int, epoch: int, start_batch: int) -> Iterator[dict]:
    """This process's micro-batches ``start_batch ..`` of ``epoch``: read by ``num_workers`` DataLoader
    workers (one stream each), or in this process when ``num_workers`` is 0."""
    dataset.set_position(epoch, start_batch)
    if num_workers == 0:
        return _single_threaded(iter(dataset))
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
    return _one_line_errors(iter(loader))


def webperson_train_data(recipe, accelerator, tokenize: Tokenize, transform: Transform, image_size=None):
    """Build :class:`gadms_cli.data.train_data.TrainData` for ``data.kind: webperson``.

    ``recipe.data.path`` is a WebPerson parquet folder (or file/glob), a GA-DMS JSON (or its
    folder) or a Hub dataset id. Each process's micro-batch holds
    ``train.batch_size / train.grad_accumulation / num_processes`` items (captions), i.e. half as
    many images; with ``data.caption_pairing: caption`` one caption per image (as many images). ``image_size`` is unused: ``transform`` already produces the model's size.
    """
    data, train = recipe.data, recipe.train
    processes = accelerator.num_processes
    micro_global = train.batch_size // train.grad_accumulation
    if micro_global % processes:
        raise GadmsError(
            f"'train.batch_size' / 'train.grad_accumulation' = {micro_global} is not divisible by the {processes} "
            f"processes; set train.batch_size to a multiple of {processes * train.grad_accumulation}"
        )
    per_process = micro_global // processes
    by_caption = data.caption_pairing == "caption"
    if per_process % 2 and not by_caption:
        raise GadmsError(
            f"'train.batch_size' gives {per_process} captions per process and micro-batch; it must be even (each "
            f"image brings its two captions): set train.batch_size to a multiple of {2 * processes * train.grad_accumulation}"
        )
    source = open_webperson(data.path, split=data.train_split)
    num_rows = count_rows(source)
    streams = max(1, data.num_workers)
    rows_per_batch = per_process if by_caption else per_process // 2
    layout = plan_epoch(stream_rows(source, num_rows, processes, streams), rows_per_batch, train.grad_accumulation)
    if layout.batches_per_epoch == 0:
        raise GadmsError(
            f"'data.path' {data.path}: {num_rows} images split over {processes} processes x {streams} workers cannot "
            f"fill one step of {train.batch_size} captions; lower train.batch_size or data.num_workers"
        )
    dataset = WebPersonBatches(
        source, layout, accelerator.process_index, transform, tokenize, seed=train.seed, pairing=data.caption_pairing,
        caption_dropout=data.augment.caption_dropout,
        query_attributes=recipe.method.query_attributes,
        identity_keys=recipe.method.attribute_weight > 0 and recipe.method.attribute_targets == "identity",
    )
    return TrainData(
        batches=lambda epoch, start_batch: load_batches(dataset, data.num_workers, epoch, start_batch),
        steps_per_epoch=layout.batches_per_epoch // train.grad_accumulation,
        num_ids=2 * num_rows if by_caption else num_rows,
        num_captions=2 * num_rows,
        val=validation_split(recipe),
    )


def validation_split(recipe):
    """The ``data.val_split`` of the ``data.val_bench`` benchmark folder, or None when either is unset."""
    data = recipe.data
    if not data.val_bench or not data.val_split:
        return None
    bench = load_benchmark(Path(data.val_bench))
    if data.val_split not in bench.split_names:
        raise GadmsError(
            f"'data.val_split': split '{data.val_split}' not in {bench.root} (has {', '.join(bench.split_names)}); "
            f"set --set data.val_split=<one of them> or null"
        )
    return bench.eval_split(data.val_split)
