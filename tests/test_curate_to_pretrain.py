"""What `gadms curate` writes, `gadms pretrain` trains on (data.kind: webperson)."""

from pathlib import Path

import pytest
from accelerate.state import AcceleratorState

from gadms_cli.recipe import load_recipe
from gadms_cli.train import train
from test_curate_pipeline import TemplateFiller, run  # the curate tests' stand-in captioner

from gadms_cli.data.synth import SynthConfig, generate_sketchpedes


@pytest.mark.slow
def test_pretrain_trains_on_curated_shards(tmp_path):
    source = tmp_path / "web"
    generate_sketchpedes(source, SynthConfig(train_ids=16, val_ids=0, test_ids=0, images_per_id=1, height=96, width=32))
    result = run([source / "imgs"], tmp_path / "curated", TemplateFiller(), shard_size=8)
    assert result.complete and result.run.rows == 16

    AcceleratorState._reset_state(True)
    recipe = load_recipe("quickstart", [
        "data.kind=webperson", f"data.path={tmp_path / 'curated'}", "data.val_split=null", "data.num_workers=0",
        "model.arch=gadms-tiny", "model.image_size=[96, 32]", "model.decoder_layers=1",
        "train.batch_size=8", "train.max_steps=2", "train.max_minutes=null", "train.log_every=1",
        f"train.output_dir={tmp_path / 'runs'}",
    ])
    trained = train(recipe, run_dir=tmp_path / "run")
    AcceleratorState._reset_state(True)
    assert trained.state.step == 2 and trained.state.skipped_images == 0
    assert (Path(tmp_path / "run") / "last" / "model.safetensors").is_file()
