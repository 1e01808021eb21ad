"""Training data from a benchmark folder: identity-balanced P x K batches per process."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from gadms_cli.data.attribute_phrases import identity_keys
from gadms_cli.data.benchmarks import load_benchmark
from gadms_cli.data.identity_sampler import IdentityBatchSampler
from gadms_cli.data.lookalike_identities import caption_neighbours
from gadms_cli.data.train_dataset import CaptionedImageDataset, collate_train
from gadms_cli.data.train_data import TrainData
from gadms_cli.errors import GadmsError


def oracle_noise_tokens(bench, split: str, samples, tokenizer) -> list[torch.Tensor]:
    """One bool [context_length] per sample: its written-wrong tokens, from SketchPedes' own records."""
    from gadms_cli.data.synth.noise_labels import load_caption_edits, noise_token_mask

    edits = load_caption_edits(bench, split)
    masks = []
    for sample in samples:
        key = (sample.image_path.relative_to(bench.image_dir).as_posix(), sample.caption)
        if key not in edits:
            raise GadmsError(
                f"{bench.root / 'attributes.jsonl'}: no record of caption {sample.caption[:40]!r}... of {key[0]}; "
                "method.token_score 'oracle' needs the folder exactly as 'gadms synth' wrote it"
            )
        truth = edits[key]
        masks.append(noise_token_mask(tokenizer, sample.caption, truth.edits, tokenizer.context_length, clean=truth.clean)[0])
    return masks


def benchmark_train_data(recipe, accelerator, tokenize: Callable, transform: Callable, image_size):
    """Build :class:`gadms_cli.data.train_data.TrainData` for ``data.kind: benchmark``.

    The global micro-batch (``train.batch_size / train.grad_accumulation``) holds
    P identities x K captions (K = ``data.samples_per_id``); each process gets
    its slice of every global micro-batch.
    """
    bench = load_benchmark(Path(recipe.data.path), skip_missing=recipe.data.skip_missing, clean=recipe.data.clean_annotations)
    for key in ("train_split", "val_split"):
        split = getattr(recipe.data, key)
        if split is not None and split not in bench.split_names:
            raise GadmsError(
                f"'data.{key}': split '{split}' not in {bench.root} (has {', '.join(bench.split_names)}); "
                f"set --set data.{key}=<one of them>" + (" or null" if key == "val_split" else "")
            )
    samples = bench.train_samples(recipe.data.train_split)
    k = recipe.data.samples_per_id
    micro_global = recipe.train.batch_size // recipe.train.grad_accumulation
    if micro_global % k:
        raise GadmsError(f"'train.batch_size' / 'train.grad_accumulation' = {micro_global} is not a multiple of 'data.samples_per_id' = {k}")
    if micro_global % accelerator.num_processes:
        raise GadmsError(
            f"'train.batch_size' / 'train.grad_accumulation' = {micro_global} is not divisible by the "
            f"{accelerator.num_processes} processes"
        )
    num_ids = len({s.pid for s in samples})
    if num_ids < micro_global // k:
        raise GadmsError(
            f"{bench.root}: {num_ids} training identities cannot fill a batch of {micro_global // k} identities x "
            f"{k} captions; lower train.batch_size to at most {num_ids * k * recipe.train.grad_accumulation}"
        )
    group = recipe.data.lookalike_group
    neighbours = None
    if group > 1:
        captions_by_id: dict[int, list[str]] = {}
        for sample in samples:
            captions_by_id.setdefault(sample.pid, []).append(sample.caption)
        neighbours = caption_neighbours(captions_by_id, k=2 * group)
    sampler = IdentityBatchSampler(
        [s.pid for s in samples],
        ids_per_batch=micro_global // k,
        samples_per_id=k,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
        seed=recipe.train.seed,
        neighbours=neighbours,
        group_size=group,
    )
    noise_tokens = None
    if recipe.method.token_score == "oracle":
        if recipe.data.augment.caption_dropout > 0:
            raise GadmsError("method.token_score 'oracle' marks word positions of the written captions; "
                             "set data.augment.caption_dropout=0 (dropout moves them)")
        noise_tokens = oracle_noise_tokens(bench, recipe.data.train_split, samples, tokenize)
    identity_table = None
    if recipe.method.attribute_weight > 0 and recipe.method.attribute_targets == "identity":
        identity_table = identity_keys([s.caption for s in samples], [s.pid for s in samples])
    dataset = CaptionedImageDataset(samples, transform, tokenize, seed=recipe.train.seed, caption_dropout=recipe.data.augment.caption_dropout,
                                   query_attributes=recipe.method.query_attributes, noise_tokens=noise_tokens,
                                   identity_keys=identity_table)
    workers = recipe.data.num_workers

    def batches(epoch: int, start_batch: int):
        sampler.set_epoch(epoch, start_batch)
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_train,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            # An own generator: creating the loader must not draw from the global RNG,
            # whose state a resumed run restores for the masking draws.
            generator=torch.Generator().manual_seed(recipe.train.seed * 1_000_003 + epoch),
        )
        return iter(loader)

    per_epoch = len(sampler.global_batches()) // recipe.train.grad_accumulation
    if per_epoch == 0:
        raise GadmsError(
            f"{bench.root}: {len(samples)} training captions cannot fill one batch of {recipe.train.batch_size}; "
            "lower train.batch_size"
        )
    val = bench.eval_split(recipe.data.val_split) if recipe.data.val_split else None
    return TrainData(
        batches=batches,
        steps_per_epoch=per_epoch,
        num_ids=num_ids,
        num_captions=len(samples),
        val=val,
    )
