"""benchmarks/noise_kind_cost.py: the derived caption sets, checked against a hand-made noisy folder."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the script imports ablation.py from its own folder
spec = importlib.util.spec_from_file_location("noise_kind_cost", BENCHMARKS / "noise_kind_cost.py")
noise_kind_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(noise_kind_cost)


def _caption(text: str, clean: str, kinds: list[str]) -> dict:
    return {"style": "full", "corrupted": bool(kinds), "kinds": kinds, "edits": [{"kind": k} for k in kinds], "clean": clean}


# Image a (train): one wrong-colour caption, one clean. Image b (train): a colour + dropped-words caption
# and an irrelevant-phrase caption. Image c (test): its captions never change.
RAW = [
    {"split": "train", "id": 1, "file_path": "train/a.jpg", "captions": ["A man in a blue coat.", "A man in a red coat."]},
    {"split": "train", "id": 2, "file_path": "train/b.jpg", "captions": ["woman green dress.", "A woman in a red dress. Free shipping."]},
    {"split": "test", "id": 3, "file_path": "test/c.jpg", "captions": ["A man in black.", "A man wearing black."]},
]
RECORDS = [
    {"file_path": "train/a.jpg", "split": "train", "captions": [
        _caption("A man in a blue coat.", "A man in a red coat.", ["wrong_colour"]),
        _caption("A man in a red coat.", "A man in a red coat.", [])]},
    {"file_path": "train/b.jpg", "split": "train", "captions": [
        _caption("woman green dress.", "A woman in a red dress.", ["wrong_colour", "dropped_words"]),
        _caption("A woman in a red dress. Free shipping.", "A woman in a red dress.", ["irrelevant_phrase"])]},
    {"file_path": "test/c.jpg", "split": "test", "captions": [_caption("A man in black.", "A man in black.", []),
                                                               _caption("A man wearing black.", "A man wearing black.", [])]},
]


def _texts(raw: list[dict]) -> dict[str, list[str]]:
    return {entry["file_path"]: entry["captions"] for entry in raw}


def test_keep_one_kind_puts_every_other_corrupted_caption_back():
    raw, records = noise_kind_cost.derive_captions(RAW, RECORDS, "keep-wrong_colour")
    assert _texts(raw) == {
        "train/a.jpg": ["A man in a blue coat.", "A man in a red coat."],
        "train/b.jpg": ["woman green dress.", "A woman in a red dress."],  # the phrase caption is clean again
        "test/c.jpg": ["A man in black.", "A man wearing black."],
    }
    assert [c["corrupted"] for r in records for c in r["captions"]] == [True, False, True, False, False, False]

    raw, _ = noise_kind_cost.derive_captions(RAW, RECORDS, "keep-irrelevant_phrase")
    assert _texts(raw)["train/a.jpg"] == ["A man in a red coat.", "A man in a red coat."]
    assert _texts(raw)["train/b.jpg"] == ["A woman in a red dress.", "A woman in a red dress. Free shipping."]


def test_drop_corrupted_leaves_out_captions_and_emptied_images():
    records = json.loads(json.dumps(RECORDS))
    records[1]["captions"][1] = _caption("x", "A woman in a red dress.", ["irrelevant_phrase"])
    raw_in = json.loads(json.dumps(RAW))
    raw_in[1]["captions"][1] = "x"
    raw, out_records = noise_kind_cost.derive_captions(raw_in, records, "drop-corrupted")
    assert _texts(raw) == {"train/a.jpg": ["A man in a red coat."], "test/c.jpg": ["A man in black.", "A man wearing black."]}
    assert [len(r["captions"]) for r in out_records] == [1, 2]


def test_mismatched_files_and_unknown_variants_are_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        noise_kind_cost.derive_captions(RAW, RECORDS, "keep-everything")
    with pytest.raises(ValueError, match="disagree"):
        noise_kind_cost.derive_captions(RAW, list(reversed(RECORDS)), "drop-corrupted")


def test_clean_puts_every_train_caption_back():
    raw, records = noise_kind_cost.derive_captions(RAW, RECORDS, "clean")
    assert _texts(raw) == {
        "train/a.jpg": ["A man in a red coat.", "A man in a red coat."],
        "train/b.jpg": ["A woman in a red dress.", "A woman in a red dress."],
        "test/c.jpg": ["A man in black.", "A man wearing black."],
    }
    assert not any(c["corrupted"] for r in records for c in r["captions"])


def test_table_means_and_differences_against_clean_by_hand():
    def runs(selected, last):
        return [{"test": {"R1": s}, "test_last": {"R1": t}} for s, t in zip(selected, last)]

    summary = {
        "clean": {"captions": 8, "corrupted": 0, "runs": runs([66.0, 68.0], [67.0, 67.0])},
        "noisy": {"captions": 8, "corrupted": 3, "runs": runs([63.0, 64.0], [64.0, 63.0])},
    }
    lines = noise_kind_cost.table(summary)
    # clean: mean 67, sample std sqrt(2) = 1.41; noisy: 63.5 ± 0.71, -3.50 against 67; last 63.5 - 67 = -3.50
    assert lines[2] == "| clean | 8 (0) | 2 | 67.00 ± 1.41 |  | 67.00 ± 0.00 |  |"
    assert lines[3] == "| noisy | 8 (3) | 2 | 63.50 ± 0.71 | -3.50 | 63.50 ± 0.71 | -3.50 |"


def test_delete_wrong_removes_wrong_words_and_phrases_by_hand():
    assert noise_kind_cost.delete_written_wrong("A man in a blue coat.", "A man in a red coat.") == "A man in a coat."
    assert noise_kind_cost.delete_written_wrong("A woman in a red dress. Free shipping.", "A woman in a red dress.") \
        == "A woman in a red dress."
    # dropped words stay dropped, the wrong colour goes: clean "A woman in a red dress." -> "woman green dress."
    assert noise_kind_cost.delete_written_wrong("woman green dress.", "A woman in a red dress.") == "woman dress."
    raw, _ = noise_kind_cost.derive_captions(RAW, RECORDS, "delete-wrong")
    assert _texts(raw)["train/a.jpg"] == ["A man in a coat.", "A man in a red coat."]
