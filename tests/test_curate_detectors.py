"""Detector backends. Keypoint R-CNN runs with RANDOM weights here: this checks the plumbing
(images in, boxes/scores/17 keypoints out in image pixels, weights loading and errors), not
detection quality - no trained weights can be downloaded on these machines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from gadms_cli.curate import detectors
from gadms_cli.curate.detectors import build_detector, keypoint_rcnn_state_dict, load_keypoint_rcnn, random_keypoint_rcnn
from gadms_cli.curate.person_filter import PersonDetection
from gadms_cli.errors import GadmsError

SMALL = {"min_size": 64, "max_size": 128}


@pytest.fixture(scope="module")
def random_detector():
    # score_floor 0 lets the untrained box head return detections so the keypoint head runs too.
    return random_keypoint_rcnn(seed=3, score_floor=0.0, max_detections=1, **SMALL)


def _images() -> list[Image.Image]:
    generator = torch.Generator().manual_seed(0)
    sizes = [(48, 112), (72, 100)]  # (width, height): different sizes in one batch
    return [Image.fromarray((torch.rand(h, w, 3, generator=generator) * 255).to(torch.uint8).numpy()) for w, h in sizes]


def test_keypoint_rcnn_random_weights_end_to_end(random_detector, monkeypatch):
    images = _images()
    raw_outputs = []
    model = random_detector.model

    def recording_model(tensors):  # keeps the model's own output to compare with ours
        raw_outputs.extend(model(tensors))
        return raw_outputs[-len(tensors) :]

    monkeypatch.setattr(random_detector, "model", recording_model)
    results = random_detector.detect(images)
    assert len(results) == len(images) == len(raw_outputs)
    assert sum(len(r) for r in results) > 0, "random weights with score_floor 0 should still return boxes"
    for image, detections, raw in zip(images, results, raw_outputs):
        width, height = image.size
        assert len(detections) <= 1  # max_detections
        person = raw["labels"] == 1
        assert len(detections) == int(person.sum())
        confidences = torch.sigmoid(raw["keypoints_scores"][person])  # heatmap logits -> (0, 1)
        for detection, box, score, points, confidence in zip(
            detections, raw["boxes"][person], raw["scores"][person], raw["keypoints"][person], confidences
        ):
            assert isinstance(detection, PersonDetection)
            x0, y0, x1, y1 = detection.box
            # boxes are in the ORIGINAL image's pixels, not the model's resized ones
            assert -1e-3 <= x0 <= x1 <= width + 1e-3 and -1e-3 <= y0 <= y1 <= height + 1e-3
            assert list(detection.box) == pytest.approx(box.tolist(), abs=1e-4)
            assert detection.score == pytest.approx(float(score)) and 0.0 <= detection.score <= 1.0
            assert len(detection.keypoints) == 17
            assert [v for x, y, _ in detection.keypoints for v in (x, y)] == pytest.approx(points[:, :2].flatten().tolist(), abs=1e-4)
            assert [c for _, _, c in detection.keypoints] == pytest.approx(confidence.tolist(), abs=1e-6)
            assert all(0.0 <= c <= 1.0 and math.isfinite(x) and math.isfinite(y) for x, y, c in detection.keypoints)
    assert random_detector.detect([]) == []


def test_weights_file_round_trip(tmp_path, random_detector):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in random_detector.model.state_dict().items()}
    save_file(state, tmp_path / "krcnn.safetensors")
    loaded = load_keypoint_rcnn(tmp_path / "krcnn.safetensors", device="cpu", score_floor=0.0, max_detections=1, **SMALL)
    assert loaded.identity.startswith("file:krcnn.safetensors:")
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    # a tensors-only .pth (what torchvision publishes), possibly wrapped in {"model": ...}
    small = {"roi_heads.keypoint_predictor.kps_score_lowres.bias": torch.arange(17.0)}
    torch.save({"model": small}, tmp_path / "wrapped.pth")
    read, identity = keypoint_rcnn_state_dict(tmp_path / "wrapped.pth")
    assert identity.startswith("file:wrapped.pth:") and read.keys() == small.keys()
    assert torch.equal(read["roi_heads.keypoint_predictor.kps_score_lowres.bias"], torch.arange(17.0))


def test_wrong_weights_file_is_one_line_naming_the_flag(tmp_path):
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(GadmsError, match="--detector-weights .*other.safetensors: not Keypoint R-CNN"):
        load_keypoint_rcnn(tmp_path / "other.safetensors", device="cpu", **SMALL)
    with pytest.raises(GadmsError, match="--detector-weights .*missing.pth: no such file"):
        keypoint_rcnn_state_dict(tmp_path / "missing.pth")


class NotTensors:
    """Any object that is not a tensor: torch.load(weights_only=True) must refuse to build it."""


def test_pickled_object_is_refused(tmp_path):
    torch.save({"model": NotTensors()}, tmp_path / "evil.pth")
    with pytest.raises(GadmsError, match="cannot read it as tensors"):
        keypoint_rcnn_state_dict(tmp_path / "evil.pth")


def test_offline_without_cached_weights_names_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setattr(detectors, "_offline_reason", lambda url: "cannot connect to download.pytorch.org (test)")

    def no_download(*args, **kwargs):
        raise AssertionError("must not try to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(GadmsError) as caught:
        build_detector("keypoint-rcnn", None, **SMALL)
    message = str(caught.value)
    assert "--detector-weights" in message and "\n" not in message


def test_failed_download_names_the_flag(tmp_path, monkeypatch):
    from urllib.error import URLError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(detectors, "_offline_reason", lambda url: None)

    def failing_download(*args, **kwargs):
        raise URLError("name resolution failed")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", failing_download)
    with pytest.raises(GadmsError, match="cannot download the Keypoint R-CNN weights .*--detector-weights"):
        build_detector("keypoint-rcnn", None, **SMALL)


def test_cached_weights_are_used(tmp_path, monkeypatch):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = {"backbone.body.conv1.weight": torch.arange(6.0).reshape(1, 1, 2, 3)}
    torch.save(state, checkpoints / "keypointrcnn_resnet50_fpn_coco-fc266e95.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("must not download"))
    read, identity = keypoint_rcnn_state_dict(None)
    assert identity == "torchvision:keypointrcnn_resnet50_fpn_coco-fc266e95.pth"
    assert torch.equal(read["backbone.body.conv1.weight"], state["backbone.body.conv1.weight"])


def test_yolo_and_unknown_detectors(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_ultralytics(name, *args, **kwargs):
        if name == "ultralytics" or name.startswith("ultralytics."):
            raise ImportError("No module named 'ultralytics'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_ultralytics)
    with pytest.raises(GadmsError, match="--detector yolo needs the ultralytics package"):
        build_detector("yolo", Path("yolo11n-pose.pt"))
    assert build_detector("none", None) is None
    with pytest.raises(GadmsError, match="--detector must be one of keypoint-rcnn, yolo, none"):
        build_detector("detr", None)


def test_keypoint_rcnn_in_the_pipeline(random_detector, tmp_path):
    """Plumbing only (random weights): relaxed rules let the random boxes through to the shards."""
    import pyarrow.parquet as pq

    from gadms_cli.curate.captioners import ChatReply
    from gadms_cli.curate.person_filter import FilterRules
    from gadms_cli.curate.pipeline import CurateSettings, curate
    from gadms_cli.curate.templates import load_templates

    class Fixed:
        backend, model_name, identity = "fake", "fixed", {"backend": "fake"}

        def generate(self, requests):
            return [ChatReply(f"A woman in a red coat and blue jeans walks with a bag, take {r.seed}.") for r in requests]

    folder = tmp_path / "in"
    folder.mkdir()
    for index, image in enumerate(_images()):
        image.save(folder / f"{index}.png")
    anything = FilterRules(min_score=0.0, count_score=0.0, min_short_side=0.0, min_aspect=1e-6, max_aspect=1e6,
                           min_keypoints=0, min_hip_keypoints=0, min_head_keypoints=0)  # fmt: skip
    class Recording:
        """The random detector, keeping what it returned."""

        name, identity = random_detector.name, random_detector.identity
        returned = []

        def detect(self, images):
            self.returned.extend(random_detector.detect(images))
            return self.returned[-len(images) :]

    recording = Recording()
    settings = CurateSettings(out=tmp_path / "out", rules=anything, detect_batch=2)
    result = curate([str(folder)], settings, detector=recording, captioner=Fixed(), templates=load_templates())
    raw = recording.returned
    assert len(raw) == 2
    assert result.all_units.rows == sum(len(d) for d in raw) > 0
    rows = pq.read_table(tmp_path / "out" / "data").to_pylist()
    expected = sorted((d.score, list(d.box)) for detections in raw for d in detections)
    found = sorted((row["detector_score"], row["box"]) for row in rows)
    for (score, box), (row_score, row_box) in zip(expected, found):
        assert row_score == pytest.approx(score, abs=1e-6) and row_box == pytest.approx(box, abs=1e-3)
    assert {row["detector"] for row in rows} == {"keypoint-rcnn"}
