"""The curation run: output format, crop policy, caption retries, kill-and-resume, machine split.

The captioner here is an in-process stand-in that fills the prompt's template from the request
seed (what a seeded server does); the detector is a stand-in returning hand-made detections.
"""

from __future__ import annotations

import dataclasses
import io
import random
import re

import pyarrow.parquet as pq
import pytest
from PIL import Image

from gadms_cli.curate.captioners import ChatReply
from gadms_cli.curate.person_filter import FilterRules, PersonDetection
from gadms_cli.curate.pipeline import CurateSettings, curate
from gadms_cli.curate.templates import load_templates
from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
from gadms_cli.data.webperson import open_webperson
from gadms_cli.errors import GadmsError

BANK = load_templates()
WORDS = {
    "person": ["A young woman", "An older man", "A boy"], "pronoun": ["She", "He"], "hair": ["short black hair", "long red hair"],
    "headwear": ["a grey cap"], "top": ["a white T-shirt", "a green sweater"], "outerwear": ["a navy jacket"],
    "bottom": ["blue jeans", "black trousers"], "shoes": ["white sneakers"], "belongings": ["a black backpack"],
    "accessories": ["glasses"], "pose": ["walking"],
}  # fmt: skip


def filled(request) -> str:
    template = request.prompt.user.split("template:\n", 1)[1].split("\n", 1)[0]
    rng = random.Random(request.seed)
    return re.sub(r"\[(\w+)\]", lambda m: rng.choice(WORDS[m.group(1)]), template)


class TemplateFiller:
    """Answers each request by filling its template; ``bad`` (seed -> text) overrides some answers."""

    backend, model_name = "fake", "template-filler"

    def __init__(self, bad=None, fail_on_call: int | None = None):
        self.bad = bad or (lambda seed: None)
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.requests = []

    @property
    def identity(self):
        return {"backend": self.backend, "model": self.model_name}

    def generate(self, requests):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("injected failure (the process dies here)")
        self.requests.extend(requests)
        return [ChatReply(self.bad(r.seed) or filled(r)) for r in requests]


@pytest.fixture(scope="module")
def sketchpedes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sp")
    generate_sketchpedes(root, SynthConfig(train_ids=5, val_ids=0, test_ids=0, images_per_id=2, height=96, width=32))
    return root


def run(inputs, out, captioner=None, detector=None, **settings):
    settings = CurateSettings(out=out, **settings)
    return curate([str(i) for i in inputs], settings, detector=detector, captioner=captioner or TemplateFiller(), templates=BANK)


def shard_bytes(out) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((out / "data").glob("*.parquet"))}


def test_output_loads_with_the_webperson_reader(sketchpedes, tmp_path):
    captioner = TemplateFiller()
    result = run([sketchpedes / "imgs"], tmp_path / "out", captioner, shard_size=4)
    assert result.complete and result.units_total == 3 and result.run.rows == 10
    assert sorted(shard_bytes(tmp_path / "out")) == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]

    records = list(open_webperson(tmp_path / "out"))
    inputs = sorted((sketchpedes / "imgs").rglob("*.jpg"))
    assert len(records) == len(inputs) == 10
    answers = {filled(r) for r in captioner.requests}
    for record, image_file in zip(records, inputs):
        relative = image_file.relative_to(sketchpedes / "imgs").as_posix()
        assert record.image_path == f"imgs/{relative}"
        assert record.image_bytes == image_file.read_bytes()  # whole JPEG images keep their bytes
        assert record.caption1 in answers and record.caption2 in answers and record.caption1 != record.caption2
        assert record.open_image().size == (32, 96)

    table = pq.read_table(tmp_path / "out" / "data" / "train-00000.parquet")
    row = table.slice(0, 1).drop(["image"]).to_pylist()[0]
    assert row["source"] == "imgs#train/0001_01" and row["box"] is None and row["detector"] is None
    assert row["captioner_model"] == "fake:template-filler"
    first_request = captioner.requests[0]
    assert BANK[row["template_id1"]] in first_request.prompt.user
    manifest = result.manifest
    assert manifest["complete"] and manifest["counts"]["rows"] == 10 and manifest["counts"]["caption_requests"] == 20
    assert [s["rows"] for s in manifest["shards"]] == [4, 4, 2]

    import datasets

    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "data" / "*.parquet"), split="train")
    assert loaded[0]["image"].size == (32, 96) and loaded[0]["caption1"] == records[0].caption1


class BoxDetector:
    """Hand-made detections by image: ``by_size[(w, h)]`` -> detections."""

    name, identity = "hand-made", "hand-made:1"

    def __init__(self, by_width):
        self.by_width = by_width
        self.batches = []

    def detect(self, images):
        self.batches.append(len(images))
        return [self.by_width[image.size[0]] for image in images]


def _image_folder(root, widths):
    root.mkdir()
    for index, width in enumerate(widths):
        Image.new("RGB", (width, 300), (index * 40, 100, 200)).save(root / f"{index}.png")


def test_crop_policy_and_filter_counts(tmp_path):
    _image_folder(tmp_path / "in", [200, 201, 202, 203])
    good = PersonDetection(box=(50.0, 40.0, 150.0, 240.0), score=0.95)  # 100 x 200
    other = PersonDetection(box=(0.0, 0.0, 60.0, 150.0), score=0.9)
    detector = BoxDetector({200: [good], 201: [good, other], 202: [], 203: [dataclasses.replace(good, score=0.6)]})
    rules = FilterRules(min_keypoints=0, min_hip_keypoints=0, min_head_keypoints=0, min_short_side=50, margin=0.1)
    result = run([tmp_path / "in"], tmp_path / "box", detector=detector, rules=rules, detect_batch=3)
    assert detector.batches == [3, 1]
    assert result.all_units.dropped == {"too_many_persons": 1, "no_person": 1, "low_score": 1}
    [record] = list(open_webperson(tmp_path / "box"))
    # box 100 x 200 at (50, 40) + 10 % margin per side -> (40, 20)-(160, 260): 120 x 240
    crop = Image.open(io.BytesIO(record.image_bytes))
    assert crop.size == (120, 240) and crop.format == "JPEG" and record.image_path == "in/0_p0.jpg"
    row = pq.read_table(tmp_path / "box" / "data").to_pylist()[0]
    assert row["box"] == [50.0, 40.0, 150.0, 240.0] and row["detector_score"] == pytest.approx(0.95)
    assert row["detector"] == "hand-made" and row["source"] == "in#0#p0"

    two = dataclasses.replace(rules, crop="image", max_persons=2)
    run([tmp_path / "in"], tmp_path / "whole", detector=detector, rules=two)
    records = list(open_webperson(tmp_path / "whole"))
    assert [r.image_path for r in records] == ["in/0.png", "in/1.png"]  # one row per image, original bytes
    assert records[1].image_bytes == (tmp_path / "in" / "1.png").read_bytes()


def test_caption_retries_and_failures(sketchpedes, tmp_path):
    def bad(seed):
        if seed % 3 == 0:
            return "A person wearing [top] today, seen on the street in town."  # leftover placeholder
        if seed % 2 == 0:
            return "Short."
        return None

    captioner = TemplateFiller(bad=bad)
    result = run([sketchpedes / "imgs"], tmp_path / "out", captioner, caption_attempts=2)

    # Recompute the outcome from the requests: a caption is (image, template); its last answer decides.
    first_round = captioner.requests[:20]
    assert len(captioner.requests) == 20 + sum(bad(r.seed) is not None for r in first_round)
    expected = {}
    last_answer = {}
    for request in captioner.requests:
        text = bad(request.seed)
        if text is not None:
            reason = "placeholder" if "[" in text else "too_short"
            expected[reason] = expected.get(reason, 0) + 1
        last_answer[(request.image, request.prompt.user)] = text
    per_image = {}
    for (image, _), text in last_answer.items():
        per_image.setdefault(image, []).append(text is None)
    kept = sum(all(ok) for ok in per_image.values())

    totals = result.all_units
    assert dict(totals.caption_rejections) == expected and sum(expected.values()) > 0
    assert totals.caption_requests == len(captioner.requests)
    assert totals.rows == kept and totals.dropped.get("caption_failed", 0) == 10 - kept and 0 < kept < 10
    for record in open_webperson(tmp_path / "out"):
        assert "[" not in record.caption1 + record.caption2


def test_kill_and_resume_gives_identical_output(sketchpedes, tmp_path):
    reference = run([sketchpedes / "imgs"], tmp_path / "reference", shard_size=3)
    assert reference.units_total == 4

    # The process "dies" in the second generate call, i.e. while captioning unit 1.
    with pytest.raises(RuntimeError, match="injected failure"):
        run([sketchpedes / "imgs"], tmp_path / "resumed", TemplateFiller(fail_on_call=2), shard_size=3)
    assert sorted(shard_bytes(tmp_path / "resumed")) == ["train-00000.parquet"]
    assert not list((tmp_path / "resumed").rglob("*.tmp"))
    # A hard kill can leave a temporary file behind: the resume removes it.
    leftover = tmp_path / "resumed" / "data" / ".train-00001.parquet.abc123.tmp"
    leftover.write_bytes(b"half a shard")

    captioner = TemplateFiller()
    resumed = run([sketchpedes / "imgs"], tmp_path / "resumed", captioner, shard_size=3)
    assert (resumed.units_skipped, resumed.units_done_now) == (1, 3)
    assert len(captioner.requests) == 2 * 7  # units 1-3 hold 7 images: unit 0 was not captioned again
    assert not leftover.exists()
    assert shard_bytes(tmp_path / "resumed") == shard_bytes(tmp_path / "reference")
    assert resumed.manifest["counts"] == reference.manifest["counts"]
    assert resumed.manifest["shards"] == reference.manifest["shards"]

    again = run([sketchpedes / "imgs"], tmp_path / "resumed", shard_size=3)  # nothing left to do
    assert (again.units_skipped, again.units_done_now) == (4, 0) and again.complete


def test_machines_split_units_and_share_a_folder(sketchpedes, tmp_path):
    reference = run([sketchpedes / "imgs"], tmp_path / "one", shard_size=2)
    first = run([sketchpedes / "imgs"], tmp_path / "shared", shard_size=2, num_shards=2, shard_index=0)
    assert (first.units_mine, first.complete) == (3, False)  # units 0, 2, 4 of 5
    assert sorted(shard_bytes(tmp_path / "shared")) == ["train-00000.parquet", "train-00002.parquet", "train-00004.parquet"]
    second = run([sketchpedes / "imgs"], tmp_path / "shared", shard_size=2, num_shards=2, shard_index=1)
    assert second.units_mine == 2 and second.complete
    assert shard_bytes(tmp_path / "shared") == shard_bytes(tmp_path / "one")
    assert second.manifest["counts"] == reference.manifest["counts"]


def test_resume_with_other_settings_is_refused(sketchpedes, tmp_path):
    run([sketchpedes / "imgs"], tmp_path / "out", shard_size=4)
    with pytest.raises(GadmsError, match="other settings \\(seed differ"):
        run([sketchpedes / "imgs"], tmp_path / "out", shard_size=4, seed=1)
    with pytest.raises(GadmsError, match="rules differ"):
        run([sketchpedes / "imgs"], tmp_path / "out", shard_size=4, rules=FilterRules(crop="image"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("something else")
    with pytest.raises(GadmsError, match="--out .*other is not empty"):
        run([sketchpedes / "imgs"], tmp_path / "other")
    with pytest.raises(GadmsError, match="--shard-index must be in 0..1"):
        run([sketchpedes / "imgs"], tmp_path / "x", num_shards=2, shard_index=2)


def test_undecodable_images_are_counted(tmp_path):
    _image_folder(tmp_path / "in", [200, 200])
    (tmp_path / "in" / "2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    result = run([tmp_path / "in"], tmp_path / "out")
    assert result.all_units.dropped == {"decode_error": 1} and result.all_units.rows == 2 and result.all_units.images_in == 3
