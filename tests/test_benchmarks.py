"""Benchmark readers on tiny CUHK-PEDES / ICFG-PEDES / RSTPReid folders written by hand here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from gadms_cli.data.benchmark_files import BENCHMARK_DIRS, detect_format, resolve_benchmark
from gadms_cli.data.benchmarks import load_benchmark
from gadms_cli.errors import GadmsError


def write_image(path: Path, colour: tuple[int, int, int] = (200, 30, 30)) -> None:
    """A real 8x4 image file (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), colour).save(path)


def write_benchmark(root: Path, annotation_name: str, records: list[dict], image_key: str) -> Path:
    """The annotation JSON list plus every image it names under imgs/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / annotation_name).write_text(json.dumps(records))
    for record in records:
        write_image(root / "imgs" / record[image_key])
    return root


# CUHK-PEDES: ids start at 1 and (here) are not contiguous; train ids 3, 5, 12.
CUHK_RECORDS = [
    {"split": "train", "captions": ["a man in a red coat", "red coat man"], "file_path": "CUHK01/0005001.png",
     "processed_tokens": [["a", "man"], ["red"]], "id": 5},
    {"split": "train", "captions": ["the same man walking"], "file_path": "CUHK01/0005002.png", "id": 5},
    {"split": "train", "captions": ["woman with a bag", "a woman carries a black bag today"],
     "file_path": "train_query/p12_s1.jpg", "id": 12},
    {"split": "train", "captions": ["child"], "file_path": "train_query/p3_s2.jpg", "id": 3},
    {"split": "val", "captions": ["val person one", "val person one again"], "file_path": "val/p40.jpg", "id": 40},
    {"split": "test", "captions": ["test a", "test b"], "file_path": "test_query/p100_s1.jpg", "id": 100},
    {"split": "test", "captions": ["test c"], "file_path": "test_query/p100_s2.jpg", "id": 100},
    {"split": "test", "captions": ["test d", "test e"], "file_path": "test_query/p101_s1.jpg", "id": 101},
]

# ICFG-PEDES: ids start at 0, one caption per image, train/test only.
ICFG_RECORDS = [
    {"split": "train", "captions": ["a man in grey"], "file_path": "train/0000/0000_c1_001.jpg", "id": 0},
    {"split": "train", "captions": ["a man in grey again"], "file_path": "train/0000/0000_c2_002.jpg", "id": 0},
    {"split": "train", "captions": ["a woman in blue"], "file_path": "train/0002/0002_c1_001.jpg", "id": 2},
    {"split": "test", "captions": ["test one"], "file_path": "test/0001/0001_c1_001.jpg", "id": 1},
    {"split": "test", "captions": ["test two"], "file_path": "test/0007/0007_c3_004.jpg", "id": 7},
]

# RSTPReid: img_path flat in imgs/, two captions per image.
RSTP_RECORDS = [
    {"id": 0, "img_path": "0000_c14_0031.jpg", "captions": ["man a one", "man a two"], "split": "train"},
    {"id": 0, "img_path": "0000_c1_0002.jpg", "captions": ["man a three", "man a four"], "split": "train"},
    {"id": 4, "img_path": "0004_c2_0001.jpg", "captions": ["man b one", "man b two"], "split": "train"},
    {"id": 9, "img_path": "0009_c1_0001.jpg", "captions": ["val one", "val two"], "split": "val"},
    {"id": 20, "img_path": "0020_c1_0001.jpg", "captions": ["test one", "test two"], "split": "test"},
    {"id": 21, "img_path": "0021_c5_0003.jpg", "captions": ["test three", "test four"], "split": "test"},
]


def build_cuhk(root: Path, records: list[dict] | None = None) -> Path:
    return write_benchmark(root, "reid_raw.json", CUHK_RECORDS if records is None else records, "file_path")


def build_icfg(root: Path, name: str = "ICFG-PEDES.json") -> Path:
    return write_benchmark(root, name, ICFG_RECORDS, "file_path")


def build_rstp(root: Path, records: list[dict] | None = None) -> Path:
    return write_benchmark(root, "data_captions.json", RSTP_RECORDS if records is None else records, "img_path")


# --- reading the three formats ------------------------------------------------------


def test_cuhk_pedes_counts_remapping_and_eval_split(tmp_path):
    root = build_cuhk(tmp_path / "CUHK-PEDES")
    bench = load_benchmark(root)
    assert bench.format == "cuhk-pedes" and detect_format(root) == "cuhk-pedes"
    assert bench.split_names == ["train", "val", "test"]
    assert bench.problems == []

    samples = bench.train_samples()
    # one per caption: 2 + 1 + 2 + 1; raw ids 3, 5, 12 -> 0, 1, 2 in sorted raw order
    assert [(s.raw_pid, s.pid, s.image_index) for s in samples] == [
        (5, 1, 0), (5, 1, 0), (5, 1, 1), (12, 2, 2), (12, 2, 2), (3, 0, 3)
    ]
    assert samples[3].caption == "woman with a bag"
    assert samples[0].image_path == root / "imgs" / "CUHK01" / "0005001.png"
    assert bench.num_train_ids == 3

    test = bench.eval_split("test")
    assert test.queries == ["test a", "test b", "test c", "test d", "test e"]
    assert test.query_ids == [100, 100, 100, 101, 101]
    assert test.query_image_index == [0, 0, 1, 2, 2]
    assert test.gallery_ids == [100, 100, 101]
    assert test.gallery_paths[2] == root / "imgs" / "test_query" / "p101_s1.jpg"
    assert test.num_ids == 2

    stats = bench.stats()
    assert stats["train"] == {"ids": 3, "images": 4, "captions": 6,
                              "caption_words": {"mean": round((6 + 3 + 4 + 4 + 7 + 1) / 6, 2), "min": 1, "max": 7}}
    assert stats["val"]["images"] == 1 and stats["val"]["captions"] == 2
    assert stats["test"]["ids"] == 2


@pytest.mark.parametrize("name", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfg_pedes_both_file_names(tmp_path, name):
    root = build_icfg(tmp_path / "ICFG-PEDES", name)
    bench = load_benchmark(root)
    assert bench.format == "icfg-pedes"
    assert bench.split_names == ["train", "test"]
    samples = bench.train_samples()
    assert [(s.raw_pid, s.pid) for s in samples] == [(0, 0), (0, 0), (2, 1)]
    assert bench.num_train_ids == 2
    test = bench.eval_split("test")
    assert test.query_ids == [1, 7] and test.gallery_ids == [1, 7] and test.query_image_index == [0, 1]
    with pytest.raises(GadmsError, match=r"no 'val' split \(splits here: train, test\)"):
        bench.eval_split("val")


def test_rstpreid_reads_img_path_and_two_captions(tmp_path):
    root = build_rstp(tmp_path / "RSTPReid")
    bench = load_benchmark(root)
    assert bench.format == "rstpreid"
    assert bench.split_names == ["train", "val", "test"]
    samples = bench.train_samples()
    assert len(samples) == 6
    assert [s.pid for s in samples] == [0, 0, 0, 0, 1, 1]
    assert samples[4].image_path == root / "imgs" / "0004_c2_0001.jpg"
    val = bench.eval_split("val")
    assert val.queries == ["val one", "val two"] and val.query_ids == [9, 9] and val.gallery_ids == [9]
    assert bench.problems == []


def test_remapping_is_deterministic_and_independent_of_record_order(tmp_path):
    a = load_benchmark(build_cuhk(tmp_path / "a"))
    b = load_benchmark(build_cuhk(tmp_path / "b", list(reversed(CUHK_RECORDS))))
    pid_a = {s.raw_pid: s.pid for s in a.train_samples()}
    pid_b = {s.raw_pid: s.pid for s in b.train_samples()}
    assert pid_a == pid_b == {3: 0, 5: 1, 12: 2}


def test_annotation_pass_alone_needs_no_images(tmp_path):
    root = tmp_path / "CUHK-PEDES"
    root.mkdir()
    (root / "reid_raw.json").write_text(json.dumps(CUHK_RECORDS))
    bench = load_benchmark(root, check_images=False)
    assert bench.stats()["train"]["captions"] == 6
    with pytest.raises(GadmsError, match=r"imgs: no image folder"):
        load_benchmark(root)


# --- bad input ----------------------------------------------------------------------


def test_caption_all_without_reid_raw_says_what_it_is(tmp_path):
    root = tmp_path / "CUHK-PEDES"
    root.mkdir()
    (root / "caption_all.json").write_text(json.dumps([{"captions": ["x"], "file_path": "a.jpg", "id": 1}]))
    with pytest.raises(GadmsError) as info:
        load_benchmark(root)
    message = str(info.value)
    assert "caption_all.json" in message and "without train/val/test splits" in message
    assert "reid_raw.json" in message
    assert "github.com/ShuangLI59/Person-Search-with-Natural-Language-Description" in message


def test_no_annotation_file_lists_what_was_looked_for(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(GadmsError) as info:
        detect_format(tmp_path)
    message = str(info.value)
    for name in ("reid_raw.json", "ICFG-PEDES.json", "ICFG_PEDES.json", "data_captions.json"):
        assert name in message


def test_no_annotation_file_points_to_a_nested_benchmark_folder(tmp_path):
    build_rstp(tmp_path / "RSTPReid")
    with pytest.raises(GadmsError, match=r"did you mean .*RSTPReid\?"):
        load_benchmark(tmp_path)


def test_invalid_json_names_file_and_position(tmp_path):
    root = tmp_path / "RSTPReid"
    root.mkdir()
    (root / "data_captions.json").write_text('[{"id": 0, "img_path": "a.jpg",\n "captions": ["x", "y"] "split": "train"}]')
    with pytest.raises(GadmsError) as info:
        load_benchmark(root)
    message = str(info.value)
    assert str(root / "data_captions.json") in message and "invalid JSON at line 2" in message


def test_missing_key_names_file_record_and_key(tmp_path):
    records = [dict(r) for r in ICFG_RECORDS]
    del records[2]["file_path"]
    root = tmp_path / "ICFG-PEDES"
    root.mkdir()
    (root / "ICFG-PEDES.json").write_text(json.dumps(records))
    with pytest.raises(GadmsError) as info:
        load_benchmark(root, check_images=False)
    message = str(info.value)
    assert "ICFG-PEDES.json" in message and "record 2" in message and "'file_path'" in message


def test_wrong_key_type_names_record_and_key(tmp_path):
    records = [dict(r) for r in RSTP_RECORDS]
    records[1]["id"] = "zero"
    build_rstp(tmp_path / "R", records)
    with pytest.raises(GadmsError, match=r"record 1 key 'id' is 'zero', not an integer"):
        load_benchmark(tmp_path / "R")


@pytest.mark.parametrize("bad_path", ["../outside.jpg", "imgs/../../outside.jpg", "/etc/passwd", "C:\\x.jpg"])
def test_paths_leaving_the_dataset_folder_are_rejected(tmp_path, bad_path):
    records = [dict(r) for r in RSTP_RECORDS]
    records[3]["img_path"] = bad_path
    root = tmp_path / "RSTPReid"
    root.mkdir()
    (root / "data_captions.json").write_text(json.dumps(records))
    with pytest.raises(GadmsError) as info:
        load_benchmark(root, check_images=False)
    message = str(info.value)
    assert "record 3" in message and "must stay inside" in message and repr(bad_path) in message


def test_missing_and_unreadable_images_fail_with_a_count_then_skip_on_request(tmp_path):
    root = build_cuhk(tmp_path / "CUHK-PEDES")
    (root / "imgs" / "CUHK01" / "0005002.png").unlink()
    (root / "imgs" / "test_query" / "p101_s1.jpg").write_bytes(b"<html>404 not found</html>")
    with pytest.raises(GadmsError) as info:
        load_benchmark(root)
    message = str(info.value)
    assert "2 of 8 images are missing or unreadable" in message
    assert "CUHK01/0005002.png (missing)" in message
    assert "test_query/p101_s1.jpg (not an image file)" in message
    assert "--skip-missing" in message

    bench = load_benchmark(root, skip_missing=True)
    assert sorted(p.name for p in bench.skipped_images) == ["0005002.png", "p101_s1.jpg"]
    assert any("skipped 2 of 8 images" in problem for problem in bench.problems)
    # the skipped images leave with their captions; image indices stay consistent
    samples = bench.train_samples()
    assert [(s.raw_pid, s.image_index) for s in samples] == [(5, 0), (5, 0), (12, 1), (12, 1), (3, 2)]
    test = bench.eval_split("test")
    assert test.gallery_ids == [100, 100] and test.queries == ["test a", "test b", "test c"]


def test_empty_image_file_counts_as_unreadable(tmp_path):
    root = build_rstp(tmp_path / "RSTPReid")
    (root / "imgs" / "0009_c1_0001.jpg").write_bytes(b"")
    with pytest.raises(GadmsError, match=r"1 of 6 images .*0009_c1_0001.jpg \(empty file\)"):
        load_benchmark(root)


def test_rstpreid_non_ascii_and_duplicate_captions_are_warnings(tmp_path):
    records = [dict(r) for r in RSTP_RECORDS]
    records[0] = {**records[0], "captions": ["a man in a caf\u00e9 jacket", "man a two"]}
    records[2] = {**records[2], "captions": ["same words", "same words"]}
    records[4] = {**records[4], "captions": ["test one", "man a two"]}  # not a duplicate: other split
    records[5] = {**records[5], "captions": ["test one", "test four"]}  # duplicates record 4's caption
    bench = load_benchmark(build_rstp(tmp_path / "RSTPReid", records))
    problems = " | ".join(bench.problems)
    assert "1 captions contain non-ASCII characters (records 0)" in problems
    assert "1 records list the same caption twice (records 2)" in problems
    assert "1 captions repeat the caption of another image of the same split (records 5)" in problems
    # kept as is: every caption is still a sample / query
    assert len(bench.train_samples()) == 6
    assert bench.eval_split("test").queries == ["test one", "man a two", "test one", "test four"]


def test_repeated_image_record_merges_captions_and_conflicting_ids_fail(tmp_path):
    records = [dict(r) for r in ICFG_RECORDS] + [
        {"split": "train", "captions": ["extra caption"], "file_path": "train/0002/0002_c1_001.jpg", "id": 2}
    ]
    bench = load_benchmark(write_benchmark(tmp_path / "a", "ICFG-PEDES.json", records, "file_path"))
    assert [s.caption for s in bench.train_samples() if s.raw_pid == 2] == ["a woman in blue", "extra caption"]
    assert "records 5" in bench.problems[0]

    records[-1] = {**records[-1], "id": 3}
    with pytest.raises(GadmsError, match=r"records 2 and 5 give image 'train/0002/0002_c1_001.jpg' two ids"):
        load_benchmark(write_benchmark(tmp_path / "b", "ICFG-PEDES.json", records, "file_path"))


# --- finding a benchmark by name ----------------------------------------------------


def test_resolve_benchmark_by_name_argument_env_and_default(tmp_path, monkeypatch):
    data_root = tmp_path / "datasets"
    build_rstp(data_root / "RSTPReid")
    assert resolve_benchmark("rstpreid", data_root) == data_root / "RSTPReid"

    monkeypatch.setenv("GADMS_DATA", str(data_root))
    assert resolve_benchmark("RSTPReid", None) == data_root / "RSTPReid"

    monkeypatch.delenv("GADMS_DATA")
    monkeypatch.chdir(tmp_path)
    build_icfg(tmp_path / "data" / "ICFG-PEDES" / "ICFG-PEDES")  # archive unpacked one level deeper
    assert resolve_benchmark("icfg-pedes", None) == Path("data") / "ICFG-PEDES" / "ICFG-PEDES"

    assert resolve_benchmark(str(data_root / "RSTPReid"), None) == data_root / "RSTPReid"


@pytest.mark.parametrize(
    "name, url",
    [
        ("cuhk-pedes", "github.com/ShuangLI59/Person-Search-with-Natural-Language-Description"),
        ("icfg-pedes", "github.com/zifyloo/SSAN"),
        ("rstpreid", "github.com/NjtechCVLab/RSTPReid-Dataset"),
    ],
)
def test_resolve_benchmark_not_found_says_where_it_looked_and_where_to_get_it(tmp_path, name, url):
    with pytest.raises(GadmsError) as info:
        resolve_benchmark(name, tmp_path)
    message = str(info.value)
    assert str(tmp_path / BENCHMARK_DIRS[name]) in message and url in message and "--data-root" in message


def test_resolve_benchmark_rejects_unknown_names(tmp_path):
    with pytest.raises(GadmsError, match=r"not a benchmark name \(cuhk-pedes, icfg-pedes, rstpreid\)"):
        resolve_benchmark(str(tmp_path / "nope"), None)
