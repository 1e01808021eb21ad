"""SketchPedes caption realism: the style mix, what partial captions mention, colour twins, required test people.

The expectations use this file's own word lists (which words name which attribute), so a
record that claims a caption mentions the bag when the text never names one fails here.
"""

from __future__ import annotations

import collections
import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gadms_cli.cli import app
from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
from gadms_cli.errors import GadmsError

# Which words name which attribute slot (this test's own list).
SLOT_WORDS = {
    "hair": {"hair"},
    "top": {"t-shirt", "tee", "shirt", "top", "sweater", "jumper", "pullover", "jacket", "coat", "overcoat", "dress"},
    "bottom": {"trousers", "pants", "slacks", "jeans", "shorts", "skirt"},
    "shoes": {"shoes", "sneakers"},
    "bag": {"backpack", "rucksack", "handbag", "purse", "bag"},
    "hat": {"cap", "beanie", "hat"},
}
GENDER_WORDS = {"man", "woman", "guy", "gentleman", "boy", "lady", "girl", "male", "female", "he", "she"}
TINY = dict(height=96, width=32, images_per_id=2)


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "attributes.jsonl").read_text().splitlines()]


def _words(text: str) -> set[str]:
    return {w.strip(".,!?") for w in text.lower().split()}


def test_train_caption_styles_follow_the_mix_and_val_test_stay_full(tmp_path):
    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=150, val_ids=5, test_ids=5, **TINY, caption_mix="full=0.5,partial=0.3,short=0.2"))
    lines = _lines(tmp_path / "sp")
    train = collections.Counter(c["style"] for line in lines if line["split"] == "train" for c in line["captions"])
    total = sum(train.values())
    assert total == 600
    for style, fraction in (("full", 0.5), ("partial", 0.3), ("short", 0.2)):
        assert abs(train[style] / total - fraction) < 0.06, train  # binomial sd about 0.02
    assert all(c["style"] == "full" for line in lines if line["split"] != "train" for c in line["captions"])


def test_mentions_name_exactly_the_attributes_the_words_describe(tmp_path):
    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=120, val_ids=0, test_ids=0, **TINY, caption_mix="full=0.2,partial=0.4,short=0.4"))
    checked = collections.Counter()
    for line in _lines(tmp_path / "sp"):
        attributes = line["attributes"]
        for caption in line["captions"]:
            words = _words(caption["clean"])
            named = {slot for slot, nouns in SLOT_WORDS.items() if words & nouns}
            # "no bag" sentences of full captions name a bag the person does not have
            if attributes["bag"] is None:
                named.discard("bag")
            assert named == set(caption["mentions"]) - {"gender"}, (caption["clean"], caption["mentions"])
            assert bool(words & GENDER_WORDS) == ("gender" in caption["mentions"]), caption["clean"]
            for slot in named:  # only attributes the person has are mentioned
                assert attributes[slot] is not None
            checked[caption["style"]] += 1
    assert min(checked.values()) > 30


def test_partial_and_short_captions_are_shorter_and_mention_fewer_attributes(tmp_path):
    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=150, val_ids=0, test_ids=0, **TINY, caption_mix="full=0.5,partial=0.3,short=0.2"))
    by_style = collections.defaultdict(list)
    for line in _lines(tmp_path / "sp"):
        for caption in line["captions"]:
            by_style[caption["style"]].append((len(caption["clean"].split()), len(caption["mentions"])))
    lengths = {style: statistics.mean(n for n, _ in rows) for style, rows in by_style.items()}
    assert lengths["short"] < lengths["partial"] < lengths["full"]
    assert {m for _, m in by_style["short"]} <= {2, 3} and {m for _, m in by_style["partial"]} <= {2, 3, 4, 5}
    assert min(m for _, m in by_style["full"]) >= 5  # gender, hair, top, shoes and at least one more
    # This mix lands near CUHK-PEDES's average of about 23 words per caption.
    assert 18 <= statistics.mean(n for rows in by_style.values() for n, _ in rows) <= 27


def test_colour_twins_share_the_clothes_and_differ_in_a_person_detail(tmp_path):
    def repeats(fraction: float) -> tuple[int, int]:
        """(people whose clothes an earlier person wore, such people with the same details too)."""
        out = tmp_path / f"sp{fraction}"
        generate_sketchpedes(out, SynthConfig(train_ids=200, val_ids=0, test_ids=0, height=96, width=32, images_per_id=1, twin_fraction=fraction))
        groups: dict[str, list[str]] = collections.defaultdict(list)
        for line in _lines(out):
            a = line["attributes"]
            details = json.dumps([a["gender"], a["hair"]["type"], a["hat"] and a["hat"]["type"], a["bag"] and a["bag"]["type"]])
            groups[json.dumps([a["top"], a["bottom"], a["shoes"]], sort_keys=True)].append(details)
        same_clothes = sum(len(details) - 1 for details in groups.values())
        same_details = sum(len(details) - len(set(details)) for details in groups.values())
        return same_clothes, same_details

    chance_clothes, chance_details = repeats(0.0)  # dresses repeat by chance: 11 colours x 11 shoe colours
    twin_clothes, twin_details = repeats(0.3)
    assert abs((twin_clothes - chance_clothes) / 200 - 0.3) < 0.08, (twin_clothes, chance_clothes)
    assert twin_details <= chance_details + 2  # twins are never made with an earlier wearer's details



def test_colour_twins_keep_every_colour_of_the_person_they_copy(tmp_path):
    """Only shape details may tell twins apart: the hair colour is the first wearer's, and so is a
    hat's or bag's colour when both have one (else a colour would give the twin away)."""
    out = tmp_path / "sp"
    generate_sketchpedes(out, SynthConfig(train_ids=300, val_ids=0, test_ids=0, height=96, width=32, images_per_id=1, twin_fraction=0.5))
    first: dict[str, dict] = {}
    pairs = hair_same = accessory_pairs = accessory_same = 0
    for line in _lines(out):
        a = line["attributes"]
        clothes = json.dumps([a["top"], a["bottom"], a["shoes"]], sort_keys=True)
        if clothes not in first:
            first[clothes] = a
            continue
        b = first[clothes]
        pairs += 1
        hair_same += a["hair"]["colour"] == b["hair"]["colour"]
        for slot in ("hat", "bag"):
            if a[slot] and b[slot]:
                accessory_pairs += 1
                accessory_same += a[slot]["colour"] == b[slot]["colour"]
    # About 150 twins; the few chance repeats of clothes (measured about 5 in 300) may differ.
    assert pairs >= 120 and pairs - hair_same <= 10, (pairs, hair_same)
    assert accessory_pairs >= 20 and accessory_pairs - accessory_same <= 5, (accessory_pairs, accessory_same)

def test_test_include_makes_the_first_test_people_match(tmp_path):
    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=4, val_ids=1, test_ids=6, **TINY, test_include="gender=female,top.type=coat,top.colour=red", test_include_count=4))
    test_people = {line["id"]: line["attributes"] for line in _lines(tmp_path / "sp") if line["split"] == "test"}
    matching = [pid for pid, a in test_people.items() if a["gender"] == "female" and a["top"] == {"type": "coat", "colour": "red"}]
    assert sorted(matching)[:4] == sorted(test_people)[:4]


@pytest.mark.parametrize(
    "change, flag",
    [
        ({"caption_mix": "full=0.5,short=0.2"}, "--caption-mix"),
        ({"caption_mix": "long=1"}, "--caption-mix"),
        ({"twin_fraction": 1.5}, "--twin-fraction"),
        ({"test_include": "top.colour=crimson"}, "--test-include"),
        ({"test_include": "gender=male,top.type=dress"}, "--test-include"),
        ({"test_include": "gender=female", "test_include_count": 9}, "--test-include-count"),
    ],
)
def test_bad_caption_options_name_their_flag(tmp_path, change, flag):
    with pytest.raises(GadmsError, match=flag):
        generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=2, val_ids=0, test_ids=2, **TINY, **change))


def test_cli_caption_flags_reach_the_files(tmp_path):
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "sp"), "--train-ids", "6", "--val-ids", "0", "--test-ids", "0",
                                      "--height", "96", "--width", "32", "--caption-mix", "short=1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {c["style"] for line in _lines(tmp_path / "sp") for c in line["captions"]} == {"short"}
    bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "b"), "--caption-mix", "short=2"])
    assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1 and "--caption-mix" in bad.output


def test_full_captions_without_twins_are_the_sketchpedes_of_before_the_styles(tmp_path):
    """``--caption-mix full=1 --twin-fraction 0`` writes byte for byte what the generator wrote before caption
    styles and twins existed (hash of the file that version wrote for these options, gadms a9c0600)."""
    import hashlib

    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=30, val_ids=5, test_ids=5, height=96, width=32, noise=0.3,
                                                      caption_mix="full=1", twin_fraction=0.0))
    digest = hashlib.sha256((tmp_path / "sp" / "reid_raw.json").read_bytes()).hexdigest()
    assert digest == "d941377dbda97e901b69d02326001840c818fc8a5ac5775d13a5e3e8d176ddac"
