"""`gadms export`: open_clip itself loads the folder, with the same embeddings as ours."""

import json

import open_clip
import torch
from typer.testing import CliRunner

from gadms_cli.cli import app
from gadms_cli.model.checkpoint import save_checkpoint
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer


def test_open_clip_loads_the_export_with_equal_embeddings(tmp_path):
    torch.manual_seed(0)
    ours = create_person_clip(arch="gadms-tiny", image_size=(96, 32)).eval()
    save_checkpoint(ours, tmp_path / "model", metrics={"R1": 12.5})
    result = CliRunner().invoke(app, ["export", str(tmp_path / "model"), str(tmp_path / "oc")])
    assert result.exit_code == 0, result.output
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'oc'}")
    theirs.eval()
    images = torch.randn(2, 3, 96, 32)
    tokens = Tokenizer(ours.config.context_length)(["a man in a red coat", "a woman with a bag"])
    with torch.no_grad():
        assert torch.allclose(theirs.encode_image(images), ours.encode_image(images), atol=1e-6)
        assert torch.allclose(theirs.encode_text(tokens), ours.encode_text(tokens), atol=1e-6)
    assert json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())["preprocess_cfg"]["size"] == [96, 32]
    back = create_person_clip(pretrained=str(tmp_path / "oc")).eval()  # and gadms reads the folder back
    with torch.no_grad():
        assert torch.allclose(back.encode_image(images), ours.encode_image(images), atol=1e-6)

    again = CliRunner().invoke(app, ["export", str(tmp_path / "model"), str(tmp_path / "oc")])
    assert again.exit_code == 1 and "--overwrite" in again.output
    hf = CliRunner().invoke(app, ["export", str(tmp_path / "model"), str(tmp_path / "hub"), "--format", "hf"])
    assert hf.exit_code == 0, hf.output
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "library_name: open_clip" in card and "| R1 | 12.50 |" in card
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "model"), str(tmp_path / "x"), "--format", "onnx"])
    assert bad.exit_code == 1 and "--format onnx" in bad.output
