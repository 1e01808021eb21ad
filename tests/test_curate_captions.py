"""Template bank, prompts, caption validation and template derivation (with an in-process model)."""

from __future__ import annotations

import pytest

from gadms_cli.curate.captioners import ChatReply
from gadms_cli.curate.derive_templates import derive_templates
from gadms_cli.curate.prompts import caption_prompt, template_prompt
from gadms_cli.curate.templates import (
    DEFAULT_BANK,
    PLACEHOLDERS,
    load_templates,
    parse_templates,
    placeholders_in,
    template_problem,
)
from gadms_cli.curate.validation import CaptionRules, caption_rejection, clean_caption, template_similarity
from gadms_cli.errors import GadmsError

RULES = CaptionRules()
TEMPLATE = "[person] with [hair] is wearing [top], [bottom] and [shoes]. [pronoun] is carrying [belongings]."
GOOD = "A young woman with long black hair is wearing a white blouse, blue jeans and red sneakers. She is carrying a brown handbag."


def test_shipped_bank():
    bank = load_templates()
    assert bank.source == str(DEFAULT_BANK)
    assert len(bank) >= 200
    assert len({t.lower() for t in bank.templates}) == len(bank), "templates must be distinct"
    used = set()
    for template in bank.templates:
        assert template_problem(template) is None, template
        used.update(placeholders_in(template))
    assert {"hair", "top", "bottom", "shoes", "belongings"} <= used
    assert used <= set(PLACEHOLDERS)


def test_bank_file_format_and_errors(tmp_path):
    text = "# comment\n\n[person] wears [top] and [bottom].\n  [person]   has [hair] and [shoes].  \n"
    bank = parse_templates(text, "mine.txt")
    assert bank.templates == ("[person] wears [top] and [bottom].", "[person] has [hair] and [shoes].")
    assert bank.sha256 == parse_templates("[person] wears [top] and [bottom].\n[person] has [hair] and [shoes].", "x").sha256
    with pytest.raises(GadmsError, match=r"mine.txt: line 2 .*unknown placeholder\(s\) \[colour\]"):
        parse_templates("[person] wears [top] and [bottom].\n[person] in [colour] [top] and [shoes].\n", "mine.txt")
    with pytest.raises(GadmsError, match="line 1 .*no person placeholder"):
        parse_templates("A man in [top] with [bottom] and [shoes].\n", "mine.txt")
    with pytest.raises(GadmsError, match="at least 2"):
        parse_templates("[person] wears [top] and [bottom].\n", "mine.txt")
    with pytest.raises(GadmsError, match="--templates .*nope.txt: no such file"):
        load_templates(tmp_path / "nope.txt")


def test_caption_prompt_shows_the_template_and_only_its_placeholders():
    prompt = caption_prompt(TEMPLATE)
    assert TEMPLATE in prompt.user
    assert "only what is clearly visible" in prompt.user
    for name in placeholders_in(TEMPLATE):
        assert f"- [{name}]: {PLACEHOLDERS[name]}" in prompt.user
    assert "[headwear]" not in prompt.user
    assert "Description: A man in red." in template_prompt("  A man in red. ").user


@pytest.mark.parametrize(
    "caption, reason",
    [
        (GOOD, None),
        ("", "empty"),
        ("I'm sorry, I can't help with identifying people in images like this one.", "refusal"),
        (GOOD.replace("blue jeans", "[bottom]"), "placeholder"),
        (GOOD.replace("blue jeans", "[Bottom ]"), "placeholder"),
        (GOOD.replace("blue jeans", "{bottom}"), "bracket"),
        (GOOD + " <end>", "bracket"),
        ("A woman in a white blouse.", "too_short"),  # 6 words
        (" ".join(["A woman in a white blouse and jeans."] * 13), "too_long"),  # 104 words
        ("Женщина с длинными черными волосами одета в белую блузку и синие джинсы.", "not_english"),
        ("Une femme aux longs cheveux noirs porte une blouse blanche, un jean bleu et des baskets rouges.", "not_english"),
        ("A red car is parked beside a grey wall with a blue door and a small window.", "no_person_word"),
        ("Person with hair is wearing top, bottom and shoes. Pronoun is carrying belongings.", "template_copy"),
    ],
)
def test_caption_rejections(caption, reason):
    assert caption_rejection(clean_caption(caption), TEMPLATE, RULES) == reason


def test_clean_caption():
    assert clean_caption('  Caption: "A man  in a\nblue coat."  ') == "A man in a blue coat."
    assert clean_caption("\u201cA woman in red.\u201d") == "A woman in red."


def test_template_similarity_by_hand():
    # caption words [a, b, c, d]; template words without placeholders [a, b, x]: "a b" matches,
    # ratio 2 * 2 / (4 + 3); with placeholder names [person, a, b, x]: 2 * 2 / (4 + 4). The higher counts.
    assert template_similarity("a b c d", "[person] a b x") == pytest.approx(4 / 7)
    # [person, a, top] against [person, a, top]: identical -> 1
    assert template_similarity("Person a top", "[person] a [top]") == pytest.approx(1.0)


class TemplateWriter:
    """An in-process model for template derivation: answers depend on the caption text."""

    backend, model_name = "fake", "template-writer"
    identity = {"backend": "fake"}

    def __init__(self):
        self.requests = []

    def generate(self, requests):
        self.requests.extend(requests)
        replies = []
        for request in requests:
            caption = request.prompt.user.rsplit("Description: ", 1)[1]
            if "coat" in caption:
                replies.append(ChatReply('"[person] in [outerwear] has [hair] and [shoes]."\nNotes: none'))
            elif "bag" in caption:
                replies.append(ChatReply("[person] carries [belongings] and wears [top]."))
            elif "dog" in caption:
                replies.append(ChatReply("[person] walks [animal] in [top] and [shoes]."))  # unknown placeholder
            else:
                replies.append(ChatReply("A template without placeholders."))
        return replies


def test_derive_templates_keeps_usable_new_ones():
    captions = ["A man in a grey coat.", "A woman in a long coat.", "A girl with a bag.", "A man with a dog.", "A boy."]
    writer = TemplateWriter()
    result = derive_templates(captions, writer, count=10, seed=1, batch_size=2)
    assert sorted(result.templates) == ["[person] carries [belongings] and wears [top].", "[person] in [outerwear] has [hair] and [shoes]."]
    assert result.captions_sent == 5 and len(writer.requests) == 5
    assert result.rejections == {"duplicate": 1, "unknown_placeholder": 1, "no_person_placeholder": 1}
    assert all(request.image is None for request in writer.requests)
    # stops as soon as enough templates are found; the same seed gives the same order
    first = derive_templates(captions, TemplateWriter(), count=1, seed=1, batch_size=1)
    again = derive_templates(captions, TemplateWriter(), count=1, seed=1, batch_size=1)
    assert len(first.templates) == 1 and first.templates == again.templates and first.captions_sent == again.captions_sent
    # templates already in an excluded bank are duplicates
    bank = parse_templates("[person] carries [belongings] and wears [top].\n[person] wears [top] and [bottom].", "old.txt")
    excluded = derive_templates(captions, TemplateWriter(), count=10, seed=1, exclude=bank)
    assert excluded.templates == ["[person] in [outerwear] has [hair] and [shoes]."]
