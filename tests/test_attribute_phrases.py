"""Attribute phrases and attribute queries: parsed keys against hand-written keys and against
SketchPedes' own records; the phrase alignment loss against a loop written from its formula."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from gadms_cli.data import attribute_phrases as ap
from gadms_cli.data.attribute_phrases import attribute_query
from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
from gadms_cli.data.synth.attributes import COLOURS
from gadms_cli.data.synth.caption_words import TYPE_NOUNS
from gadms_cli.gadms.losses import itc_loss, phrase_alignment_loss
from gadms_cli.model.tokenizer import Tokenizer


@pytest.mark.parametrize(
    "caption, keys",
    [
        (
            "A lady with long black hair is wearing a red coat and blue jeans, carrying a rucksack on her back.",
            {"gender:female", "hair:long", "hair-colour:black", "item:coat", "item:red coat", "item:jeans", "item:blue jeans", "item:backpack"},
        ),
        (
            "The man wears a grey tee and a pair of black shoes. He has short hair and a baseball cap.",
            {"gender:male", "item:t-shirt", "item:gray t-shirt", "item:shoes", "item:black shoes", "hair:short", "item:cap"},
        ),
        ("woman in red coat", {"gender:female", "item:coat", "item:red coat"}),
        # "long coat" is a coat, not long hair; the colour two words before the noun still counts
        ("A girl in a white long coat with shoulder-length blonde hair.", {"gender:female", "item:coat", "item:white coat", "hair:medium", "hair-colour:blond"}),
        ("a person carrying a messenger bag", {"item:shoulder bag"}),
        ("A tall figure walking in the rain.", set()),
    ],
)
def test_caption_keys_by_hand(caption, keys):
    assert ap.caption_keys(ap.parse_caption(caption)) == keys


def test_the_lexicon_knows_every_sketchpedes_noun_and_colour():
    for item, nouns in TYPE_NOUNS.items():
        for noun in nouns:
            assert [a.value for a in ap.parse_caption(f"a person with a {noun}")] == [item], noun
    for colour in COLOURS:
        assert f"item:{colour} coat" in ap.caption_keys(ap.parse_caption(f"a {colour} coat"))


def test_parsed_keys_equal_what_sketchpedes_records_each_caption_says(tmp_path):
    """Every clean caption of every style: the keys follow from attributes.jsonl's attributes,
    the slots the caption mentions and the colours it names."""
    generate_sketchpedes(tmp_path, SynthConfig(
        train_ids=60, val_ids=1, test_ids=1, images_per_id=1, height=96, width=32,
        caption_mix="full=0.4,partial=0.3,short=0.3", twin_fraction=0.3,
    ))  # fmt: skip
    hair_colour = {"yellow": "blond"}  # SketchPedes writes yellow hair as blond/blonde
    checked = 0
    for line in (tmp_path / "attributes.jsonl").read_text().splitlines():
        record = json.loads(line)
        person = record["attributes"]
        for caption in record["captions"]:
            expected = set()
            for slot in caption["mentions"]:
                if slot == "gender":
                    expected.add(f"gender:{person['gender']}")
                elif slot == "hair":
                    expected.add(f"hair:{person['hair']['type']}")
                    if "hair" in caption["colours_named"]:
                        expected.add(f"hair-colour:{hair_colour.get(person['hair']['colour'], person['hair']['colour'])}")
                else:
                    garment = person[slot]
                    expected.add(f"item:{garment['type']}")
                    if slot in caption["colours_named"]:
                        expected.add(f"item:{garment['colour']} {garment['type']}")
            assert ap.caption_keys(ap.parse_caption(caption["clean"])) == expected, caption["clean"]
            checked += 1
    assert checked == 124


def test_a_query_says_what_its_keys_claim_and_the_caption_states_them():
    caption = "A lady with long black hair is wearing a red coat and blue jeans, carrying a rucksack on her back."
    attributes = ap.parse_caption(caption)
    stated = ap.caption_keys(attributes)
    rng = random.Random(3)
    sizes = set()
    for _ in range(200):
        text, keys = ap.sample_query(attributes, 2, rng)
        assert keys <= stated
        # read back, the query states exactly its keys (a colourless "coat" claims no colour)
        assert ap.caption_keys(ap.parse_caption(text)) == keys, text
        assert len(text.split()) <= 12
        # attributes asserted: the gender, the hair (length and colour are one), each item type
        sizes.add(len({"hair" if k.startswith("hair") else k.split(":")[1].split()[-1] for k in keys}))
    assert sizes == {1, 2}
    assert ap.sample_query([], 2, rng) is None


def test_attribute_query_tensors():
    tokenize = Tokenizer(32)
    item = attribute_query("woman in red coat", 1, random.Random(0), tokenize)
    keys = {ap.KEYS[i] for i in item["caption_keys"].nonzero().flatten().tolist()}
    assert keys == {"gender:female", "item:coat", "item:red coat"}
    asserted = {ap.KEYS[i] for i in item["query_keys"].nonzero().flatten().tolist()}
    assert asserted in ({"gender:female"}, {"item:coat"}, {"item:coat", "item:red coat"})
    empty = attribute_query("A tall figure walking in the rain.", 2, random.Random(0), tokenize)
    assert not empty["query_keys"].any() and not empty["caption_keys"].any()
    assert torch.equal(empty["query_tokens"], tokenize(["A tall figure walking in the rain."])[0])


def _loop_reference(images, queries, query_keys, caption_keys, scale):
    """The docstring's formula, one row at a time in plain Python floats."""
    n = len(images)
    unit = lambda v: [x / math.sqrt(sum(y * y for y in v)) for x in v]  # noqa: E731
    images, queries = [unit(v) for v in images], [unit(v) for v in queries]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731

    def match(i, j):  # query i is true of image j
        return i == j or (any(query_keys[i]) and all(c for q, c in zip(query_keys[i], caption_keys[j]) if q))

    def row_loss(query, keys, positive):
        logits = [scale * dot(query, k) for k in keys]
        log_z = math.log(sum(math.exp(x) for x in logits))
        chosen = [j for j in range(n) if positive(j)]
        return -sum(logits[j] - log_z for j in chosen) / len(chosen)

    q2i = sum(row_loss(queries[i], images, lambda j, i=i: match(i, j)) for i in range(n)) / n
    i2q = sum(row_loss(images[j], queries, lambda i, j=j: match(i, j)) for j in range(n)) / n
    return (q2i + i2q) / 2


def test_phrase_alignment_loss_against_a_loop_over_its_formula():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    queries = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    caption_keys = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    query_keys = torch.tensor([[1, 0, 0], [0, 0, 1], [0, 1, 1], [0, 0, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    got = phrase_alignment_loss(images, queries, query_keys, caption_keys, logit_scale=7.0)
    expected = _loop_reference(images.tolist(), queries.tolist(), query_keys.tolist(), caption_keys.tolist(), 7.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # with no keys at all, every query matches only its own image: InfoNCE
    none = torch.zeros_like(query_keys)
    assert phrase_alignment_loss(images, queries, none, caption_keys, 7.0).item() == pytest.approx(
        itc_loss(images, queries, 7.0).item(), rel=1e-12
    )


def test_head_targets_mask_what_a_caption_does_not_decide():
    rows = [ap.caption_keys(ap.parse_caption(c)) for c in ("a person in a red coat", "A man with long hair carrying a purse.")]
    caption_keys = torch.tensor([ap.multi_hot(keys) for keys in rows])
    targets, known = ap.head_targets(caption_keys)
    column = {key: i for i, key in enumerate(ap.HEAD_KEYS)}
    # row 0: a coat, no other item; gender and hair length unknown
    assert {ap.HEAD_KEYS[i] for i in targets[0].nonzero().flatten().tolist()} == {"item:coat"}
    assert not known[0, column["gender:female"]] and not known[0, column["hair:long"]] and known[0, column["item:dress"]]
    # row 1: male, long hair, a handbag; everything decided
    assert {ap.HEAD_KEYS[i] for i in targets[1].nonzero().flatten().tolist()} == {"gender:male", "hair:long", "item:handbag"}
    assert bool(known[1].all())
    assert len(ap.HEAD_KEYS) == 2 + 3 + len(ap.ITEM_NOUNS)


def test_identity_keys_are_the_union_over_the_identitys_captions():
    captions = ["a man carrying a backpack", "A man in a grey coat.", "a woman in a red dress", "A woman with long hair."]
    table = ap.identity_keys(captions, [7, 7, 3, 3])
    named = [{ap.KEYS[i] for i in row.nonzero().flatten().tolist()} for row in table]
    # hand-written: what the two captions of each person say together
    man = {"gender:male", "item:backpack", "item:coat", "item:gray coat"}
    woman = {"gender:female", "item:dress", "item:red dress", "hair:long"}
    assert named == [man, man, woman, woman]
    targets, known = ap.head_targets(torch.stack(table))
    column = {key: i for i, key in enumerate(ap.HEAD_KEYS)}
    # the coat caption alone would say "no backpack"; the identity says there is one
    assert targets[1, column["item:backpack"]] and known[1, column["item:backpack"]]
    assert not known[0, column["hair:long"]] and known[2, column["hair:long"]] and targets[2, column["hair:long"]]


def test_attribute_loss_is_the_mean_bce_over_known_entries():
    from gadms_cli.gadms.losses import attribute_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    targets = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    known = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))  # noqa: E731
    expected = (bce(2.0, 1) + bce(-1.0, 0) + bce(0.0, 0) + bce(-2.0, 1)) / 4
    assert attribute_loss(logits, targets, known).item() == pytest.approx(expected, rel=1e-6)
    assert attribute_loss(logits, targets, torch.zeros_like(known)).item() == 0.0


def test_balanced_attribute_loss_weighs_present_and_absent_halves_per_attribute():
    from gadms_cli.gadms.losses import attribute_loss

    # column 0: present in rows 0, 1, absent in row 2 (row 3 unknown); column 1: absent only;
    # column 2: nothing known (left out of the mean)
    logits = torch.tensor([[2.0, -1.0, 0.3], [0.5, 1.0, 0.1], [-3.0, 0.0, 0.2], [9.0, 9.0, 9.0]])
    targets = torch.tensor([[1, 0, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    known = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    bce = lambda x, y: -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))  # noqa: E731
    column0 = ((bce(2.0, 1) + bce(0.5, 1)) / 2 + bce(-3.0, 0)) / 2
    column1 = (bce(-1.0, 0) + bce(1.0, 0)) / 2
    expected = (column0 + column1) / 2
    assert attribute_loss(logits, targets, known, balance=True).item() == pytest.approx(expected, rel=1e-6)
    assert attribute_loss(logits, targets, torch.zeros_like(known), balance=True).item() == 0.0
