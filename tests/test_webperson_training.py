"""Streaming WebPerson training batches, on parquet shards, GA-DMS JSON folders and a local `datasets`
stream written by hand here (pyarrow, PIL, datasets), with real DataLoader workers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gadms_cli.data.transforms import AugmentConfig, train_transform
from gadms_cli.data.webperson import HubWebPerson, open_webperson
from gadms_cli.data.webperson_order import parquet_blocks
from gadms_cli.data.webperson_training import (
    WebPersonBatches,
    hub_num_rows,
    load_batches,
    plan_epoch,
    stream_rows,
    webperson_train_data,
)
from gadms_cli.errors import GadmsError
from gadms_cli.recipe import recipe_from_dict

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HEIGHT, WIDTH = 8, 4


def colour(i: int) -> tuple[int, int, int]:
    """A colour unique to row i (i < 256)."""
    return (i, 255 - i, (3 * i) % 256)


def image_bytes(i: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), colour(i)).save(buffer, format=fmt)
    return buffer.getvalue()


def captions(i: int) -> tuple[str, str]:
    return (f"row {i} caption 0", f"row {i} caption 1")


def write_shard(path: Path, rows: range, row_group_size: int, broken: dict[int, dict] | None = None) -> None:
    """A WebPerson shard as published (image struct<bytes, path>, image_path, caption1, caption2).

    ``broken[i]`` replaces row i's image struct (e.g. non-image bytes, or no bytes and a missing file).
    """
    broken = broken or {}
    images = [broken.get(i, {"bytes": image_bytes(i), "path": f"{i}.png"}) for i in rows]
    table = pa.table(
        {
            "image": pa.array(images, type=IMAGE_TYPE),
            "image_path": [f"coyo/{i:05d}.jpg" for i in rows],
            "caption1": [captions(i)[0] for i in rows],
            "caption2": [captions(i)[1] for i in rows],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def build_parquet(root: Path, rows: int, split_at: int | None = None, row_group_size: int = 3, broken=None) -> Path:
    """``rows`` rows in two shards (rows [0, split_at) and [split_at, rows))."""
    split_at = rows // 2 if split_at is None else split_at
    write_shard(root / "data" / "train-00000-of-00002.parquet", range(0, split_at), row_group_size, broken)
    write_shard(root / "data" / "train-00001-of-00002.parquet", range(split_at, rows), row_group_size, broken)
    return root


NOT_AN_IMAGE = {"bytes": b"this is not an image", "path": "x.jpg"}
MISSING_FILE = {"bytes": None, "path": "nowhere/missing.jpg"}


def fake_tokenize(texts: list[str]) -> torch.Tensor:
    """'row I caption J' -> [I, J]: lets the test read back which caption an item carries."""
    return torch.tensor([[int(t.split()[1]), int(t.split()[3])] for t in texts], dtype=torch.long)


def exact_pixels(image: Image.Image) -> torch.Tensor:
    """PIL -> float [3, H, W] with the raw 0..255 values (no augmentation), so colours can be read back."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)


def recipe(path, batch_size: int = 8, workers: int = 0, accumulation: int = 1, seed: int = 0, **data):
    return recipe_from_dict(
        {
            "data": {"kind": "webperson", "path": str(path), "num_workers": workers, "val_split": None, **data},
            "train": {"batch_size": batch_size, "grad_accumulation": accumulation, "seed": seed},
        }
    )


def accelerator(processes: int = 1, index: int = 0) -> SimpleNamespace:
    return SimpleNamespace(num_processes=processes, process_index=index)


def build(path, *, processes=1, index=0, transform=exact_pixels, tokenize=fake_tokenize, **kwargs):
    return webperson_train_data(recipe(path, **kwargs), accelerator(processes, index), tokenize, transform, (HEIGHT, WIDTH))


def epoch_batches(data, epoch: int = 0, start: int = 0) -> list[dict]:
    return list(data.batches(epoch, start))


def pids(batches: list[dict]) -> list[int]:
    """Identities in order, one per image (items come in pairs)."""
    return [int(p) for batch in batches for p in batch["pid"][0::2]]


def assert_well_formed(batch: dict, items: int, pid_is_row: bool = True) -> None:
    """Shapes, adjacent caption pairs, and that image, caption text (and ids, where they are row numbers)
    all describe the same row."""
    assert batch["image"].shape == (items, 3, HEIGHT, WIDTH) and batch["image"].dtype == torch.float32
    assert batch["tokens"].dtype == torch.int64 and batch["pid"].shape == (items,) and batch["caption"].shape == (items,)
    pid, caption, tokens = batch["pid"], batch["caption"], batch["tokens"]
    assert torch.equal(pid[0::2], pid[1::2])
    assert torch.equal(caption[0::2], 2 * pid[0::2]) and torch.equal(caption[1::2], 2 * pid[1::2] + 1)
    assert tokens[:, 1].tolist() == [0, 1] * (items // 2)
    for k in range(items):
        row = int(tokens[k, 0])
        assert row == int(pid[k]) or not pid_is_row
        assert tuple(batch["image"][k, :, 0, 0].int().tolist()) == colour(row)


# --- shapes, pairs, counts ------------------------------------------------------------


def test_batches_hold_both_captions_of_each_image(tmp_path):
    data = build(build_parquet(tmp_path / "wp", 22), batch_size=8)
    assert (data.num_ids, data.num_captions, data.steps_per_epoch, data.val) == (22, 44, 5, None)
    batches = epoch_batches(data)
    assert len(batches) == 5  # 22 images // 4 per batch; 2 rows dropped
    for batch in batches:
        assert_well_formed(batch, items=8)
        assert batch["skipped"] == 0
    seen = pids(batches)
    assert len(seen) == len(set(seen)) == 20 and set(seen) <= set(range(22))


def test_gradient_accumulation_rounds_the_epoch_to_whole_steps(tmp_path):
    data = build(build_parquet(tmp_path / "wp", 22), batch_size=8, accumulation=2)  # 4 captions = 2 images per batch
    assert data.steps_per_epoch == 5  # 11 batches fit, 10 = 5 steps x 2 are used
    assert len(epoch_batches(data)) == 10


def test_two_processes_see_disjoint_identities_and_the_same_batch_count(tmp_path):
    root = build_parquet(tmp_path / "wp", 23)  # process 0: rows 0..10, process 1: rows 11..22
    ranks = [build(root, processes=2, index=i, batch_size=8) for i in range(2)]
    assert ranks[0].steps_per_epoch == ranks[1].steps_per_epoch == 5  # min(11 // 2, 12 // 2)
    seen = []
    for rank in ranks:
        batches = epoch_batches(rank)
        assert len(batches) == 5
        for batch in batches:
            assert_well_formed(batch, items=4)
        seen.append(pids(batches))
    assert len(set(seen[0])) == len(set(seen[1])) == 10
    assert set(seen[0]) <= set(range(11)) and set(seen[1]) <= set(range(11, 23))


@pytest.mark.parametrize("processes", [1, 2])
def test_two_workers_lose_and_duplicate_nothing(tmp_path, processes):
    """Streams per process: contiguous halves; batch i of a process comes from stream i % 2."""
    rows = 46 if processes == 2 else 23
    root = build_parquet(tmp_path / "wp", rows)
    expected_streams = [[range(0, 11), range(11, 23)], [range(23, 34), range(34, 46)]][:processes]
    all_seen = []
    for index in range(processes):
        data = build(root, processes=processes, index=index, batch_size=4 * processes, workers=2)
        batches = epoch_batches(data)
        # stream rows 11 and 12 -> 5 and 6 batches of 2 images -> batches 0..9 (stream 1 could serve up to 12)
        assert len(batches) == 10 and data.steps_per_epoch == 10
        for i, batch in enumerate(batches):
            assert_well_formed(batch, items=4)
            assert set(batch["pid"].tolist()) <= set(expected_streams[index][i % 2])
        seen = pids(batches)
        for stream in expected_streams[index]:  # 5 batches x 2 images from each stream: 1 and 2 rows dropped
            assert len({p for p in seen if p in stream}) == 10
        all_seen += seen
    assert len(all_seen) == len(set(all_seen)) == 20 * processes


# --- order and resume -------------------------------------------------------------------


def gradient_image_bytes(i: int) -> bytes:
    array = np.zeros((16, 8, 3), dtype=np.uint8)
    array[..., 0] = np.arange(16)[:, None] * 15
    array[..., 1] = np.arange(8)[None, :] * 30
    array[..., 2] = i
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def build_augmentable(root: Path, rows: int) -> Path:
    broken = {i: {"bytes": gradient_image_bytes(i), "path": f"{i}.png"} for i in range(rows)}
    broken[5] = NOT_AN_IMAGE
    return build_parquet(root, rows, row_group_size=2, broken=broken)


AUGMENT = train_transform((HEIGHT, WIDTH), AugmentConfig(flip=True, pad_crop=2, random_erasing=0.5))


def same_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["skipped"] == y["skipped"] and all(torch.equal(x[k], y[k]) for k in ("image", "tokens", "pid", "caption"))
        for x, y in zip(a, b)
    )


def test_order_is_a_function_of_seed_and_epoch(tmp_path):
    root = build_augmentable(tmp_path / "wp", 40)
    first = build(root, batch_size=8, transform=AUGMENT)
    again = build(root, batch_size=8, transform=AUGMENT)
    other_seed = build(root, batch_size=8, transform=AUGMENT, seed=1)
    epoch0 = epoch_batches(first, 0)
    assert same_batches(epoch0, epoch_batches(again, 0))
    epoch1 = epoch_batches(first, 1)
    assert pids(epoch0) != pids(epoch1) and pids(epoch0) != pids(epoch_batches(other_seed, 0))
    # The two captions of one image get different augmentation draws; so does the same caption in another epoch.
    images0 = {int(c): img for batch in epoch0 for c, img in zip(batch["caption"], batch["image"])}
    images1 = {int(c): img for batch in epoch1 for c, img in zip(batch["caption"], batch["image"])}
    common = sorted(set(images0) & set(images1))
    assert sum(not torch.equal(images0[c], images1[c]) for c in common) > len(common) // 2
    assert sum(not torch.equal(images0[2 * i], images0[2 * i + 1]) for i in range(40) if 2 * i in images0) > 5


@pytest.mark.parametrize(("workers", "start"), [(0, 1), (2, 3)])
def test_start_batch_gives_the_tail_of_the_uninterrupted_epoch(tmp_path, workers, start):
    root = build_augmentable(tmp_path / "wp", 30)
    data = build(root, batch_size=4, workers=workers, transform=AUGMENT)
    full = epoch_batches(data, epoch=2)
    assert sum(batch["skipped"] for batch in full) <= 1
    assert same_batches(epoch_batches(data, epoch=2, start=start), full[start:])
    assert epoch_batches(data, epoch=2, start=len(full)) == []


def test_one_worker_yields_what_reading_in_process_yields(tmp_path):
    root = build_augmentable(tmp_path / "wp", 20)
    inline, one_worker = (epoch_batches(build(root, batch_size=4, workers=w, transform=AUGMENT), 1) for w in (0, 1))
    assert len(inline) == 10 and same_batches(inline, one_worker)


def test_parquet_blocks_are_whole_row_groups(tmp_path):
    source = open_webperson(build_parquet(tmp_path / "wp", 23, split_at=12))  # groups of 3: file 2 ends with 2 rows
    assert parquet_blocks(source, block_rows=4) == [(0, 6), (6, 12), (12, 18), (18, 23)]
    assert parquet_blocks(source, block_rows=1) == [(a, min(a + 3, b)) for a, b in
                                                    [(0, 12), (3, 12), (6, 12), (9, 12), (12, 23), (15, 23), (18, 23), (21, 23)]]
    assert parquet_blocks(source.shard(2, 1), block_rows=4) == [(11, 12), (12, 18), (18, 23)]  # rows 11..22


def test_read_order_shuffles_blocks_and_keeps_them_whole(tmp_path):
    source = open_webperson(build_parquet(tmp_path / "wp", 24, split_at=12))
    layout = plan_epoch(stream_rows(source, 24, 1, 1), images_per_batch=2, grad_accumulation=1)
    dataset = WebPersonBatches(source, layout, 0, exact_pixels, fake_tokenize, buffer_rows=1, block_rows=3)
    orders = []
    for epoch in (0, 1):
        dataset.set_position(epoch)
        order = pids(list(dataset))
        blocks = [tuple(order[i:i + 3]) for i in range(0, 24, 3)]
        assert sorted(blocks) == [(a, a + 1, a + 2) for a in range(0, 24, 3)]  # each block whole, in row order
        orders.append(blocks)
    assert orders[0] != orders[1]


# --- unreadable images ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_images_are_replaced_and_counted(tmp_path, workers):
    root = build_parquet(tmp_path / "wp", 24, broken={7: NOT_AN_IMAGE, 12: MISSING_FILE})
    batches = epoch_batches(build(root, batch_size=8, workers=workers))
    assert len(batches) == 6  # 24 rows = 6 x 4 images; with 2 workers 2 streams of 12 rows = 3 batches each
    for batch in batches:
        assert_well_formed(batch, items=8)  # the stand-in is a whole readable pair of the same batch
        readable_rows = len(set(batch["pid"].tolist()))
        assert batch["skipped"] == 4 - readable_rows
    assert sum(b["skipped"] for b in batches) == 2 and set(pids(batches)) == set(range(24)) - {7, 12}


def test_a_wholly_unreadable_batch_borrows_the_next_readable_image(tmp_path):
    broken = {i: NOT_AN_IMAGE for i in range(10) if i not in (3, 8)}
    batches = epoch_batches(build(build_parquet(tmp_path / "wp", 10, broken=broken), batch_size=4))
    assert len(batches) == 5 and sum(b["skipped"] for b in batches) == 8
    for batch in batches:
        assert_well_formed(batch, items=4)
        assert set(batch["pid"].tolist()) <= {3, 8}


@pytest.mark.parametrize("workers", [0, 2])
def test_no_readable_image_at_all_is_a_one_line_error(tmp_path, workers):
    broken = {i: NOT_AN_IMAGE for i in range(8)}
    data = build(build_parquet(tmp_path / "wp", 8, broken=broken), batch_size=4, workers=workers)
    with pytest.raises(GadmsError, match=r"train-0000[01]-of-00002\.parquet: no readable image") as error:
        epoch_batches(data)
    assert "\n" not in str(error.value)


# --- other sources ---------------------------------------------------------------------------


def build_gadms_json(root: Path, count: int, missing: set[int]) -> Path:
    entries = {}
    for i in range(count):
        relative = f"part{i % 3}/{i:04d}.png"
        entries[relative] = {"caption1": captions(i)[0], "caption2": captions(i)[1]}
        if i not in missing:
            path = root / "images" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (WIDTH, HEIGHT), colour(i)).save(path)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations.json").write_text(json.dumps(entries))
    return root


def test_gadms_json_variant_streams_with_workers(tmp_path):
    root = build_gadms_json(tmp_path / "gadms", 12, missing={5})
    data = build(root, batch_size=4, workers=2)
    assert (data.num_ids, data.num_captions, data.steps_per_epoch) == (12, 24, 6)
    batches = epoch_batches(data)
    for i, batch in enumerate(batches):
        assert_well_formed(batch, items=4)
        assert all(pid % 2 == i % 2 for pid in batch["pid"].tolist())  # stream s holds entries s, s+2, ...
    assert sum(b["skipped"] for b in batches) == 1 and set(pids(batches)) == set(range(12)) - {5}


def local_stream(files: list[Path]):
    import datasets

    stream = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", streaming=True)
    return stream.cast_column("image", datasets.Image(decode=False))


@pytest.mark.parametrize("split_at", [12, 10])
def test_hub_stream_with_workers_gives_every_stream_an_equal_share(tmp_path, split_at):
    """A `datasets` stream (what a Hub id opens), split by files between 2 workers; uneven files start over."""
    root = build_parquet(tmp_path / "wp", 24, split_at=split_at)
    source = HubWebPerson("local/webperson", stream=local_stream(sorted((root / "data").glob("*.parquet"))))
    with pytest.raises(GadmsError, match="'data.path'.*publishes no row count"):
        hub_num_rows(source)
    layout = plan_epoch(stream_rows(source, 24, 1, 2), images_per_batch=2, grad_accumulation=1)
    assert layout.batches_per_epoch == 12  # 12 rows per stream, 6 batches each
    dataset = WebPersonBatches(source, layout, 0, exact_pixels, fake_tokenize)
    batches = list(load_batches(dataset, num_workers=2, epoch=0, start_batch=0))
    assert len(batches) == 12
    for i, batch in enumerate(batches):
        assert_well_formed(batch, items=4, pid_is_row=False)
    rows = [int(r) for batch in batches for r in batch["tokens"][0::2, 0]]
    if split_at == 12:
        assert sorted(rows) == list(range(24))
    else:  # stream 0 has 10 rows and starts over for 2 more; stream 1 uses 12 of its 14
        assert len(set(rows) & set(range(10))) == 10 and len(set(rows) & set(range(10, 24))) == 12
    assert all(0 <= p < 24 for p in pids(batches))


# --- recipe checks and validation ---------------------------------------------------------------


def test_batch_size_problems_are_one_line_errors(tmp_path):
    root = build_parquet(tmp_path / "wp", 10)
    with pytest.raises(GadmsError, match="'train.batch_size'.*must be even"):
        build(root, processes=2, batch_size=6)
    with pytest.raises(GadmsError, match="not divisible by the 4 processes"):
        build(root, processes=4, batch_size=6)
    with pytest.raises(GadmsError, match="'data.path'.*10 images.*cannot fill one step of 24"):
        build(root, batch_size=24)


def test_validation_comes_from_the_val_bench(tmp_path):
    bench = tmp_path / "CUHK-PEDES"
    records = []
    for i, split in enumerate(["train", "val", "val", "test"]):
        relative = f"cam/{i}.jpg"
        (bench / "imgs" / "cam").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (WIDTH, HEIGHT), colour(i)).save(bench / "imgs" / relative, format="JPEG")
        records.append({"split": split, "captions": [f"caption {i}"], "file_path": relative, "id": 10 + i})
    (bench / "reid_raw.json").write_text(json.dumps(records))
    root = build_parquet(tmp_path / "wp", 8)
    data = build(root, batch_size=4, val_bench=str(bench), val_split="val")
    assert data.val.queries == ["caption 1", "caption 2"] and data.val.gallery_ids == [11, 12]
    with pytest.raises(GadmsError, match="'data.val_split': split 'dev'"):
        build(root, batch_size=4, val_bench=str(bench), val_split="dev")


def test_caption_pairing_gives_one_caption_per_image_each_its_own_identity(tmp_path):
    """data.caption_pairing: caption (the public script's sampling): 8 items are 8 images with one caption
    each, caption (row + epoch) mod 2, identity 2 * row + caption; two epochs cover every caption."""
    data = build(build_parquet(tmp_path / "wp", 22), batch_size=8, caption_pairing="caption")
    assert (data.num_ids, data.num_captions, data.steps_per_epoch) == (44, 44, 2)  # 22 rows // 8 per batch
    caption_of = [{}, {}]  # per epoch: row -> caption used
    for epoch in (0, 1):
        for batch in epoch_batches(data, epoch):
            rows, captions = batch["tokens"][:, 0].tolist(), batch["tokens"][:, 1].tolist()
            assert len(set(rows)) == 8  # eight different images
            assert captions == [(row + epoch) % 2 for row in rows]
            assert batch["pid"].tolist() == [2 * r + c for r, c in zip(rows, captions)] == batch["caption"].tolist()
            for k, row in enumerate(rows):
                assert tuple(batch["image"][k, :, 0, 0].int().tolist()) == colour(row)
            caption_of[epoch].update(zip(rows, captions))
    both = caption_of[0].keys() & caption_of[1].keys()
    assert both and all(caption_of[0][r] != caption_of[1][r] for r in both)  # the other caption the next epoch
