"""The oracle token score: SketchPedes' record of its corrupted words as token masks, and training with it."""

import json
from pathlib import Path

import pytest
import torch

from gadms_cli.data.benchmarks import load_benchmark
from gadms_cli.data.benchmark_training import oracle_noise_tokens
from gadms_cli.data.synth.noise_labels import load_caption_edits, noise_token_mask
from gadms_cli.errors import GadmsError
from gadms_cli.gadms.method_config import MethodRecipe
from gadms_cli.gadms.objective import RetrievalObjective
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer
from gadms_cli.recipe import load_recipe
from gadms_cli.train import train

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = Tokenizer(32)


def test_a_wrong_colour_is_marked_at_its_one_token():
    # "a man in a red shirt": one BPE token per word, so "red" (word 5) is token position 5 (SOT = 0).
    mask, unlocated = noise_token_mask(TOKENIZER, "a man in a red shirt", [{"kind": "wrong_colour", "written": "red"}], 32)
    assert mask.nonzero().flatten().tolist() == [5]
    assert unlocated == 0


def test_an_irrelevant_phrase_is_marked_at_every_token_and_dropped_words_at_none():
    caption = "a man in a red shirt. he is holding an umbrella."
    edits = [{"kind": "irrelevant_phrase", "phrase": "he is holding an umbrella."}, {"kind": "dropped_words", "words": ["blue"]}]
    mask, unlocated = noise_token_mask(TOKENIZER, caption, edits, 32)
    # SOT a man in a red shirt . -> positions 1..7; "he is holding an umbrella ." -> 8..13
    assert mask.nonzero().flatten().tolist() == [8, 9, 10, 11, 12, 13]
    assert unlocated == 0


def test_a_word_written_twice_cannot_be_located_and_is_counted():
    mask, unlocated = noise_token_mask(TOKENIZER, "a red shirt and red shoes", [{"kind": "wrong_colour", "written": "red"}], 32)
    assert not mask.any() and unlocated == 1


def test_with_the_clean_caption_a_word_written_twice_is_marked_where_the_diff_puts_it():
    # clean "a red shirt and blue shoes" -> written "a red shirt and red shoes": the second "red" is the wrong one.
    edits = [{"kind": "wrong_colour", "written": "red"}]
    mask, unlocated = noise_token_mask(TOKENIZER, "a red shirt and red shoes", edits, 32, clean="a red shirt and blue shoes")
    assert mask.nonzero().flatten().tolist() == [5] and unlocated == 0  # SOT a red shirt and [red] shoes


def test_with_the_clean_caption_inserted_phrases_are_marked_and_dropped_words_are_not():
    clean = "a man in a blue shirt. he has short hair."
    # "blue" -> "green", "short" dropped, a phrase inserted between the sentences
    written = "a man in a green shirt. free shipping. he has hair."
    edits = [{"kind": "wrong_colour", "written": "green"}, {"kind": "irrelevant_phrase", "phrase": "free shipping."},
             {"kind": "dropped_words", "words": ["short"]}]
    mask, _ = noise_token_mask(TOKENIZER, written, edits, 32, clean=clean)
    # SOT a(1) man(2) in(3) a(4) green(5) shirt(6) .(7) free(8) shipping(9) .(10) he has hair .
    # The inserted span is ". free shipping" or "free shipping ." (one of the two full stops): both diffs are minimal.
    assert mask.nonzero().flatten().tolist() in ([5, 7, 8, 9], [5, 8, 9, 10])
    only_dropped, _ = noise_token_mask(TOKENIZER, "a man in a shirt.", [{"kind": "dropped_words", "words": ["blue"]}], 32,
                                       clean="a man in a blue shirt.")
    assert not only_dropped.any()


def test_every_corrupted_caption_of_a_synth_folder_is_paired_with_its_edits(training_sketchpedes):
    bench = load_benchmark(training_sketchpedes)
    edits = load_caption_edits(bench)
    records = [json.loads(line) for line in (training_sketchpedes / "attributes.jsonl").read_text().splitlines()]
    train_captions = [c for r in records if r["split"] == "train" for c in r["captions"]]
    assert len(edits) == len(train_captions)  # every train caption of the folder has an entry
    assert sum(1 for truth in edits.values() if truth.edits) == sum(1 for c in train_captions if c["corrupted"])
    assert sorted(truth.clean for truth in edits.values()) == sorted(c["clean"] for c in train_captions)

    samples = bench.train_samples("train")
    masks = oracle_noise_tokens(bench, "train", samples, TOKENIZER)
    checked = 0
    for sample, mask in zip(samples, masks):
        key = (sample.image_path.relative_to(bench.image_dir).as_posix(), sample.caption)
        truth = edits[key]
        colour = [e for e in truth.edits if e["kind"] == "wrong_colour"]
        if not truth.edits:
            assert not mask.any()
        elif colour and len(truth.edits) == 1 and f" {colour[0]['written']} " in f" {sample.caption.lower()} ":
            ids = TOKENIZER([sample.caption])[0]
            marked = [TOKENIZER.decode([int(ids[p])]).strip() for p in mask.nonzero().flatten()]
            # the clean caption has the true colour word where the written one has the wrong one
            clean_words, written_words = truth.clean.lower().split(), sample.caption.lower().split()
            if len(clean_words) == len(written_words):
                changed = [w.strip(".,") for w, c in zip(written_words, clean_words) if w != c]
                assert marked == changed == [colour[0]["written"]]
                checked += 1
    assert checked > 0


def test_the_oracle_score_is_zero_on_noise_one_elsewhere_and_masks_only_noise():
    torch.manual_seed(0)
    model = create_person_clip("gadms-tiny", image_size=(96, 32), decoder_layers=1)
    method = MethodRecipe(name="gadms", token_score="oracle", mtp=False, noise_alpha=1.0, alignment="itc", logit_scale=10.0)
    objective = RetrievalObjective(model, method)
    tokens = TOKENIZER(["a man in a red shirt", "a woman in a blue coat"])
    noise = torch.zeros_like(tokens, dtype=torch.bool)
    noise[0, 5] = True
    scores = objective.token_scores(torch.zeros(2, 8), tokens, noise)
    # content tokens are positions 1..6 of both captions; SOT (0), EOT (7) and padding score 0
    expected = torch.zeros(2, 32)
    expected[:, 1:7] = 1.0
    expected[0, 5] = 0.0
    assert torch.equal(scores, expected)

    from gadms_cli.gadms import masking

    hits = torch.zeros(2, 32)
    for _ in range(200):
        hits += masking.noise_mask(tokens, scores, 1.0, 20.0, 0.9).selected.float()
    # p = sigma(20 * (1 - 0.9)) = 0.88 on the noise token; 1 * sigma(-18) = 1.5e-8 elsewhere
    assert hits[0, 5] > 150
    hits[0, 5] = 0
    assert hits.sum() == 0


def test_training_with_the_oracle_masks_words(training_sketchpedes, tmp_path, fresh_accelerate_state):
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [
        f"data.path={training_sketchpedes}", f"train.output_dir={tmp_path}", "model.arch=gadms-tiny",
        "model.image_size=[96, 32]", "data.num_workers=0", "train.batch_size=8", "train.max_minutes=null",
        "train.log_every=1", "train.eval_every=0", "train.max_steps=3", "method.token_score=oracle",
        "method.mtp=false", "method.noise_alpha=1.0", "method.phrase_weight=0", "method.attribute_weight=0",
    ])
    result = train(recipe)
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if line["split"] == "train"]
    assert len(train_lines) == 3
    assert any(line["score_mean"] < 1.0 for line in train_lines)  # some batch has a marked word
    # nothing is masked in a batch without a marked word (p = 1.5e-8 per unmarked word)
    assert all(line["noise_masked"] == 0 for line in train_lines if line["score_mean"] == 1.0)
    assert any(line["noise_masked"] > 0 for line in train_lines)


def test_the_oracle_needs_sketchpedes_records(training_sketchpedes, tmp_path, fresh_accelerate_state):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(training_sketchpedes, copy)
    (copy / "attributes.jsonl").unlink()
    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml", [
        f"data.path={copy}", f"train.output_dir={tmp_path}", "model.arch=gadms-tiny", "model.image_size=[96, 32]",
        "data.num_workers=0", "train.batch_size=8", "train.max_steps=1", "method.token_score=oracle",
    ])
    with pytest.raises(GadmsError, match="attributes.jsonl: not found"):
        train(recipe)
