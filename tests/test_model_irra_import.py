"""Importing IRRA-family .pth checkpoints, with a file whose keys the test writes in IRRA's naming."""

import argparse
import copy
import json

import pytest
import torch

from gadms_cli.errors import GadmsError
from gadms_cli.model.factory import create_person_clip, resolve_arch
from gadms_cli.model.irra_import import import_irra_checkpoint, infer_grid
from gadms_cli.model.tokenizer import Tokenizer

TOKENS = Tokenizer(16)(["a man in a red coat", "a woman with a black bag"])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny CLIP with OpenAI's head rule (64-wide heads), as every IRRA-family model has."""
    _, config = resolve_arch("gadms-tiny")
    config["vision_cfg"]["head_width"] = 64
    config["text_cfg"]["heads"] = 1
    arch = tmp_path_factory.mktemp("arch") / "openai-style-tiny.json"
    arch.write_text(json.dumps(config))
    torch.manual_seed(2)
    return create_person_clip(arch=str(arch), with_mtp=True, num_classes=7, decoder_layers=2, decoder_heads=1).eval()


def irra_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights renamed the way IRRA's training code saves them (DataParallel, fp16)."""
    state = {}
    for name, tensor in model.clip.state_dict().items():
        state["module.base_model." + name] = tensor.half()
    for name, tensor in model.mtp.state_dict().items():
        state["module." + name] = tensor.half()
    for name, tensor in model.classifier.state_dict().items():
        state["module.classifier." + name] = tensor.half()
    expected_names = {
        "module.base_model.visual.conv1.weight",
        "module.base_model.visual.positional_embedding",
        "module.base_model.visual.proj",
        "module.base_model.transformer.resblocks.1.attn.in_proj_weight",
        "module.base_model.token_embedding.weight",
        "module.base_model.ln_final.weight",
        "module.base_model.text_projection",
        "module.cross_attn.in_proj_weight",
        "module.cross_modal_transformer.resblocks.1.mlp.c_proj.weight",
        "module.ln_pre_t.weight",
        "module.ln_pre_i.bias",
        "module.mlm_head.dense.weight",
        "module.mlm_head.ln.weight",
        "module.mlm_head.fc.bias",
        "module.classifier.weight",
    }
    assert expected_names <= set(state)
    return state


def fp16_rounded(model):
    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return rounded


def test_import_matches_the_source_model(source, tmp_path):
    path = tmp_path / "best.pth"
    torch.save({"model": irra_state_dict(source), "epoch": 60, "optimizer": {"state": {}, "param_groups": []}}, path)
    model, report = import_irra_checkpoint(path)
    assert model.config.image_size == (96, 32)  # 12 patches at stride 16 -> 6x2 -> 96x32
    assert model.config.num_ids == 7 and model.mtp is not None and model.config.decoder_layers == 2
    assert report.missing == [] and report.unexpected == []
    assert any("float16" in note for note in report.notes)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
    expected = fp16_rounded(source)
    model.eval()
    images = torch.randn(2, 3, 96, 32)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), expected.encode_image(images), atol=1e-5)
        assert torch.allclose(model.encode_text(TOKENS), expected.encode_text(TOKENS), atol=1e-5)
        ours = model.mtp_logits(model.text_tokens(TOKENS), model.image_tokens(images))
        theirs = expected.mtp_logits(expected.text_tokens(TOKENS), expected.image_tokens(images))
        assert torch.allclose(ours, theirs, atol=1e-4)
        assert torch.allclose(model.classifier.weight, expected.classifier.weight)


def test_bare_state_dict_unexpected_keys_and_factory_route(source, tmp_path):
    state = {k.replace("module.", "", 1): v for k, v in irra_state_dict(source).items()}
    state["extra_head.weight"] = torch.zeros(2)
    path = tmp_path / "bare.pth"
    torch.save(state, path)
    model = create_person_clip(
        arch="ViT-B-16", pretrained=str(path), image_size=(128, 48), with_mtp=False, num_classes=None
    )
    report = model.load_report
    assert report.kind == "irra checkpoint" and report.unexpected == ["extra_head.weight"]
    assert model.mtp is None and model.classifier is None and model.config.image_size == (128, 48)
    assert any("6x2 -> 8x3" in n for n in report.notes) and any("not used" in n for n in report.notes)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(TOKENS), fp16_rounded(source).encode_text(TOKENS), atol=1e-5)


def test_grid_inference():
    assert infer_grid(192) == (24, 8)  # ViT-B/16 at 384x128: 193 x 768 position rows
    assert infer_grid(196) == (14, 14)
    assert infer_grid(12) == (6, 2)
    assert infer_grid(128) == (16, 8)  # nearest to 3:1 among the divisor pairs


def test_unsafe_and_foreign_files_are_refused(source, tmp_path):
    path = tmp_path / "with_args.pth"
    torch.save({"model": irra_state_dict(source), "args": argparse.Namespace(lr=1e-5)}, path)
    with pytest.raises(GadmsError) as raised:
        import_irra_checkpoint(path)
    message = str(raised.value)
    assert "\n" not in message and "argparse.Namespace" in message and "weights_only" in message
    plain = tmp_path / "plain.pth"
    torch.save({"visual.proj": torch.zeros(2, 2)}, plain)
    with pytest.raises(GadmsError, match="not an IRRA-family checkpoint"):
        import_irra_checkpoint(plain)


def openai_clip_keys(vision_layers: int, text_layers: int) -> set[str]:
    """OpenAI CLIP ViT state-dict names (what IRRA stores under base_model.), written out by hand."""
    block = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias"]
    block += [f"{m}.{p}" for m in ("ln_1", "mlp.c_fc", "mlp.c_proj", "ln_2") for p in ("weight", "bias")]
    keys = {"positional_embedding", "text_projection", "logit_scale", "token_embedding.weight"}
    keys |= {"ln_final.weight", "ln_final.bias"}
    keys |= {"visual.class_embedding", "visual.positional_embedding", "visual.proj", "visual.conv1.weight"}
    keys |= {f"visual.{ln}.{p}" for ln in ("ln_pre", "ln_post") for p in ("weight", "bias")}
    keys |= {f"visual.transformer.resblocks.{i}.{n}" for i in range(vision_layers) for n in block}
    keys |= {f"transformer.resblocks.{i}.{n}" for i in range(text_layers) for n in block}
    return keys


def test_open_clip_uses_openai_names(source):
    assert set(source.clip.state_dict()) == openai_clip_keys(2, 2)


@pytest.mark.slow
def test_vit_b16_person_checkpoint_shapes(tmp_path):
    """A ViT-B/16 at 384x128 in IRRA's layout: 193 x 768 visual positions -> 24x8 grid, 8 heads."""
    torch.manual_seed(0)
    original = create_person_clip(arch="ViT-B-16-quickgelu", image_size=(384, 128), with_mtp=True).eval()
    state = {"base_model." + k: v for k, v in original.clip.state_dict().items()}
    state.update(original.mtp.state_dict())
    assert state["base_model.visual.positional_embedding"].shape == (193, 768)
    assert set(original.clip.state_dict()) == openai_clip_keys(12, 12)
    path = tmp_path / "irra_vitb16.pth"
    torch.save({"model": state}, path)
    del state
    model, report = import_irra_checkpoint(path)
    assert model.config.image_size == (384, 128) and model.config.decoder_heads == 8
    assert model.config.clip_config["text_cfg"]["heads"] == 8 and model.config.embed_dim == 512
    assert report.missing == [] and report.unexpected == []
    with torch.no_grad():
        images = torch.randn(1, 3, 384, 128)
        assert torch.allclose(model.eval().encode_image(images), original.encode_image(images), atol=1e-5)
        assert torch.allclose(model.encode_text(TOKENS), original.encode_text(TOKENS), atol=1e-5)


def test_irra_layout_file_through_the_cli_prints_a_complete_load_report(source, tmp_path):
    """An IRRA/GA-DMS-layout checkpoint ({"model": ..., "epoch": ...}, module. + base_model. prefixes,
    fp16) loads through `gadms eval` with a printed report of 0 missing / 0 unexpected tensors."""
    from typer.testing import CliRunner

    from gadms_cli.cli import app
    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes

    path = tmp_path / "best.pth"
    torch.save({"model": irra_state_dict(source), "epoch": 60, "optimizer": None}, path)
    bench = tmp_path / "sp"
    generate_sketchpedes(bench, SynthConfig(train_ids=0, val_ids=0, test_ids=3, images_per_id=2, height=96, width=32))
    result = CliRunner().invoke(app, ["eval", "--bench", str(bench), "--model", str(path), "--image-size", "96x32", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert f"weights: irra checkpoint: {path} (" in result.output
    assert "0 missing, 0 unexpected)" in result.output


def test_an_ambiguous_patch_grid_asks_for_the_source_image_size(source):
    state = irra_state_dict(source)
    pos = state["module.base_model.visual.positional_embedding"]
    width = pos.shape[1]
    # 288 patches: 384x192 at stride 16 (24x12), neither 3:1 nor square
    state["module.base_model.visual.positional_embedding"] = torch.zeros(1 + 288, width, dtype=pos.dtype)
    from gadms_cli.model.irra_import import import_irra_state_dict

    with pytest.raises(GadmsError, match=r"288 image patches .* pass it with --source-image-size HxW"):
        import_irra_state_dict(state, "x.pth")
    patch = source.clip.visual.conv1.weight.shape[-1]
    model, report = import_irra_state_dict(state, "x.pth", source_image_size=(24 * patch, 12 * patch))
    assert tuple(model.clip.visual.grid_size) == (24, 12)


def test_openai_state_dict_on_a_gelu_architecture_warns(tmp_path):
    _, config = resolve_arch("gadms-tiny")
    config["quick_gelu"] = False
    arch = tmp_path / "gelu-tiny.json"
    arch.write_text(json.dumps(config))
    donor = create_person_clip(arch=str(arch))
    state = dict(donor.clip.state_dict())
    state["input_resolution"] = torch.tensor(224)  # OpenAI's own files carry these scalars
    torch.save(state, tmp_path / "openai.pt")
    model = create_person_clip(arch=str(arch), pretrained=str(tmp_path / "openai.pt"))
    assert any("trained with QuickGELU" in w and "quickgelu" in w for w in model.load_report.warnings)
