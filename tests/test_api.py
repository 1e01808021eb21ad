"""The public Python API of ``import gadms_cli``, as a notebook would use it."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

import gadms_cli as g


def test_create_save_load_round_trip_gives_identical_embeddings(tmp_path):
    torch.manual_seed(0)
    model, preprocess, tokenizer = g.create_model_and_transforms("gadms-tiny", image_size=(96, 32))
    image = preprocess(Image.new("RGB", (40, 120), (200, 30, 30))).unsqueeze(0)
    assert image.shape == (1, 3, 96, 32)
    tokens = tokenizer(["a man in a red coat"])
    folder = g.save_model(model, tmp_path / "my-model")
    again = g.load_model(folder)
    same = g.create_model(folder)
    with torch.no_grad():
        for loaded in (again, same):
            assert torch.equal(loaded.encode_image(image), model.encode_image(image))
            assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))
    assert g.get_tokenizer(again).context_length == model.config.context_length


def test_list_models_and_the_other_exports():
    names = g.list_models()
    assert {"gadms-tiny", "gadms-small", "ViT-B-16"} <= set(names)
    similarity = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    metrics = g.retrieval_metrics(similarity, torch.tensor([1, 2]), torch.tensor([1, 2]))
    assert metrics["R1"] == 100.0
    assert callable(g.ga_token_scores) and callable(g.leave_one_out_scores) and g.Retriever.__name__ == "Retriever"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        g.nope  # noqa: B018
    with pytest.raises(ValueError, match="already a model"):
        g.create_model(".", pretrained="openai")


def test_import_stays_cheap():
    code = "import sys, gadms_cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
