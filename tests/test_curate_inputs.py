"""Input sources (image folder, webdataset tar, img2dataset parquet, WebPerson parquet) and units."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from gadms_cli.curate.inputs import ImageFolderSource, ParquetSource, TarSource, plan_units, resolve_inputs
from gadms_cli.errors import GadmsError


def jpeg(colour: tuple[int, int, int], size=(20, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def write_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_image_folder_with_sidecars(tmp_path):
    root = tmp_path / "photos"
    (root / "b").mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg((255, 0, 0)))
    (root / "a.txt").write_text("a red square\n")
    (root / "b" / "c.PNG").write_bytes(jpeg((0, 255, 0)))
    (root / "b" / "c.json").write_text(json.dumps({"url": "http://example.com/c.png"}))
    (root / "notes.md").write_text("not an image")
    (root / ".hidden.jpg").write_bytes(jpeg((0, 0, 255)))
    [source] = resolve_inputs([str(root)])
    assert isinstance(source, ImageFolderSource) and source.label == "photos"
    assert source.files == ["a.jpg", "b/c.PNG"]
    items = list(source.read(0, None))
    assert [(i.key, i.position, i.text, i.url) for i in items] == [
        ("a", 0, "a red square", None),
        ("b/c", 1, None, "http://example.com/c.png"),
    ]
    assert items[0].read_bytes() == (root / "a.jpg").read_bytes()
    assert [i.key for i in source.read(1, 2)] == ["b/c"]


def test_webdataset_tar_groups_members_by_key(tmp_path):
    shard = tmp_path / "shards" / "00000.tar"
    shard.parent.mkdir()
    red, green = jpeg((255, 0, 0)), jpeg((0, 255, 0))
    write_tar(
        shard,
        [
            ("000000000.jpg", red),
            ("000000000.txt", b"a red thing"),
            ("000000000.json", json.dumps({"url": "http://x/0.jpg", "key": "000000000"}).encode()),
            ("000000001.json", json.dumps({"status": "failed_to_download"}).encode()),  # no image: skipped
            ("000000002.jpg", green),
            ("000000002.txt", "caf\u00e9 photo".encode()),
        ],
    )
    [source] = resolve_inputs([str(shard.parent)])
    assert isinstance(source, TarSource) and source.label == "shards/00000.tar"
    assert source.num_items() is None
    items = list(source.read(0, None))
    assert [(i.key, i.position, i.text, i.url) for i in items] == [
        ("000000000", 0, "a red thing", "http://x/0.jpg"),
        ("000000002", 1, "caf\u00e9 photo", None),
    ]
    assert items[0].image_bytes == red and items[1].image_bytes == green
    assert [i.key for i in source.read(1, None)] == ["000000002"]
    assert [i.key for i in source.read(0, 1)] == ["000000000"]


def test_img2dataset_and_webperson_parquet(tmp_path):
    pixels = [jpeg((10 * i, 0, 0)) for i in range(5)]
    img2dataset = pa.table(
        {
            "key": [f"0000{i}" for i in range(5)],
            "caption": [f"caption {i}" for i in range(5)],
            "url": [f"http://x/{i}" for i in range(5)],
            "jpg": pa.array(pixels, pa.binary()),
        }
    )
    pq.write_table(img2dataset, tmp_path / "00000.parquet", row_group_size=2)
    source = ParquetSource(tmp_path / "00000.parquet", "00000.parquet")
    assert source.kind == "img2dataset-parquet" and source.num_items() == 5
    items = list(source.read(1, 4))  # crosses row groups [0,1] [2,3] [4]
    assert [(i.key, i.position, i.text, i.url) for i in items] == [
        ("00001", 1, "caption 1", "http://x/1"),
        ("00002", 2, "caption 2", "http://x/2"),
        ("00003", 3, "caption 3", "http://x/3"),
    ]
    assert [i.image_bytes for i in items] == pixels[1:4]

    from gadms_cli.data.synth.writer import write_webperson_shard

    shard = tmp_path / "wp" / "data" / "train-00000-of-00001.parquet"
    write_webperson_shard(shard, [(pixels[i], f"img/{i}.jpg", f"first {i}", f"second {i}") for i in range(3)])
    [webperson] = resolve_inputs([str(tmp_path / "wp")])
    assert webperson.kind == "webperson-parquet" and webperson.label == "wp/data/train-00000-of-00001.parquet"
    items = list(webperson.read(0, None))
    assert [(i.key, i.text, i.image_bytes) for i in items] == [(f"{i:09d}", f"first {i}", pixels[i]) for i in range(3)]


def test_units_follow_input_order_and_shard_size(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.jpg").write_bytes(jpeg((i, i, i)))
    write_tar(tmp_path / "a.tar", [("k.jpg", jpeg((1, 2, 3)))])
    sources = resolve_inputs([str(tmp_path / "a.tar"), str(folder), str(folder)])
    assert [s.label for s in sources] == ["a.tar", "imgs", "imgs~2"]  # labels stay unique
    units = plan_units(sources, shard_size=2)
    assert [(u.index, u.source.label, u.start, u.stop) for u in units] == [
        (0, "a.tar", 0, None),
        (1, "imgs", 0, 2),
        (2, "imgs", 2, 4),
        (3, "imgs", 4, 5),
        (4, "imgs~2", 0, 2),
        (5, "imgs~2", 2, 4),
        (6, "imgs~2", 4, 5),
    ]
    with pytest.raises(GadmsError, match="--shard-size"):
        plan_units(sources, 0)


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(GadmsError, match="no such file or folder"):
        resolve_inputs([str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(GadmsError, match="holds no .tar, no .parquet and no image files"):
        resolve_inputs([str(tmp_path / "empty")])
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(GadmsError, match="no image column"):
        resolve_inputs([str(tmp_path / "bad.parquet")])
    (tmp_path / "broken.tar").write_bytes(b"not a tar at all" * 10)
    with pytest.raises(GadmsError, match="not a readable tar"):
        list(TarSource(tmp_path / "broken.tar", "broken.tar").read(0, None))
    with pytest.raises(GadmsError, match="no file matches"):
        resolve_inputs([str(tmp_path / "*.nothing")])
