"""Model building: names and JSON configs, image-size override with pos-embed resizing, weight sources."""

import json

import open_clip
import pytest
import torch
from open_clip.pretrained import _pcfg
from safetensors.torch import save_file

from gadms_cli.errors import GadmsError
from gadms_cli.model import factory
from gadms_cli.model.factory import create_person_clip, list_architectures, resolve_arch
from gadms_cli.model.pos_embed import adapt_text_pos_embed, resize_visual_pos_embed
from gadms_cli.model.tokenizer import Tokenizer

TOKENS = Tokenizer(77)(["a man in a red coat", "a woman with a bag"])


def reference_clip(seed: int = 0) -> open_clip.model.CLIP:
    """A plain open_clip model of the tiny architecture, as a source of 'pretrained' weights."""
    factory.register_model_configs()
    torch.manual_seed(seed)
    return open_clip.create_model("gadms-tiny").eval()


def test_shipped_configs_are_registered_and_sized():
    names = list_architectures()
    assert "gadms-tiny" in names and "gadms-small" in names and "ViT-B-16" in names
    model = create_person_clip(arch="gadms-tiny")
    assert model.config.image_size == (96, 32) and model.config.context_length == 77
    assert model.clip.visual.grid_size == (6, 2)
    assert model.mtp is None and model.classifier is None and model.logit_scale == 50.0
    assert model.load_report.kind == "random init"
    small = resolve_arch("gadms-small")[1]
    assert small["embed_dim"] == 128 and small["vision_cfg"]["image_size"] == [192, 64]
    assert small["text_cfg"]["width"] == 128 and small["text_cfg"]["layers"] == 3


def test_vit_b16_config_with_person_image_size():
    _, config = resolve_arch("ViT-B-16")
    sized = factory.apply_sizes(config, (384, 128), None)
    assert sized["vision_cfg"]["image_size"] == [384, 128] and config["vision_cfg"]["image_size"] == 224
    with pytest.raises(GadmsError, match="multiple of the patch size"):
        factory.apply_sizes(config, (380, 128), None)


def test_json_config_file_and_unknown_names(tmp_path):
    _, config = resolve_arch("gadms-tiny")
    config["text_cfg"]["context_length"] = 32
    path = tmp_path / "my-arch.json"
    path.write_text(json.dumps({"model_cfg": config}))
    model = create_person_clip(arch=str(path), with_mtp=True, num_classes=3)
    assert model.config.arch == "my-arch" and model.config.context_length == 32
    assert model.mtp is not None and model.classifier.out_features == 3
    with pytest.raises(GadmsError, match="did you mean ViT-B-16"):
        create_person_clip(arch="ViT-B-61")
    with pytest.raises(GadmsError, match="not a file, a checkpoint directory or an open_clip tag"):
        create_person_clip(arch="gadms-tiny", pretrained="no-such-tag")


def test_bilinear_grid_resize_by_hand():
    # Position rows whose value is the row index of their 14x14 grid cell: bilinear resize
    # to 24x8 gives the source coordinate (i + 0.5) * 14 / 24 - 0.5 clamped to [0, 13].
    rows = torch.arange(14.0).repeat_interleave(14)
    pos = torch.cat([torch.full((1, 2), -7.0), torch.stack([rows, -rows], dim=1)])
    resized = resize_visual_pos_embed(pos, (14, 14), (24, 8))
    assert resized.shape == (1 + 24 * 8, 2) and torch.equal(resized[0], pos[0])
    expected_rows = torch.tensor([min(max((i + 0.5) * 14 / 24 - 0.5, 0.0), 13.0) for i in range(24)])
    assert torch.allclose(resized[1:, 0].reshape(24, 8), expected_rows[:, None].expand(24, 8), atol=1e-5)
    assert torch.allclose(resized[1:, 1], -resized[1:, 0])
    text = torch.arange(10.0)[:, None]
    assert torch.equal(adapt_text_pos_embed(text, 6), text[:6])
    assert adapt_text_pos_embed(text, 20).shape == (20, 1)


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_local_weights_file(tmp_path, suffix):
    source = reference_clip()
    path = tmp_path / f"open_clip_pytorch_model{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    same = create_person_clip(arch="gadms-tiny", pretrained=str(path)).eval()
    images = torch.randn(2, 3, 96, 32)
    with torch.no_grad():
        assert torch.allclose(same.encode_image(images), source.encode_image(images), atol=1e-5)
        assert torch.allclose(same.encode_text(TOKENS), source.encode_text(TOKENS), atol=1e-5)
    assert same.load_report.kind == "weights file" and same.load_report.missing == []

    taller = create_person_clip(arch="gadms-tiny", pretrained=str(path), image_size=(128, 48), context_length=40)
    pos = taller.clip.visual.positional_embedding.detach()
    assert torch.allclose(pos, resize_visual_pos_embed(source.visual.positional_embedding.detach(), (6, 2), (8, 3)))
    assert torch.equal(taller.clip.positional_embedding.detach(), source.positional_embedding.detach()[:40])
    assert any("6x2 -> 8x3" in note for note in taller.load_report.notes)
    with torch.no_grad():  # text tower untouched by the image size; context truncation is exact
        assert torch.allclose(taller.encode_text(TOKENS[:, :40]), source.encode_text(TOKENS), atol=1e-5)


def test_weights_of_another_architecture_rejected(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference_clip().state_dict().items()}, str(path))
    with pytest.raises(GadmsError, match="pick the architecture"):
        create_person_clip(arch="gadms-small", pretrained=str(path))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(GadmsError, match="not a readable torch weights file"):
        create_person_clip(arch="gadms-tiny", pretrained=str(bad))


def test_offline_tag_fails_fast_with_the_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(factory, "_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(GadmsError) as raised:
        create_person_clip(arch="ViT-B-16", pretrained="openai", cache_dir=str(tmp_path))
    message = str(raised.value)
    assert "\n" not in message and "--pretrained" in message and "open_clip_pytorch_model.bin" in message


def test_cached_tag_loads_without_network(tmp_path, monkeypatch):
    """A tag whose file is already in the Hugging Face cache needs no connection."""
    source = reference_clip(seed=3)
    monkeypatch.setitem(
        open_clip.pretrained._PRETRAINED, "gadms-tiny", {"unittest": _pcfg(hf_hub="gadms-test/tiny/", quick_gelu=True)}
    )

    def no_network(host, timeout=3.0):
        raise AssertionError("the network must not be probed for a cached file")

    monkeypatch.setattr(factory, "_reachable", no_network)
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--gadms-test--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "open_clip_model.safetensors"))
    model = create_person_clip(arch="gadms-tiny", pretrained="unittest", cache_dir=str(tmp_path)).eval()
    assert model.load_report.kind == "open_clip tag"
    with torch.no_grad():
        assert torch.allclose(model.encode_text(TOKENS), source.encode_text(TOKENS), atol=1e-5)


def test_recipe_fields_and_overrides():
    from gadms_cli.recipe import ModelRecipe

    recipe = ModelRecipe(arch="gadms-tiny", pretrained=None, image_size=(64, 32), context_length=24, decoder_layers=1)
    model = create_person_clip(recipe, with_mtp=True)
    assert model.config.image_size == (64, 32) and model.config.context_length == 24
    assert model.config.decoder_layers == 1 and model.config.decoder_heads == 2  # the text tower's heads
    assert len(model.mtp.cross_modal_transformer.resblocks) == 1
    override = create_person_clip(recipe, decoder_heads=4, with_mtp=True, image_size=(96, 32))
    assert override.config.decoder_heads == 4 and override.config.image_size == (96, 32)
    model.add_classifier(11)
    assert model.config.num_ids == 11 and model.identity_logits(torch.zeros(2, 64)).shape == (2, 11)


def test_architecture_name_as_first_argument():
    # A name in the recipe's place is the architecture (timm's create_model(name)), not a
    # recipe without fields: gadms-tiny is width 64 with 2 vision layers (its JSON file).
    model = create_person_clip("gadms-tiny")
    assert model.clip.visual.transformer.width == 64
    assert len(model.clip.visual.transformer.resblocks) == 2
    with pytest.raises(GadmsError):
        create_person_clip("no-such-architecture")
