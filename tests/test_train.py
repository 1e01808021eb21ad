"""The training loop: exact resume, data parallel on two CPU processes, one-line errors.

Runs real open_clip tiny models on a small SketchPedes set, through the real
Accelerate (two processes launched by `accelerate launch` for the distributed test).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from gadms_cli.errors import GadmsError
from gadms_cli.recipe import load_recipe
from gadms_cli.train import train

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def sketchpedes(training_sketchpedes):
    return training_sketchpedes


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.path={data}",
        f"train.output_dir={out}",
        "model.arch=gadms-tiny",
        "model.image_size=[96, 32]",
        "model.decoder_layers=1",
        "data.num_workers=0",
        "train.batch_size=8",
        "train.max_minutes=null",
        "train.log_every=1",
        "train.eval_every=0",
        *extra,
    ]


def params(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_resumed_run_matches_an_uninterrupted_one_exactly(sketchpedes, tmp_path):
    overrides = tiny(sketchpedes, tmp_path, "train.max_steps=4", "train.checkpoint_every=2", "method.score_timing=cached")
    recipe = load_recipe(QUICKSTART, overrides)
    whole = train(recipe, run_dir=tmp_path / "whole")
    assert whole.state.step == 4

    AcceleratorState._reset_state(True)
    first = train(recipe, run_dir=tmp_path / "split", stop_after=2)
    assert first.stopped_because == "stop_after" and first.state.step == 2
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["step-2"]
    AcceleratorState._reset_state(True)
    resumed = train(resume=tmp_path / "split")
    assert resumed.state.step == 4

    a, b = params(tmp_path / "whole/checkpoints/step-4"), params(tmp_path / "split/checkpoints/step-4")
    assert a.keys() == b.keys()
    changed = params(tmp_path / "split/checkpoints/step-2")
    assert any(not torch.equal(a[k], changed[k]) for k in a), "training did not change the parameters"
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(whole.score_table, resumed.score_table)
    # The table was really written by the GA scores (not left at its initial 0.85 everywhere).
    assert (whole.score_table != round(0.85 * 255)).any()


def test_run_directory_layout_and_metrics(sketchpedes, tmp_path):
    result = train(load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=3", "train.checkpoint_every=0")), run_dir=tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "recipe.yaml").is_file() and (run / "best" / "model.safetensors").is_file()
    assert (run / "last" / "config.json").is_file() and (run / "checkpoints" / "step-3").is_dir()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    import json

    # The saved config states the temperature the run trained at: the quickstart recipe's ITC at 10, not the default 50.
    assert json.loads((run / "last" / "config.json").read_text())["model"]["logit_scale"] == 10.0

    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    val = [r for r in records if r["split"] == "val"]
    assert len(val) == 1 and 0 <= val[0]["R1"] <= 100 and val[0]["queries"] == 3 * 2 * 2
    assert result.last_metrics["R1"] == val[0]["R1"]
    assert list((run / "logs").rglob("events.out.tfevents*")), "no TensorBoard event file"


def test_phrase_alignment_trains_and_is_logged(sketchpedes, tmp_path):
    overrides = tiny(sketchpedes, tmp_path, "train.max_steps=2", "train.checkpoint_every=0", "method.phrase_weight=0.5", "data.val_split=null")
    train(load_recipe(QUICKSTART, overrides), run_dir=tmp_path / "run")
    import json

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    phrase = [r["phrase"] for r in records if r["split"] == "train"]
    # two steps of 8 queries: a positive loss, at most log(8) plus the rows' spread of positives
    assert len(phrase) == 2 and all(0 < value < 2 * math.log(8) for value in phrase)


def test_attribute_head_trains_is_saved_and_carried_to_the_next_stage(sketchpedes, tmp_path):
    from gadms_cli.data.attribute_phrases import HEAD_KEYS
    from gadms_cli.model.checkpoint import load_checkpoint

    overrides = tiny(sketchpedes, tmp_path, "train.max_steps=2", "train.checkpoint_every=0", "method.attribute_weight=1.0", "data.val_split=null")
    first = train(load_recipe(QUICKSTART, overrides), run_dir=tmp_path / "first")
    import json

    records = [json.loads(line) for line in (tmp_path / "first" / "metrics.jsonl").read_text().splitlines()]
    values = [r["attribute"] for r in records if r["split"] == "train"]
    # BCE of a fresh head on 23 attributes is near log 2 = 0.69 nats per entry
    assert len(values) == 2 and all(0.3 < v < 1.2 for v in values)
    saved = load_checkpoint(tmp_path / "first" / "last")
    assert saved.attribute_head.out_features == len(HEAD_KEYS)
    assert torch.equal(saved.attribute_head.weight, first.model.attribute_head.weight.detach().cpu())
    AcceleratorState._reset_state(True)
    # a run started from it without the head's loss keeps the trained head (it travels with the embedding)
    second = train(load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=1", "train.checkpoint_every=0",
                                               "data.val_split=null", f"model.pretrained={tmp_path / 'first' / 'last'}",
                                               "optim.lr=1e-30")), run_dir=tmp_path / "second")
    assert torch.allclose(second.model.attribute_head.weight.detach().cpu(), saved.attribute_head.weight, atol=1e-6)


def test_identity_attribute_targets_reach_the_head(sketchpedes, tmp_path, monkeypatch):
    from gadms_cli.data import attribute_phrases
    from gadms_cli.data.benchmarks import load_benchmark
    from gadms_cli.gadms import objective

    seen = []
    real = objective.head_targets
    monkeypatch.setattr(objective, "head_targets", lambda keys: seen.append(keys.clone()) or real(keys))
    overrides = tiny(sketchpedes, tmp_path, "train.max_steps=1", "train.checkpoint_every=0", "method.attribute_weight=1.0",
                     "method.attribute_targets=identity", "data.val_split=null")
    train(load_recipe(QUICKSTART, overrides), run_dir=tmp_path / "run")
    # every row the head saw is the OR of the keys of some identity's training captions, read from the file
    samples = load_benchmark(sketchpedes).train_samples("train")
    union: dict[int, torch.Tensor] = {}
    for sample in samples:
        keys = torch.tensor(attribute_phrases.multi_hot(attribute_phrases.caption_keys(attribute_phrases.parse_caption(sample.caption))))
        union[sample.pid] = union.get(sample.pid, torch.zeros_like(keys)) | keys
    rows = {tuple(row.tolist()) for row in union.values()}
    assert len(seen) == 1 and seen[0].shape[0] == 8
    assert all(tuple(row.tolist()) in rows for row in seen[0])


def test_nan_loss_stops_with_the_last_good_checkpoint(sketchpedes, tmp_path):
    recipe = load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=6", "train.checkpoint_every=2", "optim.lr=1e30", "optim.warmup_epochs=0"))
    with pytest.raises(GadmsError) as info:
        train(recipe, run_dir=tmp_path / "nan")
    message = str(info.value)
    assert "became" in message and "\n" not in message and "lower optim.lr" in message


def test_requested_process_count_mismatch_is_reported(sketchpedes, tmp_path):
    recipe = load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=1"))
    with pytest.raises(GadmsError, match="2 processes were requested but 1 started"):
        train(recipe, run_dir=tmp_path / "mismatch", expected_processes=2)


def _launch_two(overrides: list[str], run_dir: Path, out: Path) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
        str(ROOT / "tests" / "scripts" / "train_worker.py"), str(QUICKSTART), str(run_dir), str(out), *overrides,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_stay_identical_and_match_one_process_on_the_global_batch(sketchpedes, tmp_path):
    # SDM and phrase alignment (no masking randomness), no augmentation: 2 processes x 4 = one process x 8.
    # Adam's update lr * m / (sqrt(v) + eps) is about lr * sign(g): float noise in a near-zero
    # gradient flips it. A huge eps makes the update (lr / eps) * m, linear in the gradient,
    # so the comparison below tests the gradients themselves.
    common = tiny(sketchpedes, tmp_path, "train.max_steps=3", "train.checkpoint_every=0", "method.name=clip",
                  "method.alignment=sdm", "method.logit_scale=50.0", "method.phrase_weight=0.5",
                  "data.augment.flip=false", "data.augment.pad_crop=0", "data.val_split=null",
                  "optim.eps=1000.0", "optim.lr=1.0", "optim.weight_decay=0.0", "optim.warmup_epochs=0")
    _launch_two(common, tmp_path / "ddp", tmp_path / "ddp-out")
    rank0 = load_file(str(tmp_path / "ddp-out" / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "ddp-out" / "rank1.safetensors"))
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key

    single = train(load_recipe(QUICKSTART, common), run_dir=tmp_path / "single")
    AcceleratorState._reset_state(True)
    untrained = train(load_recipe(QUICKSTART, common + ["train.max_steps=1", "optim.lr=1e-30"]), run_dir=tmp_path / "zero")
    moved = 0
    for key, value in single.model.state_dict().items():
        assert torch.allclose(rank0[f"param.{key}"], value, atol=1e-6, rtol=1e-4), key
        moved += not torch.allclose(untrained.model.state_dict()[key], value, atol=1e-4)
    assert moved > 10, "the runs did not train, so their agreement proves nothing"


@pytest.mark.slow
def test_cached_score_table_is_identical_on_both_processes(sketchpedes, tmp_path):
    overrides = tiny(sketchpedes, tmp_path, "train.max_steps=3", "train.checkpoint_every=0", "method.score_timing=cached",
                     "data.val_split=null")
    _launch_two(overrides, tmp_path / "ddp", tmp_path / "out")
    rank0 = load_file(str(tmp_path / "out" / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "out" / "rank1.safetensors"))
    assert torch.equal(rank0["score_table"], rank1["score_table"])
    updated = (rank0["score_table"] != round(0.85 * 255)).any(dim=1)
    # 3 steps x global batch 8 = 24 captions scored, from both processes' halves.
    assert int(updated.sum()) >= 12
    for key in (k for k in rank0 if k.startswith("param.")):
        assert torch.equal(rank0[key], rank1[key]), key


def test_time_schedule_decays_the_lr_by_the_time_limit(sketchpedes, tmp_path):
    # A 0.15 s budget for 50 steps: the step count alone would leave the lr near its peak when time
    # runs out; with train.time_schedule the cosine follows the clock and has (nearly) ended.
    overrides = tiny(sketchpedes, tmp_path, "train.max_steps=50", "train.checkpoint_every=0", "method.name=clip",
                     "optim.warmup_epochs=0", "train.max_minutes=0.0025", "train.time_schedule=true")
    recipe = load_recipe(QUICKSTART, overrides)
    result = train(recipe, run_dir=tmp_path / "run")
    assert result.stopped_because == "time limit" and result.state.step < 50
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last_lr = [line["lr"] for line in lines if line["split"] == "train"][-1]
    peak = recipe.optim.lr
    by_steps = peak * (0.5 * (1 + math.cos(math.pi * result.state.step / 50)))
    assert by_steps > 0.9 * peak  # what the step count alone would give
    assert last_lr < 0.3 * peak


def test_time_schedule_without_a_time_limit_is_a_one_line_error(sketchpedes, tmp_path):
    with pytest.raises(GadmsError, match="'train.time_schedule'.*set train.max_minutes"):
        load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.time_schedule=true"))
