"""SketchPedes generator and `gadms synth`: formats, determinism, noise, and pixels vs caption words.

Expectations are written independently of the generator: the colour-word and
garment-noun lists and the RGB prototypes of the colours below are this
file's own, so a generator that drew "red" where the caption says "blue"
(or mixed up garments) fails here.
"""

from __future__ import annotations

import collections
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gadms_cli.cli import app
from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
from gadms_cli.errors import GadmsError

# The test's own idea of the colours (rough RGB prototypes) and the words for them.
COLOUR_PROTOTYPES = {
    "red": (200, 30, 30),
    "orange": (240, 130, 20),
    "yellow": (245, 220, 40),
    "green": (40, 140, 60),
    "blue": (40, 70, 200),
    "purple": (120, 50, 160),
    "pink": (240, 125, 180),
    "brown": (110, 70, 40),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
}
COLOUR_WORDS = {name: name for name in COLOUR_PROTOTYPES} | {"grey": "gray", "blond": "yellow", "blonde": "yellow"}
GARMENT_NOUNS = {
    "hair": "hair",
    "t-shirt": "top", "tee": "top", "shirt": "top", "top": "top", "sweater": "top", "jumper": "top",
    "pullover": "top", "jacket": "top", "coat": "top", "overcoat": "top", "dress": "top",
    "trousers": "bottom", "pants": "bottom", "slacks": "bottom", "jeans": "bottom", "shorts": "bottom", "skirt": "bottom",
    "shoes": "shoes", "sneakers": "shoes",
    "backpack": "bag", "rucksack": "bag", "handbag": "bag", "purse": "bag", "bag": "bag",
    "cap": "hat", "beanie": "hat", "hat": "hat",
}  # fmt: skip
SMALL = dict(train_ids=6, val_ids=2, test_ids=3, images_per_id=2, height=96, width=32)


def _load(out: Path) -> tuple[list[dict], list[dict]]:
    records = json.loads((out / "reid_raw.json").read_text())
    lines = [json.loads(line) for line in (out / "attributes.jsonl").read_text().splitlines()]
    return records, lines


def _pixel_colour(pixels: np.ndarray) -> str:
    """The most common nearest prototype colour among ``pixels`` [N, 3]."""
    names = list(COLOUR_PROTOTYPES)
    prototypes = np.array([COLOUR_PROTOTYPES[n] for n in names], dtype=np.float64)
    nearest = ((pixels[:, None, :].astype(np.float64) - prototypes[None]) ** 2).sum(-1).argmin(1)
    return names[np.bincount(nearest, minlength=len(names)).argmax()]


def _colour_claims(caption: str) -> list[tuple[str, str]]:
    """(slot, colour) pairs a caption states: a colour word at most two words before a garment noun."""
    words = [w.strip(".,!?:;") for w in caption.lower().split()]
    claims = []
    for i, word in enumerate(words):
        if word not in GARMENT_NOUNS:
            continue
        for back in (1, 2):
            if i - back >= 0 and words[i - back] in COLOUR_WORDS:
                claims.append((GARMENT_NOUNS[word], COLOUR_WORDS[words[i - back]]))
                break
    return claims


def test_counts_splits_ids_and_files(tmp_path):
    summary = generate_sketchpedes(tmp_path / "sp", SynthConfig(**SMALL))
    records, lines = _load(tmp_path / "sp")

    assert len(records) == len(lines) == (6 + 2 + 3) * 2 == summary.images
    per_split = collections.Counter(r["split"] for r in records)
    assert per_split == {"train": 12, "val": 4, "test": 6}
    ids = {split: {r["id"] for r in records if r["split"] == split} for split in ("train", "val", "test")}
    assert ids == {"train": set(range(1, 7)), "val": {7, 8}, "test": {9, 10, 11}}  # CUHK-PEDES: ids start at 1
    assert all(n == 2 for n in collections.Counter(r["id"] for r in records).values())
    for record, line in zip(records, lines):
        assert list(record) == ["split", "captions", "file_path", "id", "processed_tokens"]
        assert len(record["captions"]) == 2 and record["captions"][0] != record["captions"][1]
        expected_tokens = [[w.strip(".,") for w in c.lower().split()] for c in record["captions"]]
        assert record["processed_tokens"] == expected_tokens
        assert (line["file_path"], line["split"], line["id"]) == (record["file_path"], record["split"], record["id"])
        with Image.open(tmp_path / "sp" / "imgs" / record["file_path"]) as image:
            assert image.format == "JPEG" and image.size == (32, 96)
    assert summary.counts["val"] == {"ids": 2, "images": 4, "captions": 8}


def test_every_image_of_an_identity_has_the_same_attributes_and_identities_differ(tmp_path):
    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=40, val_ids=0, test_ids=0, images_per_id=3, height=96, width=32))
    _, lines = _load(tmp_path / "sp")
    by_id = collections.defaultdict(list)
    for line in lines:
        by_id[line["id"]].append(json.dumps(line["attributes"], sort_keys=True))
    assert all(len(set(attrs)) == 1 for attrs in by_id.values())
    assert len({attrs[0] for attrs in by_id.values()}) == 40
    for line in lines:  # a dress covers top and bottom
        attributes = line["attributes"]
        assert (attributes["top"]["type"] == "dress") == (attributes["bottom"] is None)
    # images of one identity are different pictures (pose, background, lighting)
    first = [line for line in lines if line["id"] == 1]
    assert len({json.dumps(line["jitter"], sort_keys=True) for line in first}) == 3


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    config = SynthConfig(**SMALL, noise=0.5, seed=7)
    generate_sketchpedes(tmp_path / "a", config)
    generate_sketchpedes(tmp_path / "b", config)
    generate_sketchpedes(tmp_path / "c", SynthConfig(**SMALL, noise=0.5, seed=8))
    for name in ("reid_raw.json", "attributes.jsonl", "imgs/train/0001_01.jpg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_parallel_workers_write_the_same_files(tmp_path):
    generate_sketchpedes(tmp_path / "one", SynthConfig(**SMALL, noise=0.3))
    generate_sketchpedes(tmp_path / "two", SynthConfig(**SMALL, noise=0.3, workers=2))
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_noise_corrupts_the_requested_fraction_of_train_captions_only(tmp_path):
    config = dict(train_ids=20, val_ids=3, test_ids=3, images_per_id=2, height=96, width=32)
    generate_sketchpedes(tmp_path / "clean", SynthConfig(**config, noise=0.0))
    generate_sketchpedes(tmp_path / "noisy", SynthConfig(**config, noise=0.5))
    clean_records, clean_lines = _load(tmp_path / "clean")
    noisy_records, noisy_lines = _load(tmp_path / "noisy")

    assert not any(c["corrupted"] for line in clean_lines for c in line["captions"])
    assert all(c["clean"] == text for line, r in zip(clean_lines, clean_records) for c, text in zip(line["captions"], r["captions"]))

    train_flags = [c["corrupted"] for line in noisy_lines if line["split"] == "train" for c in line["captions"]]
    assert len(train_flags) == 80 and abs(sum(train_flags) / 80 - 0.5) <= 0.05
    assert not any(c["corrupted"] for line in noisy_lines if line["split"] != "train" for c in line["captions"])

    # Images and clean captions do not depend on --noise; corrupted captions differ from their clean text.
    for clean_r, noisy_r, clean_l, noisy_l in zip(clean_records, noisy_records, clean_lines, noisy_lines):
        assert [c["clean"] for c in noisy_l["captions"]] == clean_r["captions"]
        assert noisy_l["boxes"] == clean_l["boxes"]
        for text, info in zip(noisy_r["captions"], noisy_l["captions"]):
            assert (text != info["clean"]) == info["corrupted"]
            assert info["kinds"] == [edit["kind"] for edit in info["edits"]]
            assert set(info["kinds"]) <= {"wrong_colour", "wrong_type", "irrelevant_phrase", "dropped_words"}
            for edit in info["edits"]:
                if edit["kind"] == "wrong_colour":
                    assert edit["true"] != edit["written"]
                    assert edit["true"] == noisy_l["attributes"][edit["slot"]]["colour"]
                if edit["kind"] == "irrelevant_phrase" and "dropped_words" not in info["kinds"]:
                    assert edit["phrase"] in text
    kinds = collections.Counter(k for line in noisy_lines for c in line["captions"] for k in c["kinds"])
    assert len(kinds) >= 3  # several kinds of corruption occur in 40 corrupted captions


def test_caption_colour_words_match_the_pixels_of_the_garments(tmp_path):
    """THE KEY TEST: sample each garment's box, name its colour, compare with the caption's colour word."""
    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=16, val_ids=0, test_ids=0, images_per_id=2, height=192, width=64, seed=3))
    records, lines = _load(tmp_path / "sp")
    checked = collections.Counter()
    for record, line in zip(records, lines):
        pixels = np.asarray(Image.open(tmp_path / "sp" / "imgs" / record["file_path"]).convert("RGB"))
        drawn = {}
        for slot, boxes in line["boxes"].items():
            patches = [pixels[y0:y1, x0:x1].reshape(-1, 3) for x0, y0, x1, y1 in boxes]
            drawn[slot] = _pixel_colour(np.concatenate(patches))
        claims = [claim for caption in record["captions"] for claim in _colour_claims(caption)]
        assert claims, record["captions"]
        for slot, colour in claims:
            if slot in drawn:
                assert drawn[slot] == colour, (record["file_path"], slot, colour, drawn[slot], record["captions"])
                checked[slot] += 1
    # every kind of item was checked, many times
    assert set(checked) == {"hair", "top", "bottom", "shoes", "bag", "hat"}, checked
    assert sum(checked.values()) >= 150


def test_webperson_parquet_loads_with_datasets_as_images(tmp_path):
    datasets = pytest.importorskip("datasets")
    generate_sketchpedes(tmp_path / "sp", SynthConfig(**SMALL))
    records, _ = _load(tmp_path / "sp")
    train = [r for r in records if r["split"] == "train"]
    shards = sorted((tmp_path / "sp" / "webperson" / "data").glob("train-*.parquet"))
    assert [p.name for p in shards] == ["train-00000-of-00001.parquet"]

    ds = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert len(ds) == len(train)
    for row, record in zip(ds, train):
        assert row["image_path"] == record["file_path"]
        assert [row["caption1"], row["caption2"]] == record["captions"]
        assert row["image"].size == (32, 96)
    raw = ds.cast_column("image", datasets.Image(decode=False))[0]["image"]
    assert raw["bytes"] == (tmp_path / "sp" / "imgs" / train[0]["file_path"]).read_bytes()


def test_parquet_shards_split_the_train_images(tmp_path):
    generate_sketchpedes(tmp_path / "sp", SynthConfig(**SMALL, shard_rows=5))
    names = sorted(p.name for p in (tmp_path / "sp" / "webperson" / "data").glob("*.parquet"))
    assert names == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]  # 12 train images, 5 per shard


def test_overwrite_replaces_an_earlier_generation(tmp_path):
    out = tmp_path / "sp"
    generate_sketchpedes(out, SynthConfig(**SMALL))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(GadmsError, match="--overwrite"):
        generate_sketchpedes(out, SynthConfig(**SMALL))
    generate_sketchpedes(out, SynthConfig(**{**SMALL, "train_ids": 2, "val_ids": 0, "test_ids": 1}), overwrite=True)
    assert sorted(p.name for p in (out / "imgs" / "train").iterdir()) == ["0001_01.jpg", "0001_02.jpg", "0002_01.jpg", "0002_02.jpg"]
    assert not (out / "imgs" / "val").exists()
    assert (out / "notes.txt").read_text() == "mine"  # only our own outputs are removed


@pytest.mark.parametrize(
    "change, flag",
    [({"noise": 1.5}, "--noise"), ({"images_per_id": 0}, "--images-per-id"), ({"height": 20}, "--height"), ({"train_ids": -1}, "--train-ids")],
)
def test_bad_options_name_their_flag(tmp_path, change, flag):
    with pytest.raises(GadmsError, match=flag):
        generate_sketchpedes(tmp_path / "sp", SynthConfig(**{**SMALL, **change}))
    assert not (tmp_path / "sp").exists()


def test_cli_generates_then_refuses_a_non_empty_folder_in_one_line(tmp_path):
    runner = CliRunner()
    args = ["synth", "--out", str(tmp_path / "sp"), "--train-ids", "3", "--val-ids", "1", "--test-ids", "1",
            "--images-per-id", "2", "--height", "96", "--width", "32", "--noise", "0.5"]  # fmt: skip
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "train" in first.output and "images/s" in first.output
    records, _ = _load(tmp_path / "sp")
    assert len(records) == 10

    second = runner.invoke(app, args)
    assert second.exit_code != 0
    message = second.output.strip().splitlines()
    assert len(message) == 1 and "--overwrite" in message[0], second.output

    third = runner.invoke(app, [*args, "--overwrite", "--seed", "1"])
    assert third.exit_code == 0, third.output
    assert json.loads((tmp_path / "sp" / "reid_raw.json").read_text()) != records


def test_cli_defaults_are_the_library_defaults():
    from gadms_cli.commands.synth import synth

    defaults = {name: p.default.default for name, p in inspect.signature(synth).parameters.items() if name not in ("out", "overwrite")}
    library = SynthConfig()
    assert defaults == {name: getattr(library, name) for name in defaults}
    assert (library.train_ids, library.val_ids, library.test_ids, library.images_per_id) == (800, 50, 100, 4)
    assert (library.height, library.width) == (384, 128)


def test_every_template_renders_a_complete_sentence_for_any_outfit():
    from gadms_cli.data.synth.attributes import Body, Garment, Identity
    from gadms_cli.data.synth.captions import CHOICE_KEYS, TEMPLATES, CaptionPlan, CaptionView, render_caption

    body = Body(skin=(200, 150, 110), build=1.0, shade=(0, 0, 0))
    dressed = Identity(1, "female", Garment("long", "yellow"), Garment("dress", "pink"), None, Garment("shoes", "white"), None, None, body)
    loaded = Identity(2, "male", Garment("short", "black"), Garment("jacket", "gray"), Garment("jeans", "blue"),
                      Garment("shoes", "red"), Garment("cap", "green"), Garment("backpack", "orange"), body)  # fmt: skip
    assert len(TEMPLATES) >= 20
    # subject "man"/"woman"; every other choice the last synonym ("blonde", "grey", no "a pair of")
    choices = {key: 0.0 if key in ("subject", "article") else 0.99 for key in CHOICE_KEYS}
    plans = [CaptionPlan(t, choices) for t in range(len(TEMPLATES))]
    dressed_texts = [render_caption(plan, CaptionView.of(dressed)).text for plan in plans]
    loaded_texts = [render_caption(plan, CaptionView.of(loaded)).text for plan in plans]
    assert len(set(dressed_texts)) == len(TEMPLATES) and len(set(loaded_texts)) == len(TEMPLATES)
    for text in dressed_texts:
        words = text.lower().replace(".", "").replace(",", "").split()
        assert "woman" in words and "pink" in words and "dress" in words and "blonde" in words
        assert not {"backpack", "cap", "jeans", "skirt"} & set(words)
        assert "{" not in text and "  " not in text and text.endswith(".")
    for text in loaded_texts:
        words = text.lower().replace(".", "").replace(",", "").split()
        assert "man" in words and {"grey", "blue", "red", "green", "orange", "black"} <= set(words), text
        assert "dress" not in words and "{" not in text and "  " not in text

