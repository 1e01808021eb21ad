"""WebPerson reader on parquet shards and GA-DMS JSON files written by hand here (pyarrow, datasets, json)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gadms_cli.data import json_stream, webperson
from gadms_cli.data.webperson import JsonWebPerson, ParquetWebPerson, open_webperson
from gadms_cli.errors import GadmsError


def colour(i: int) -> tuple[int, int, int]:
    return (10 * i, 255 - 10 * i, 7 * i % 256)


def png_bytes(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 8), colour(i)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def write_shard(path: Path, rows: range, row_group_size: int) -> None:
    """A WebPerson shard as published: image struct<bytes, path>, image_path, caption1, caption2."""
    table = pa.table(
        {
            "image": pa.array([{"bytes": png_bytes(i), "path": f"img_{i}.png"} for i in rows], type=IMAGE_TYPE),
            "image_path": [f"coyo/{i:05d}.jpg" for i in rows],
            "caption1": [f"person {i} wears a {'red ' * (i % 3)}coat" for i in rows],
            "caption2": [f"second caption of {i}" for i in rows],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)


def build_webperson(root: Path) -> Path:
    """8 rows in two shards (row groups of 2, 2, 1 and 3 rows)."""
    write_shard(root / "data" / "train-00000-of-00002.parquet", range(0, 5), row_group_size=2)
    write_shard(root / "data" / "train-00001-of-00002.parquet", range(5, 8), row_group_size=3)
    return root


def build_gadms_json(root: Path, count: int = 5) -> Path:
    """``{relative_path: {caption1, caption2}}`` with the images under images/."""
    entries = {}
    for i in range(count):
        relative = f"part{i % 2}/{i:04d}.jpg"
        entries[relative] = {"caption1": f"first caption {i}", "caption2": f"second caption {i} \u00e9"}
        path = root / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 8), colour(i)).save(path, format="JPEG")
    (root / "annotations.json").write_text(json.dumps(entries, indent=1))
    return root / "annotations.json"


def test_parquet_rows_identities_and_images(tmp_path):
    source = open_webperson(build_webperson(tmp_path / "WebPerson"))
    assert isinstance(source, ParquetWebPerson) and len(source) == 8
    records = list(source)
    assert [r.identity for r in records] == list(range(8))
    assert records[6].image_path == "coyo/00006.jpg"
    assert records[6].caption1 == "person 6 wears a coat" and records[6].caption2 == "second caption of 6"
    assert records[2].captions == ("person 2 wears a red red coat", "second caption of 2")
    for record in (records[0], records[4], records[7]):
        assert record.open_image().getpixel((1, 1)) == colour(record.identity)


@pytest.mark.parametrize("num_shards", [1, 2, 3, 5, 8, 11])
def test_parquet_shards_partition_the_rows(tmp_path, num_shards):
    source = open_webperson(build_webperson(tmp_path / "WebPerson"))
    everything = [(r.identity, r.caption1, r.image_bytes) for r in source]
    parts = [[(r.identity, r.caption1, r.image_bytes) for r in source.shard(num_shards, i)] for i in range(num_shards)]
    assert sorted(sum(parts, [])) == sorted(everything)  # disjoint and complete, same content
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    assert [len(source.shard(num_shards, i)) for i in range(num_shards)] == sizes
    # sharding a shard again stays inside it
    inner = [r.identity for r in source.shard(num_shards, 0).shard(2, 1)]
    assert set(inner) <= {identity for identity, _, _ in parts[0]}


def test_parquet_written_by_datasets_with_image_feature(tmp_path):
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "image_path": datasets.Value("string"),
         "caption1": datasets.Value("string"), "caption2": datasets.Value("string")}
    )
    table = {
        "image": [Image.new("RGB", (4, 8), colour(i)) for i in range(3)],
        "image_path": [f"web/{i}.jpg" for i in range(3)],
        "caption1": ["a", "b", "c"],
        "caption2": ["d", "e", "f"],
    }
    path = tmp_path / "WebPerson" / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    datasets.Dataset.from_dict(table, features=features).to_parquet(str(path))
    records = list(open_webperson(tmp_path / "WebPerson"))
    assert [(r.identity, r.image_path, r.caption2) for r in records] == [(0, "web/0.jpg", "d"), (1, "web/1.jpg", "e"), (2, "web/2.jpg", "f")]
    assert records[2].open_image().getpixel((0, 0)) == colour(2)


def test_glob_and_single_file_sources(tmp_path):
    root = build_webperson(tmp_path / "WebPerson")
    second = root / "data" / "train-00001-of-00002.parquet"
    assert [r.identity for r in open_webperson(second)] == [0, 1, 2]  # numbering is per source
    assert len(open_webperson(str(root / "data" / "train-*.parquet"))) == 8
    with pytest.raises(GadmsError, match="no file matches"):
        open_webperson(str(root / "data" / "val-*.parquet"))


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"image": pa.array([{"bytes": b"x", "path": "p"}], type=IMAGE_TYPE), "caption1": ["a"]}), path)
    with pytest.raises(GadmsError) as info:
        open_webperson(path)
    assert str(path) in str(info.value) and "missing column(s) caption2" in str(info.value)


def test_damaged_parquet_is_a_one_line_error(tmp_path):
    path = tmp_path / "WebPerson" / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(GadmsError, match="not a readable parquet file"):
        open_webperson(tmp_path / "WebPerson")


def test_hub_id_offline_says_to_download_elsewhere(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GadmsError) as info:
        open_webperson("someone/WebPerson-1M")
    message = str(info.value)
    assert "'someone/WebPerson-1M' is not a local folder" in message
    assert "HF_HUB_OFFLINE is set" in message and "hf download someone/WebPerson-1M" in message and "pass DIR" in message


def test_gadms_json_variant_streams_entries_in_file_order(tmp_path):
    json_file = build_gadms_json(tmp_path / "gadms")
    source = open_webperson(tmp_path / "gadms")
    assert isinstance(source, JsonWebPerson)
    records = list(source)
    expected = json.loads(json_file.read_text())
    assert [(r.image_path, r.caption1, r.caption2) for r in records] == [
        (key, value["caption1"], value["caption2"]) for key, value in expected.items()
    ]
    assert [r.identity for r in records] == list(range(5))
    assert records[3].image_file == tmp_path / "gadms" / "images" / "part1" / "0003.jpg"
    assert records[3].open_image().size == (4, 8)
    shards = [[r.identity for r in source.shard(3, i)] for i in range(3)]
    assert shards == [[0, 3], [1, 4], [2]]


def test_gadms_json_list_layout_of_the_public_code(tmp_path, monkeypatch):
    """The public GA-DMS code reads a JSON LIST of {path: {caption1, caption2}} objects: the same
    entries in the same order as the object layout, whatever the chunk size."""
    json_file = build_gadms_json(tmp_path / "gadms", count=6)
    expected = list(json.loads(json_file.read_text()).items())
    listed = tmp_path / "gadms" / "list.json"
    listed.write_text(json.dumps([{key: value} for key, value in expected[:4]] + [dict(expected[4:])]))
    json_file.unlink()
    for chunk in (3, 64, 1 << 20):
        monkeypatch.setattr(json_stream, "_CHUNK_CHARS", chunk)
        got = [(r.image_path, {"caption1": r.caption1, "caption2": r.caption2}) for r in open_webperson(tmp_path / "gadms")]
        assert got == expected
    listed.write_text("[]")
    assert list(open_webperson(listed)) == []


def test_gadms_json_parser_across_chunk_boundaries(tmp_path, monkeypatch):
    json_file = build_gadms_json(tmp_path / "gadms", count=7)
    expected = list(json.loads(json_file.read_text()).items())
    for chunk in (1, 2, 3, 7, 64):
        monkeypatch.setattr(json_stream, "_CHUNK_CHARS", chunk)
        got = [(r.image_path, {"caption1": r.caption1, "caption2": r.caption2}) for r in JsonWebPerson(json_file)]
        assert got == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a.jpg": {"caption1": "x", "caption2": "y"}, "b.jpg": {"caption1": "z"}}', r"entry 1 \('b.jpg'\) has no 'caption2'"),
        ('{"../a.jpg": {"caption1": "x", "caption2": "y"}}', r"entry 0 image path '../a.jpg' goes up"),
        ('{"a.jpg": {"caption1": "x", "caption2": "y"}, "b.jpg": {"capt', r"invalid JSON at entry 1"),
        ('[{"a.jpg": 1}]', r"entry 0 \('a.jpg'\) is not an object with caption1/caption2"),
        ('[{"a.jpg": {"caption1": "x", "caption2": "y"}}, 3]', r"list element 1 is a JSON int, not an object"),
        ('"a.jpg"', r"invalid JSON at the start"),
    ],
)
def test_gadms_json_bad_entries(tmp_path, text, message):
    (tmp_path / "images").mkdir()
    (tmp_path / "ann.json").write_text(text)
    with pytest.raises(GadmsError, match=message):
        list(open_webperson(tmp_path / "ann.json"))


def test_folder_without_webperson_data_lists_what_was_looked_for(tmp_path):
    with pytest.raises(GadmsError, match=r"looked for data/\*.parquet, \*.parquet and a GA-DMS \*.json"):
        open_webperson(tmp_path)


def test_hub_source_streams_through_datasets(tmp_path, monkeypatch):
    """The Hub path for real, with ``datasets`` streaming the same parquet from disk instead of the network."""
    import datasets

    root = build_webperson(tmp_path / "WebPerson")
    real_load_dataset = datasets.load_dataset
    calls = []

    def load_from_disk_instead(path, split=None, streaming=False, **kwargs):
        calls.append((path, split, streaming))
        return real_load_dataset("parquet", data_files=sorted(map(str, (root / "data").glob("*.parquet"))),
                                 split=split, streaming=streaming)

    monkeypatch.setattr(webperson, "_hub_offline_reason", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", load_from_disk_instead)
    source = open_webperson("someone/WebPerson-1M")
    assert isinstance(source, webperson.HubWebPerson) and calls == [("someone/WebPerson-1M", "train", True)]
    local = {r.identity: r for r in open_webperson(root)}
    streamed = list(source)
    assert [r.identity for r in streamed] == list(range(8))
    for record in streamed:
        twin = local[record.identity]
        assert (record.image_path, record.caption1, record.caption2, record.image_bytes) == (
            twin.image_path, twin.caption1, twin.caption2, twin.image_bytes)
    # two shards (one file each): identities unique across shards, all rows covered once
    parts = [[(r.identity, r.image_path) for r in source.shard(2, i)] for i in range(2)]
    identities = [identity for part in parts for identity, _ in part]
    assert len(set(identities)) == 8 and all(identity % 2 == i for i, part in enumerate(parts) for identity, _ in part)
    assert sorted(path for part in parts for _, path in part) == sorted(r.image_path for r in local.values())
