"""Faults and bad inputs (docs/reliability.md): each gets one line naming the key or file and the
fix, a non-zero exit, and nothing saved that is not good."""

from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from gadms_cli.errors import GadmsError
from gadms_cli.recipe import load_recipe
from gadms_cli.train import Trainer, train

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "gadms_cli" / "recipes" / "quickstart.yaml"


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def sketchpedes(training_sketchpedes):
    return training_sketchpedes


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.path={data}", f"train.output_dir={out}", "model.arch=gadms-tiny", "model.image_size=[96, 32]",
            "model.decoder_layers=1", "data.num_workers=0", "train.batch_size=8", "train.max_minutes=null",
            "train.log_every=1", "train.eval_every=0", *extra]


def test_nan_weights_with_a_finite_loss_never_reach_a_checkpoint(sketchpedes, tmp_path, monkeypatch):
    """Weights poisoned after the 3rd optimiser step (the loss of that step was finite): step-1 and
    step-2 are saved, step-3 is refused, and the message names step-2, whose weights are finite."""
    original = Trainer.optimizer_step

    def poisoning_step(self, micro):
        sums = original(self, micro)
        if self.state.step == 2:  # incremented to 3 by the loop right after
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("nan"))
        return sums

    monkeypatch.setattr(Trainer, "optimizer_step", poisoning_step)
    recipe = load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=6", "train.checkpoint_every=1"))
    run = tmp_path / "run"
    with pytest.raises(GadmsError) as info:
        train(recipe, run_dir=run)
    message = str(info.value)
    assert "\n" not in message
    assert "became NaN or infinite by step 3" in message and "saving checkpoints/step-3" in message
    assert f"Last good checkpoint: {run / 'checkpoints' / 'step-2'}" in message and "optim.lr" in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-1", "step-2"]
    weights = load_file(str(run / "checkpoints" / "step-2" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_nan_weights_stop_before_validation(sketchpedes, tmp_path, monkeypatch):
    original = Trainer.optimizer_step

    def poisoning_step(self, micro):
        sums = original(self, micro)
        if self.state.step == 1:  # the 2nd step; validation follows it at step 2
            with torch.no_grad():
                next(self.model.parameters()).fill_(float("inf"))
        return sums

    monkeypatch.setattr(Trainer, "optimizer_step", poisoning_step)
    recipe = load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=4", "train.eval_every=2", "train.checkpoint_every=0"))
    with pytest.raises(GadmsError, match=r"by step 2; stopped before validating and saving best/ and last/\. Last good checkpoint: none yet"):
        train(recipe, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=nan", "'optim.lr' must be a finite number > 0, got nan"),
        ("optim.grad_clip=-1", "'optim.grad_clip' must be > 0 (or null: no clipping), got -1"),
        ("data.num_workers=-1", "'data.num_workers' must be >= 0, got -1"),
        ("method.score_layers=0", "'method.score_layers': score layers must be >= 1, got 0"),
        ("train.log_every=0", "'train.log_every' must be >= 1, got 0"),
        ("train.max_steps=-5", "'train.max_steps' must be >= 1 (or null: all epochs), got -5"),
        ("method.mtp_weight=-1", "'method.mtp_weight' must be >= 0, got -1"),
        ("optim.warmup_epochs=-1", "'optim.warmup_epochs' must be >= 0, got -1"),
        ("train.max_minutes=-1", "'train.max_minutes' must be > 0 (or null: no time limit), got -1"),
        ("model.decoder_layers=0", "'model.decoder_layers' must be >= 1, got 0"),
        ("data.samples_per_id=0", "'data.samples_per_id' must be >= 1, got 0"),
    ],
)
def test_bad_recipe_values_are_one_line_naming_the_key(override, message):
    with pytest.raises(GadmsError) as info:
        load_recipe("quickstart", [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_empty_recipe_file_is_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(GadmsError, match=r"empty\.yaml: the recipe is empty; start from a shipped one"):
        load_recipe(empty)


def test_a_start_that_fails_leaves_no_run_folder(tmp_path):
    recipe = load_recipe(QUICKSTART, tiny(tmp_path / "no-such-data", tmp_path, "train.max_steps=1"))
    with pytest.raises(GadmsError):
        train(recipe, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- checkpoints and resume ------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(sketchpedes, tmp_path_factory):
    """A 4-step run with full-state checkpoints at steps 2 and 4."""
    out = tmp_path_factory.mktemp("finished")
    AcceleratorState._reset_state(True)
    recipe = load_recipe(QUICKSTART, tiny(sketchpedes, out, "train.max_steps=4", "train.checkpoint_every=2"))
    train(recipe, run_dir=out / "run")
    AcceleratorState._reset_state(True)
    return out / "run"


def copy_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_refused_pickle_in_optimizer_state_is_one_line(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path)
    torch.save({"state": Evil()}, run / "checkpoints" / "step-4" / "optimizer.bin")
    with pytest.raises(GadmsError) as info:
        train(resume=str(run))
    message = str(info.value)
    assert message.startswith(f"{run / 'checkpoints' / 'step-4'}: cannot be restored (UnpicklingError")
    assert f"--resume {run / 'checkpoints' / 'step-2'}" in message and "\n" not in message
    assert "this must never run" not in capsys.readouterr().out


def test_unreadable_random_states_are_not_ignored(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    (run / "checkpoints" / "step-4" / "random_states_0.pkl").write_bytes(b"\x00garbage")
    with pytest.raises(GadmsError, match=r"random_states_0\.pkl: unreadable .*exact resume needs it; resume from an earlier one: --resume .*step-2"):
        train(resume=str(run))


def test_truncated_latest_checkpoint_names_the_intact_one(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path)
    weights = run / "checkpoints" / "step-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(GadmsError, match=r"step-4: cannot be restored .*--resume .*step-2$"):
        train(resume=str(run))


def test_resume_with_another_process_count_warns(finished_run, tmp_path, capsys):
    import shutil

    run = copy_run(finished_run, tmp_path)
    step = run / "checkpoints" / "step-2"
    shutil.copy(step / "random_states_0.pkl", step / "random_states_1.pkl")  # as a 2-process run saves it
    train(resume=str(step), overrides=["train.max_steps=3"])
    assert "was saved by 2 processes and is resumed with 1" in capsys.readouterr().err


def test_run_folder_with_incomplete_best_and_last(finished_run, tmp_path):
    from gadms_cli.model.checkpoint import resolve_checkpoint_dir

    run = copy_run(finished_run, tmp_path)
    (run / "best" / "config.json").unlink()
    (run / "last" / "config.json").unlink()
    with pytest.raises(GadmsError, match=r"best: incomplete checkpoint \(no config\.json\)"):
        resolve_checkpoint_dir(run)


def test_disk_full_while_checkpointing_leaves_no_temporary_folder(sketchpedes, tmp_path, monkeypatch):
    from accelerate import Accelerator

    original = Accelerator.save_state

    def full_disk(self, output_dir=None, **kwargs):
        if output_dir.endswith(".step-4.tmp"):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return original(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    recipe = load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=6", "train.checkpoint_every=2"))
    run = tmp_path / "run"
    with pytest.raises(GadmsError) as info:
        train(recipe, run_dir=run)
    message = str(info.value)
    assert "No space left on device" in message and "temporary folder was removed" in message
    assert f"Last complete checkpoint: {run / 'checkpoints' / 'step-2'}" in message and f"--resume {run}" in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2"]


# --- benchmarks and images --------------------------------------------------------------------


def cuhk_folder(root: Path, records: list[dict], images: dict[str, bytes] | None = None) -> Path:
    """A CUHK-PEDES-format folder written by hand: reid_raw.json + imgs/."""
    import io
    import json

    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "reid_raw.json").write_text(json.dumps(records))
    for record in records:
        target = root / "imgs" / record["file_path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if images and record["file_path"] in images:
            target.write_bytes(images[record["file_path"]])
        elif not target.exists():
            buffer = io.BytesIO()
            Image.new("RGB", (32, 96), (record["id"] * 40 % 255, 90, 160)).save(buffer, "JPEG")
            target.write_bytes(buffer.getvalue())
    return root


def record(pid: int, name: str, split: str = "test", captions=None) -> dict:
    captions = [f"a person in a red coat, photo {name}"] if captions is None else list(captions)
    return {"id": pid, "file_path": name, "split": split, "captions": captions, "processed_tokens": []}


def run_cli(*args: str):
    from typer.testing import CliRunner

    from gadms_cli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def truncated_jpeg() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((64, 192), 60).convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()[:-2000]


def test_truncated_jpeg_is_found_by_decoding_inspect_and_skipped_by_eval(tmp_path):
    records = [record(1, "test/a.jpg"), record(1, "test/b.jpg"), record(2, "test/c.jpg"), record(2, "test/d.jpg")]
    root = cuhk_folder(tmp_path / "bench", records, {"test/c.jpg": truncated_jpeg()})
    assert "no problems found" in run_cli("data", "inspect", root).output  # the cheap check sees a JPEG signature
    decoded = run_cli("data", "inspect", root, "--decode")
    assert decoded.exit_code == 1 and "test/c.jpg (does not decode" in decoded.output
    result = run_cli("eval", "--bench", root, "--model", "gadms-tiny", "--image-size", "96x32", "--skip-missing", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "skipped 1 of 4 images" in result.output and "test/c.jpg (does not decode" in result.output


def test_eval_of_the_test_split_ignores_a_missing_train_image(tmp_path):
    records = [record(1, "test/a.jpg"), record(2, "test/b.jpg"), record(3, "train/x.jpg", "train")]
    root = cuhk_folder(tmp_path / "bench", records)
    (root / "imgs" / "train" / "x.jpg").unlink()
    result = run_cli("eval", "--bench", root, "--model", "gadms-tiny", "--image-size", "96x32", "--workers", 0)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([record(1, "train/a.jpg", "training")], "key 'split' is 'training'; it must be one of train, val, test"),
        ([], "the annotation file holds no records"),
        ([record(1, "test/a\x00.jpg")], "holds a NUL byte"),
    ],
)
def test_bad_annotations_are_one_line(tmp_path, records, message):
    import json

    root = tmp_path / "bench"
    root.mkdir()
    (root / "reid_raw.json").write_text(json.dumps(records))
    (root / "imgs").mkdir()
    result = run_cli("data", "inspect", root)
    assert result.exit_code == 1 and message in result.output
    assert "Traceback" not in result.output


def test_a_record_without_captions_is_reported(tmp_path):
    root = cuhk_folder(tmp_path / "bench", [record(1, "test/a.jpg", captions=()), record(2, "test/b.jpg")])
    result = run_cli("data", "inspect", root)
    assert "1 records have no caption at all (records 0)" in result.output and "no problems found" not in result.output


def test_inspect_on_a_file_that_is_no_dataset(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    result = run_cli("data", "inspect", other)
    assert result.exit_code == 1 and "not a dataset file" in result.output and "no such file" not in result.output


def test_eval_json_to_an_unwritable_place_fails_before_evaluating(tmp_path):
    root = cuhk_folder(tmp_path / "bench", [record(1, "test/a.jpg"), record(2, "test/b.jpg")])
    result = run_cli("eval", "--bench", root, "--model", "gadms-tiny", "--image-size", "96x32", "--json", tmp_path / "nope" / "r.json")
    assert result.exit_code == 1 and "--json" in result.output and "does not exist" in result.output
    assert "R@1" not in result.output  # nothing computed and then lost


# --- retrieval ----------------------------------------------------------------------------------


def test_empty_gallery_is_an_error_and_leaves_no_index_folder(tmp_path):
    gallery = tmp_path / "photos"
    gallery.mkdir()
    (gallery / "notes.txt").write_text("no pictures here")
    result = run_cli("retrieve", "a man", "--gallery", gallery, "--model", "gadms-tiny", "--image-size", "96x32", "--workers", 0)
    assert result.exit_code == 1 and "no image files in it" in result.output
    assert sorted(p.name for p in gallery.iterdir()) == ["notes.txt"]


def test_all_corrupt_gallery_exits_non_zero(tmp_path):
    gallery = tmp_path / "photos"
    gallery.mkdir()
    (gallery / "a.jpg").write_bytes(b"<html>not a picture</html>")
    result = run_cli("retrieve", "a man", "--gallery", gallery, "--model", "gadms-tiny", "--image-size", "96x32", "--workers", 0)
    assert result.exit_code == 1 and "no readable image (1 unreadable)" in result.output


def test_escape_sequences_in_file_names_never_reach_the_terminal(tmp_path):
    from PIL import Image

    gallery = tmp_path / "photos"
    gallery.mkdir()
    Image.new("RGB", (32, 96), (200, 30, 30)).save(gallery / "red\x1b[2Jx.jpg")
    result = run_cli("retrieve", "a man", "--gallery", gallery, "--model", "gadms-tiny", "--image-size", "96x32", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "red\\x1b[2Jx.jpg" in result.output


def test_waiting_for_the_index_lock_is_said(tmp_path, capsys):
    import fcntl
    import threading
    import time

    from gadms_cli.retrieve.gallery_files import exclusive_lock

    folder = tmp_path / "index"
    folder.mkdir()
    holder = open(folder / ".lock", "a+b")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    threading.Timer(0.3, lambda: fcntl.flock(holder.fileno(), fcntl.LOCK_UN)).start()
    started = time.monotonic()
    with exclusive_lock(folder):
        waited = time.monotonic() - started
    holder.close()
    assert waited >= 0.25
    assert f"waiting for another gadms process that is updating the index in {folder}" in capsys.readouterr().err


def test_too_large_image_says_so(tmp_path, capfd):
    from PIL import Image

    from gadms_cli.encode import _ImageFiles

    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1000  # 64 x 64 = 4096 > 2 x 1000: over the decompression-bomb limit
    try:
        index, pixels = _ImageFiles([tmp_path / "big.png"], lambda image: image)[0]
    finally:
        Image.MAX_IMAGE_PIXELS = old
    assert pixels is None and "big.png: image too large, skipped" in capfd.readouterr().err


def test_pretrained_checkpoint_of_another_arch_is_said_and_recorded(finished_run, sketchpedes, tmp_path, capsys):
    import yaml

    recipe = load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=1", "model.arch=gadms-small",
                                          f"model.pretrained={finished_run / 'last'}"))
    result = train(recipe, run_dir=tmp_path / "run")
    assert result.model.config.arch == "gadms-tiny"
    assert "notice: model.pretrained" in capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["model"]["arch"] == "gadms-tiny"


def test_interrupt_prints_the_resume_command(sketchpedes, tmp_path, monkeypatch, capsys):
    original = Trainer.optimizer_step

    def interrupted(self, micro):
        if self.state.step == 2:
            raise KeyboardInterrupt
        return original(self, micro)

    monkeypatch.setattr(Trainer, "optimizer_step", interrupted)
    recipe = load_recipe(QUICKSTART, tiny(sketchpedes, tmp_path, "train.max_steps=6", "train.checkpoint_every=1"))
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(recipe, run_dir=run)
    err = capsys.readouterr().err
    assert f"interrupted at step 2; continue with: gadms pretrain {run / 'recipe.yaml'} --resume {run}" in err
    assert f"from {run / 'checkpoints' / 'step-2'}" in err


def test_an_unreadable_training_image_is_named(tmp_path, capfd):
    from gadms_cli.data.records import TrainSample
    from gadms_cli.data.train_dataset import CaptionedImageDataset

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    dataset = CaptionedImageDataset([TrainSample(pid=0, raw_pid=7, image_index=0, image_path=broken, caption="a man")], transform=lambda image: image, tokenize=lambda texts: texts)
    assert dataset[0] is None
    assert f"unreadable image replaced in its batch: {broken}" in capfd.readouterr().err


def test_readers_count_like_irra_unless_cleaned(tmp_path):
    """7 test records (6 images, one listed twice), 2 captions each, one of them empty: IRRA's
    readers count 14 queries and 7 gallery images; the cleaned view 13 and 6."""
    from gadms_cli.data.benchmarks import load_benchmark

    records = [record(i // 2 + 1, f"test/{i}.jpg", captions=[f"person {i} in red", f"person {i} in blue"]) for i in range(6)]
    records.append(record(1, "test/0.jpg", captions=["person 0 again", ""]))
    root = cuhk_folder(tmp_path / "bench", records)
    irra = load_benchmark(root).eval_split("test")
    assert (len(irra.queries), len(irra.gallery_paths)) == (14, 7)
    clean = load_benchmark(root, clean=True).eval_split("test")
    assert (len(clean.queries), len(clean.gallery_paths)) == (13, 6)
    result = run_cli("eval", "--bench", root, "--model", "gadms-tiny", "--image-size", "96x32", "--workers", 0, "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "as IRRA counts them" in result.output


def test_eval_resize_filter_is_a_flag(tmp_path):
    """--interpolation takes bilinear (the default, IRRA's) and bicubic (CLIP's); an unknown filter is one line."""
    from PIL import Image

    records = [record(1, "test/a.jpg"), record(2, "test/b.jpg")]
    root = cuhk_folder(tmp_path / "bench", records)
    for name in ("a", "b"):
        Image.effect_noise((50, 150), 90).convert("RGB").save(root / "imgs" / "test" / f"{name}.jpg")
    for interpolation in ("bilinear", "bicubic"):
        result = run_cli("eval", "--bench", root, "--model", "gadms-tiny", "--image-size", "96x32", "--workers", 0,
                         "--interpolation", interpolation)
        assert result.exit_code == 0, result.output
    bad = run_cli("eval", "--bench", root, "--model", "gadms-tiny", "--interpolation", "nearest")
    assert bad.exit_code == 1 and "--interpolation nearest: choose bilinear or bicubic" in bad.output
