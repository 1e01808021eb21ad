"""Our checkpoint directory: exact round trip, atomic replacement, run-directory lookup, clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from gadms_cli.errors import GadmsError
from gadms_cli.model.checkpoint import load_checkpoint, resolve_checkpoint_dir, save_checkpoint
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer

TOKENS = Tokenizer(16)(["a man in a red coat", "a woman with a black bag"])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return create_person_clip(arch="gadms-tiny", with_mtp=True, num_classes=5, image_size=(64, 32)).eval()


def test_round_trip_is_exact(model, tmp_path):
    from gadms_cli.recipe import Recipe

    recipe = Recipe()
    save_checkpoint(model, tmp_path / "best", recipe=recipe, metrics={"R1": 12.5}, step=7)
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "best" / "config.json").read_text())
    assert config["tokenizer"] == {
        "name": "clip-bpe-irra", "vocab_size": 49408, "mask_id": 49405, "sot_id": 49406, "eot_id": 49407,
    }
    assert config["image_size"] == [64, 32] and config["model"]["num_ids"] == 5 and config["model"]["mtp"] is True
    assert config["extra"]["step"] == 7 and config["extra"]["metrics"] == {"R1": 12.5}
    assert config["extra"]["recipe"]["model"]["arch"] == "ViT-B-16"  # the Recipe dataclass, as plain data

    loaded = load_checkpoint(tmp_path / "best").eval()
    assert loaded.config.image_size == (64, 32) and loaded.config.num_ids == 5
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(TOKENS), model.encode_text(TOKENS))
        logits = loaded.mtp_logits(loaded.text_tokens(TOKENS), loaded.image_tokens(images))
        assert torch.equal(logits, model.mtp_logits(model.text_tokens(TOKENS), model.image_tokens(images)))


def test_overwrite_is_atomic_and_leaves_no_temporaries(model, tmp_path):
    target = tmp_path / "last"
    save_checkpoint(model, target, step=1)
    save_checkpoint(model, target, step=2)
    assert [p.name for p in tmp_path.iterdir()] == ["last"]
    assert json.loads((target / "config.json").read_text())["extra"]["step"] == 2
    assert set(load_file(str(target / "model.safetensors"))) == set(model.state_dict())


def test_failed_save_keeps_the_previous_checkpoint(model, tmp_path, monkeypatch):
    target = tmp_path / "last"
    save_checkpoint(model, target, step=1)
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        save_checkpoint(model, target, step=2)
    assert [p.name for p in tmp_path.iterdir()] == ["last"]
    assert json.loads((target / "config.json").read_text())["extra"]["step"] == 1


def test_run_directory_and_file_paths_resolve(model, tmp_path):
    run = tmp_path / "run-1"
    save_checkpoint(model, run / "last")
    assert resolve_checkpoint_dir(run) == run / "last"
    save_checkpoint(model, run / "best")
    assert resolve_checkpoint_dir(run) == run / "best"
    assert resolve_checkpoint_dir(run / "best" / "model.safetensors") == run / "best"
    with pytest.raises(GadmsError, match="not found"):
        resolve_checkpoint_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GadmsError, match="not a gadms checkpoint"):
        resolve_checkpoint_dir(tmp_path / "empty")


def test_damaged_checkpoints_give_one_line_errors(model, tmp_path):
    target = tmp_path / "ck"
    save_checkpoint(model, target)
    config = json.loads((target / "config.json").read_text())
    config["model"]["num_ids"] = 6  # no longer matches the stored classifier
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(GadmsError) as raised:
        load_checkpoint(target)
    assert "\n" not in str(raised.value) and "do not match config.json" in str(raised.value)
    (target / "config.json").write_text("{broken")
    with pytest.raises(GadmsError, match="unreadable"):
        load_checkpoint(target)


def test_checkpoint_as_pretrained_for_a_new_run(model, tmp_path):
    save_checkpoint(model, tmp_path / "ck")
    # Fine-tuning start: other image size, no decoder, a new classifier of another size.
    tuned = create_person_clip(
        arch="ignored-for-checkpoints", pretrained=str(tmp_path / "ck"), image_size=(96, 32), num_classes=9
    ).eval()
    assert tuned.config.image_size == (96, 32) and tuned.mtp is None and tuned.classifier.out_features == 9
    assert tuned.load_report.kind == "gadms checkpoint"
    assert any("4x2 -> 6x2" in note for note in tuned.load_report.notes)
    with torch.no_grad():
        assert torch.allclose(tuned.encode_text(TOKENS), model.encode_text(TOKENS), atol=1e-6)
