"""benchmarks/attribute_probe.py: the probe's logistic regression and scores against hand values."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "attribute_probe.py"
spec = importlib.util.spec_from_file_location("attribute_probe", SCRIPT)
attribute_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(attribute_probe)


def test_logistic_regression_separates_a_linearly_separable_set():
    # Label = first coordinate > 0; the second coordinate is noise.
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 2, generator=generator)
    features[:, 0] += torch.where(features[:, 0] > 0, 0.5, -0.5)  # a margin of 1
    labels = (features[:, 0] > 0).float()
    weights, bias = attribute_probe.fit_logistic(features, labels)
    assert bool(((features @ weights + bias > 0).float() == labels).all())
    assert abs(weights[0].item()) > 5 * abs(weights[1].item())


def test_scores_counted_by_hand():
    labels = torch.tensor([True, True, False, False, False])
    predicted = torch.tensor([True, False, False, False, True])
    scores = attribute_probe.probe_scores(predicted, labels)
    assert scores["accuracy"] == 3 / 5
    assert scores["majority"] == 3 / 5
    assert abs(scores["balanced_accuracy"] - (1 / 2 + 2 / 3) / 2) < 1e-12
    # Predicting the majority class always: chance-level balanced accuracy.
    assert attribute_probe.probe_scores(torch.zeros(5, dtype=torch.bool), labels)["balanced_accuracy"] == 0.5


def test_predicates_read_the_attributes_jsonl_layout():
    record = {"gender": "female", "hair": {"type": "long", "colour": "black"}, "top": {"type": "dress", "colour": "red"},
              "bottom": None, "bag": {"type": "backpack", "colour": None}, "hat": None}
    true = {name for name, predicate in attribute_probe.PREDICATES.items() if predicate(record)}
    assert true == {"woman", "long hair", "black hair", "any bag", "backpack", "dress", "red top (control)"}


def test_pixel_features_shrink_and_scale_a_known_image(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (32, 96), (255, 0, 51))  # width 32, height 96, one colour
    image.save(tmp_path / "a.png")
    features = attribute_probe.pixel_features([tmp_path / "a.png"], size=(6, 2))
    assert features.shape == (1, 6 * 2 * 3)
    assert torch.allclose(features[0, :3], torch.tensor([1.0, 0.0, 51 / 255]))
