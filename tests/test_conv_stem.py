"""The convolutional stem (vision_cfg.conv_stem, gadms-small-conv): shapes, the token path, save/load, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gadms_cli
from gadms_cli.api import create_model, load_model, save_model
from gadms_cli.errors import GadmsError
from gadms_cli.export import export_model
from gadms_cli.model.conv_stem import ConvStem


def test_the_stem_keeps_the_patch_grid_and_replaces_the_patch_projection():
    stem = ConvStem([8, 8, 16, 16], width=24)
    assert stem(torch.zeros(2, 3, 192, 64)).shape == (2, 24, 12, 4)  # stride 16, as a 16-pixel patch
    model = create_model("gadms-small-conv")
    assert isinstance(model.clip.visual.conv1, ConvStem)
    assert [m.out_channels for m in model.clip.visual.conv1 if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128, 128, 128]
    assert not isinstance(create_model("gadms-small").clip.visual.conv1, ConvStem)


def test_image_tokens_path_equals_encode_image_and_save_load_round_trips(tmp_path):
    torch.manual_seed(0)
    model = create_model("gadms-small-conv").eval()
    images = torch.randn(3, 3, 192, 64)
    with torch.no_grad():
        pooled = model.encode_image(images)
        through_tokens, tokens = model.encode_image_with_tokens(images)
    assert torch.allclose(pooled, through_tokens, atol=1e-5) and tokens.shape == (3, 1 + 12 * 4, 128)
    save_model(model, tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "m").encode_image(images), pooled)


def test_bad_stems_and_open_clip_export_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    spec = json.loads((Path(gadms_cli.__file__).parent / "model_configs" / "gadms-small-conv.json").read_text())
    spec["vision_cfg"]["conv_stem"] = [32, 64, 128]  # stride 8 for a 16-pixel patch
    bad.write_text(json.dumps(spec))
    with pytest.raises(GadmsError, match=r"architecture bad: vision_cfg.conv_stem has 3 stride-2 layers \(stride 8\) but patch_size is 16"):
        create_model(str(bad))
    with pytest.raises(GadmsError, match="convolutional stem"):
        export_model(create_model("gadms-small-conv"), tmp_path / "out", "open_clip")
    assert not (tmp_path / "out").exists()
