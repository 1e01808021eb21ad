"""``gadms data inspect`` and ``inspect_dataset`` on hand-built folders; bad input gives one line, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gadms_cli.commands.data import app as data_app
from gadms_cli.data.inspect import inspect_dataset
from test_benchmarks import CUHK_RECORDS, ICFG_RECORDS, RSTP_RECORDS, build_cuhk, build_icfg, build_rstp
from test_webperson import build_gadms_json, build_webperson

REPO = Path(__file__).resolve().parent.parent

# The data sub-app mounted the way gadms_cli/cli.py mounts it, without importing other commands.
gadms = typer.Typer()
gadms.add_typer(data_app, name="data")


def run(*args: str):
    return CliRunner().invoke(gadms, ["data", "inspect", *map(str, args)])


def words(*captions: str) -> dict:
    counts = [len(c.split()) for c in captions]
    return {"mean": round(sum(counts) / len(counts), 2), "min": min(counts), "max": max(counts)}


def expected_split(records: list[dict], split: str) -> dict:
    """Brute-force counts of one split straight from the records."""
    chosen = [r for r in records if r["split"] == split]
    captions = [c for r in chosen for c in r["captions"]]
    return {"ids": len({r["id"] for r in chosen}), "images": len(chosen), "captions": len(captions),
            "caption_words": words(*captions)}


@pytest.mark.parametrize(
    "build, records, fmt, splits",
    [
        (build_cuhk, CUHK_RECORDS, "cuhk-pedes", ["train", "val", "test"]),
        (build_icfg, ICFG_RECORDS, "icfg-pedes", ["train", "test"]),
        (build_rstp, RSTP_RECORDS, "rstpreid", ["train", "val", "test"]),
    ],
)
def test_inspect_json_for_each_benchmark(tmp_path, build, records, fmt, splits):
    root = build(tmp_path / "bench")
    result = run(root, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert report == {
        "format": fmt,
        "root": str(root),
        "splits": {split: expected_split(records, split) for split in splits},
        "problems": [],
    }


def test_inspect_webperson_parquet_counts_rows_and_caption_words(tmp_path):
    root = build_webperson(tmp_path / "WebPerson")
    report = inspect_dataset(root)
    captions = [f"person {i} wears a {'red ' * (i % 3)}coat" for i in range(8)] + [f"second caption of {i}" for i in range(8)]
    assert report == {
        "format": "webperson-parquet",
        "root": str(root),
        "splits": {"train": {"ids": 8, "images": 8, "captions": 16, "caption_words": words(*captions)}},
        "problems": [],
    }


def test_inspect_webperson_parquet_reports_empty_captions(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.array([{"bytes": b"\xff\xd8\xff", "path": None}] * 3, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    table = pa.table({"image": image, "image_path": ["a", "b", "c"], "caption1": ["one two", "", None],
                      "caption2": ["  three  ", "four five six", "x"]})
    pq.write_table(table, tmp_path / "part.parquet")
    report = inspect_dataset(tmp_path / "part.parquet")
    assert report["splits"]["train"] == {"ids": 3, "images": 3, "captions": 4,
                                         "caption_words": {"mean": 1.75, "min": 1, "max": 3}}
    assert report["problems"] == ["train: 2 captions are empty or null"]


def test_inspect_gadms_json_and_skip_missing(tmp_path):
    build_gadms_json(tmp_path / "gadms")
    expected_words = words(*[f"first caption {i}" for i in range(5)], *[f"second caption {i} \u00e9" for i in range(5)])
    report = inspect_dataset(tmp_path / "gadms")
    assert report["format"] == "webperson-json"
    assert report["splits"] == {"train": {"ids": 5, "images": 5, "captions": 10, "caption_words": expected_words}}

    (tmp_path / "gadms" / "images" / "part0" / "0002.jpg").unlink()
    result = run(tmp_path / "gadms")
    assert result.exit_code == 1
    assert "1 of 5 images are missing or unreadable" in result.stderr and "part0/0002.jpg (missing)" in result.stderr
    report = json.loads(run(tmp_path / "gadms", "--json", "--skip-missing").stdout)
    assert report["splits"]["train"]["images"] == 4 and report["problems"][0].startswith("skipped 1 of 5 images")


def test_inspect_table_output(tmp_path):
    result = run(build_rstp(tmp_path / "RSTPReid"))
    assert result.exit_code == 0
    out = result.stdout
    assert "rstpreid" in out and "no problems found" in out
    for split in ("train", "val", "test"):
        assert split in out


def test_skip_missing_through_the_cli(tmp_path):
    root = build_cuhk(tmp_path / "CUHK-PEDES")
    (root / "imgs" / "val" / "p40.jpg").unlink()
    result = run(root, "--json", "--skip-missing")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert "val" not in report["splits"] or report["splits"]["val"]["images"] == 0
    assert report["splits"]["train"]["images"] == 4
    assert "val/p40.jpg (missing)" in report["problems"][0]


# --- every bad input: exit 1, one line on stderr, no traceback ----------------------


def bad_caption_all(root: Path) -> str:
    root.mkdir()
    (root / "caption_all.json").write_text("[]")
    return "original CUHK-PEDES release without train/val/test splits"


def bad_no_annotation(root: Path) -> str:
    (root / "imgs").mkdir(parents=True)
    return "data_captions.json (RSTPReid)"


def bad_invalid_json(root: Path) -> str:
    root.mkdir()
    (root / "reid_raw.json").write_text("[{]")
    return "reid_raw.json: invalid JSON at line 1"


def bad_missing_key(root: Path) -> str:
    root.mkdir()
    (root / "data_captions.json").write_text(json.dumps([{"id": 1, "img_path": "a.jpg", "split": "train"}]))
    return "record 0 has no 'captions' key"


def bad_escaping_path(root: Path) -> str:
    root.mkdir()
    (root / "ICFG_PEDES.json").write_text(json.dumps([{"id": 1, "file_path": "/etc/hosts", "split": "train", "captions": ["x"]}]))
    return "'/etc/hosts' is absolute"


def bad_missing_image(root: Path) -> str:
    build_icfg(root)
    (root / "imgs" / "test" / "0001" / "0001_c1_001.jpg").unlink()
    return "1 of 5 images are missing or unreadable"


def bad_unreadable_image(root: Path) -> str:
    build_rstp(root)
    (root / "imgs" / "0004_c2_0001.jpg").write_bytes(b"GIF? no")
    return "0004_c2_0001.jpg (not an image file)"


def bad_parquet_columns(root: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "data").mkdir(parents=True)
    pq.write_table(pa.table({"jpg": [b"x"], "caption": ["y"]}), root / "data" / "train-00000-of-00001.parquet")
    return "missing column(s) image, caption1, caption2"


BAD_INPUTS = [bad_caption_all, bad_no_annotation, bad_invalid_json, bad_missing_key, bad_escaping_path,
              bad_missing_image, bad_unreadable_image, bad_parquet_columns]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_is_one_line_and_exit_1(tmp_path, make_bad):
    root = tmp_path / "dataset"
    expected = make_bad(root)
    result = run(root, "--json")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.output


def test_real_entry_point_in_a_subprocess(tmp_path):
    """``python -m gadms_cli data inspect`` through gadms_cli/cli.py: JSON on stdout; bad input one line."""
    root = build_rstp(tmp_path / "RSTPReid")
    env = {**os.environ, "COLUMNS": "60"}
    ok = subprocess.run([sys.executable, "-m", "gadms_cli", "data", "inspect", str(root), "--json"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["splits"]["test"] == expected_split(RSTP_RECORDS, "test")

    (root / "data_captions.json").write_text('[{"id": 0, "img_path": "../../x.jpg", "captions": ["a"], "split": "train"}]')
    bad = subprocess.run([sys.executable, "-m", "gadms_cli", "data", "inspect", str(root)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "goes up with '..'" in bad.stderr
    assert "Traceback" not in bad.stderr
