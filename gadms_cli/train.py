"""One training loop, on HuggingFace Accelerate, for ``gadms pretrain`` and ``gadms finetune``.

The same code runs one process on a laptop or many under ``accelerate launch``
/ ``torchrun``. What happens, in order:

1. the run directory is made (or found again with ``resume``) and the resolved recipe saved;
2. data: a benchmark folder gives identity-balanced P x K batches (each process
   takes its slice of every global batch, so SDM's all-gather sees the global
   batch); a WebPerson source is streamed (one identity per image, both captions
   in the same batch);
3. model, objective (``gadms``, ``irra`` or ``clip``), optimiser and per-step
   warm-up + cosine schedule;
4. the loop: gradient accumulation, clipping, a NaN/inf guard, logging
   (rich progress, TensorBoard, ``metrics.jsonl``), validation on the VALIDATION
   split (never test) with ``best/`` and ``last/`` model checkpoints, and full-state
   checkpoints every N steps that ``resume`` continues from exactly.

Only the main process writes run files (Accelerate's state saving also writes one
small RNG file per process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from safetensors.torch import load_file, save_file

from gadms_cli import progress
from gadms_cli.errors import GadmsError, one_line_reason
from gadms_cli.fileio import atomic_write
from gadms_cli.data.train_data import TrainData
from gadms_cli.launch_check import launch_mismatch
from gadms_cli.data.attribute_phrases import HEAD_KEYS
from gadms_cli.optim import build_optimizer, build_scheduler
from gadms_cli.recipe import Recipe, dump_recipe, load_recipe
from gadms_cli.run_dir import STATE_FILE, complete_checkpoints, latest_checkpoint, new_run_dir, resolve_resume, step_of

TABLE_FILE = "score_table.safetensors"


@dataclass
class TrainerState:
    """Where the loop stands; saved as JSON next to Accelerate's state."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches of `epoch` already consumed
    best_metric: float | None = None  # validation R1 of best/
    best_step: int | None = None
    skipped_images: int = 0
    samples_seen: int = 0
    train_seconds: float = 0.0
    scheduler: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :func:`train` returns: where the run is, how it ended, and the trained model."""

    run_dir: Path
    state: TrainerState
    last_metrics: dict | None  # the last validation metrics, if any
    stopped_because: str  # finished | max_steps | time limit | stop_after
    model: object = None  # the trained PersonCLIP (unwrapped, on the training device)
    score_table: torch.Tensor | None = None  # the cached GA-score table (uint8), if the method keeps one


# --- model ---------------------------------------------------------------------


def uses_mtp(method) -> bool:
    """Whether the objective needs the cross-modal MTP decoder."""
    return method.name == "irra" or (method.name == "gadms" and method.mtp)


# --- data ------------------------------------------------------------------------


def build_train_data(recipe: Recipe, accelerator: Accelerator, tokenize, image_size) -> TrainData:
    from gadms_cli.data.transforms import train_transform

    transform = train_transform(image_size, recipe.data.augment)  # caption dropout is applied by the datasets
    if recipe.data.kind == "benchmark":
        from gadms_cli.data.benchmark_training import benchmark_train_data

        return benchmark_train_data(recipe, accelerator, tokenize, transform, image_size)
    if recipe.method.token_score == "oracle":
        raise GadmsError("method.token_score 'oracle' reads SketchPedes' record of its corrupted words; "
                         "it needs data.kind: benchmark on a 'gadms synth' folder (use ga, similarity or random here)")
    from gadms_cli.data.webperson_training import webperson_train_data

    return webperson_train_data(recipe, accelerator, tokenize, transform, image_size)


# --- the loop --------------------------------------------------------------------


def _json_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


class Trainer:
    """Owns the model, optimiser, data and run directory of one training run.

    Built by :func:`train`; ``run()`` trains until the recipe's epochs (or
    ``train.max_steps`` / ``train.max_minutes``) are done.
    """

    def __init__(self, recipe: Recipe, run_dir: Path, accelerator: Accelerator, checkpoint: Path | None = None) -> None:
        from gadms_cli.data.transforms import eval_transform
        from gadms_cli.gadms.objective import RetrievalObjective
        from gadms_cli.model.factory import create_person_clip
        from gadms_cli.model.tokenizer import Tokenizer

        self.recipe, self.run_dir, self.accelerator = recipe, run_dir, accelerator
        self.main = accelerator.is_main_process
        set_seed(recipe.train.seed)
        with accelerator.main_process_first():  # the main process downloads weights first
            model = create_person_clip(recipe.model, with_mtp=uses_mtp(recipe.method), num_classes=None)
        # The saved config states the temperature this run trains at (the quickstart's 10, the paper's 50).
        model.config.logit_scale = model.logit_scale = float(recipe.method.logit_scale)
        self._record_real_model(model)
        report = getattr(model, "load_report", None)
        if self.main and report is not None and report.kind != "random init":
            for line in report.lines():  # what the start weights filled, for finetune and pretrain alike
                print(f"weights: {line}", file=sys.stderr)
        self.tokenize = Tokenizer(model.config.context_length)
        self.eval_transform = eval_transform(tuple(model.config.image_size))
        self.data = build_train_data(recipe, accelerator, self.tokenize, tuple(model.config.image_size))
        if recipe.method.id_loss:
            model.add_classifier(self.data.num_ids)
        if recipe.method.attribute_weight > 0:
            model.add_attribute_head(len(HEAD_KEYS))
        objective = RetrievalObjective(model, recipe.method, num_captions=self.data.num_captions)

        full = recipe.train.epochs * self.data.steps_per_epoch
        self.total_steps = min(full, recipe.train.max_steps) if recipe.train.max_steps is not None else full
        optimizer = build_optimizer(model, recipe.optim)
        # The scheduler is stepped by hand once per optimiser step (not prepared: Accelerate
        # would step it once per process) and saved in our trainer state.
        # Training seconds on the main process's clock, set after each optimiser step when
        # train.max_minutes is set: the time limit and train.time_schedule both read it.
        self.clock_seconds = 0.0
        time_share = None
        if recipe.train.time_schedule:  # validate() ensures max_minutes is set
            budget = recipe.train.max_minutes * 60
            time_share = lambda: min(1.0, self.clock_seconds / budget)  # noqa: E731
        self.scheduler = build_scheduler(optimizer, recipe.optim, self.total_steps, self.data.steps_per_epoch, time_share)
        self.objective, self.optimizer = accelerator.prepare(objective, optimizer)
        self.state = TrainerState()
        self.validated_at: int | None = None
        if checkpoint is not None:
            self._load_state(checkpoint)
        if self.main:
            accelerator.init_trackers("tensorboard")

    # --- pieces -------------------------------------------------------------------

    def _record_real_model(self, model) -> None:
        """When ``model.pretrained`` is a checkpoint of another architecture (or decoder depth), that
        checkpoint's model is what trains: say so, and save its values in recipe.yaml."""
        wanted = self.recipe.model
        real = {"arch": model.config.arch}
        if model.mtp is not None:
            real["decoder_layers"] = model.config.decoder_layers
        changed = {key: value for key, value in real.items() if getattr(wanted, key) != value}
        if not changed or not wanted.pretrained:
            return
        self.recipe = dataclasses.replace(self.recipe, model=dataclasses.replace(wanted, **changed))
        if self.main:
            said = ", ".join(f"model.{key} {getattr(wanted, key)!r} -> {value!r}" for key, value in changed.items())
            print(f"notice: model.pretrained {wanted.pretrained} sets {said}; recipe.yaml records the values trained", file=sys.stderr)
            with atomic_write(self.run_dir / "recipe.yaml") as handle:
                handle.write(dump_recipe(self.recipe))

    @property
    def model(self):
        """The PersonCLIP, unwrapped from DDP."""
        return self.accelerator.unwrap_model(self.objective).model

    def _load_state(self, checkpoint: Path) -> None:
        """Restore a full-state checkpoint; any unreadable part is one line naming it and an earlier checkpoint."""
        from accelerate.utils import load as accelerate_load

        acc = self.accelerator
        earlier = [p for p in complete_checkpoints(checkpoint.parent) if step_of(p) < step_of(checkpoint)]
        hint = f"resume from an earlier one: --resume {earlier[-1]}" if earlier else "no earlier checkpoint to fall back on"
        saved_by = len(list(checkpoint.glob("random_states_*.pkl")))
        if saved_by and saved_by != acc.num_processes and self.main:
            print(
                f"warning: {checkpoint} was saved by {saved_by} processes and is resumed with {acc.num_processes}: "
                "training continues, but not exactly as an uninterrupted run (same process count for that)",
                file=sys.stderr,
            )
        rng = checkpoint / f"random_states_{acc.process_index}.pkl"
        try:
            accelerate_load(rng)  # accelerate would skip an unreadable one with a log line only
        except Exception as error:  # noqa: BLE001 - any failure means exact resume is lost
            raise GadmsError(f"{rng}: unreadable ({one_line_reason(error)}); exact resume needs it; {hint}") from None
        try:
            acc.load_state(str(checkpoint))
        except Exception as error:  # noqa: BLE001 - refused pickles, truncated files, wrong shapes
            raise GadmsError(f"{checkpoint}: cannot be restored ({one_line_reason(error)}); {hint}") from None
        self.state = TrainerState(**json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8")))
        self.scheduler.load_state_dict(self.state.scheduler)
        table = checkpoint / TABLE_FILE
        if table.is_file():
            self.accelerator.unwrap_model(self.objective).load_table(load_file(str(table)))

    def nonfinite_tensors(self) -> int:
        """How many parameter and optimiser-state tensors hold a NaN or an infinity."""
        tensors = [p.detach() for p in self.objective.parameters()]
        for per_param in self.optimizer.state.values():
            tensors += [v for v in per_param.values() if torch.is_tensor(v) and v.is_floating_point()]
        return sum(int(not torch.isfinite(t).all()) for t in tensors)

    def require_finite(self, before: str) -> None:
        """Stop with one line when weights went non-finite (a finite loss does not rule that out).
        Called before every checkpoint and every validation, so each saved checkpoint is good."""
        bad = self.nonfinite_tensors()
        if bad:
            raise GadmsError(
                f"{bad} weight or optimiser tensors became NaN or infinite by step {self.state.step}; stopped before "
                f"{before}. Last good checkpoint: {latest_checkpoint(self.run_dir) or 'none yet'}; "
                "lower optim.lr or set optim.grad_clip (e.g. 1.0)"
            )

    def save_state(self) -> Path:
        """Accelerate state + trainer state + score table -> checkpoints/step-N, renamed into place when complete."""
        self.require_finite(f"saving checkpoints/step-{self.state.step}")
        state, acc = self.state, self.accelerator
        final = self.run_dir / "checkpoints" / f"step-{state.step}"
        tmp = self.run_dir / "checkpoints" / f".step-{state.step}.tmp"
        state.scheduler = self.scheduler.state_dict()
        if self.main and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp))
            if self.main:
                table = acc.unwrap_model(self.objective).table_state()
                if table:
                    save_file(table, str(tmp / TABLE_FILE))
                with atomic_write(tmp / STATE_FILE) as handle:
                    json.dump(asdict(state), handle, indent=1)
        except (OSError, RuntimeError) as error:  # disk full, quota, permissions (torch.save raises RuntimeError)
            shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written folder filling the disk
            raise GadmsError(
                f"{final}: could not write the checkpoint ({one_line_reason(error)}); its temporary folder was removed. "
                f"Last complete checkpoint: {latest_checkpoint(self.run_dir) or 'none yet'}; free disk space, then --resume {self.run_dir}"
            ) from None
        if self.main:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        acc.wait_for_everyone()
        return final

    def log(self, metrics: dict, split: str) -> None:
        """One line in metrics.jsonl and the TensorBoard scalars (main process only)."""
        if not self.main:
            return
        _json_line(self.run_dir / "metrics.jsonl", {"step": self.state.step, "epoch": self.state.epoch, "split": split, **metrics})
        scalars = {f"{split}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.accelerator.log(scalars, step=self.state.step)

    def validate(self) -> dict | None:
        """Metrics on the validation split (main process), best/ and last/ model checkpoints."""
        from gadms_cli.evaluate import evaluate_split
        from gadms_cli.model.checkpoint import save_checkpoint

        if self.data.val is None or self.validated_at == self.state.step:
            return None
        self.require_finite("validating and saving best/ and last/")
        self.validated_at = self.state.step
        metrics = None
        if self.main:
            metrics = evaluate_split(self.model, self.data.val, self.tokenize, self.eval_transform)
            self.log(metrics, "val")
            save_checkpoint(self.model, self.run_dir / "last", recipe=self.recipe, metrics=metrics, step=self.state.step)
            if self.state.best_metric is None or metrics["R1"] > self.state.best_metric:
                self.state.best_metric, self.state.best_step = metrics["R1"], self.state.step
                save_checkpoint(self.model, self.run_dir / "best", recipe=self.recipe, metrics=metrics, step=self.state.step)
        box = [metrics, self.state.best_metric, self.state.best_step]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(box)
        metrics, self.state.best_metric, self.state.best_step = box
        return metrics

    def _stop(self, message: str, value: float) -> None:
        raise GadmsError(
            f"{message} became {value} at step {self.state.step + 1}; stopped. Last good checkpoint: "
            f"{latest_checkpoint(self.run_dir) or 'none yet'}; lower optim.lr or set train.mixed_precision=no"
        )

    def optimizer_step(self, micro: list[dict]) -> dict[str, float]:
        """Forward/backward over the accumulation group, clip, step. Returns the group's mean numbers."""
        acc, sums = self.accelerator, {}
        for i, batch in enumerate(micro):
            self.state.skipped_images += batch.pop("skipped", 0)
            batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
            last = i == len(micro) - 1
            with (contextlib.nullcontext() if last else acc.no_sync(self.objective)):
                with acc.autocast():
                    out = self.objective(batch)
                loss = out["loss"]
                if not torch.isfinite(loss.detach()):
                    self._stop("the loss", float(loss.detach()))
                acc.backward(loss / len(micro))
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / len(micro)
        if self.recipe.optim.grad_clip:
            norm = acc.clip_grad_norm_(self.objective.parameters(), self.recipe.optim.grad_clip)
            if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                self._stop("the gradient norm", float(norm))
        self.optimizer.step()
        if self.recipe.train.max_minutes is not None:
            # one clock for all processes, so they stop at the same step and set the same lr
            seconds = [time.monotonic() - self.run_started]
            if acc.num_processes > 1:
                broadcast_object_list(seconds)
            self.clock_seconds = seconds[0]
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sums

    # --- the loop -----------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train to the end (or ``stop_after`` optimiser steps, as if killed there after a checkpoint)."""
        recipe, state, data = self.recipe, self.state, self.data
        accum, train_cfg = recipe.train.grad_accumulation, recipe.train
        started = time.monotonic() - state.train_seconds
        self.run_started = started
        stopped, last_metrics = "finished", None
        window_start, window_samples = time.monotonic(), 0
        batches = data.batches(state.epoch, state.batch_in_epoch)
        self.objective.train()
        bar = progress.make_progress(transient=False)
        task = bar.add_task("training", total=self.total_steps, completed=state.step, info="")
        with bar:
            while state.step < self.total_steps:
                if stop_after is not None and state.step >= stop_after:
                    stopped = "stop_after"
                    break
                micro = [b for b in (next(batches, None) for _ in range(accum)) if b is not None]
                if len(micro) < accum:  # end of epoch; a partial accumulation group is dropped
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                    if not train_cfg.eval_every:
                        last_metrics = self.validate() or last_metrics
                    if state.epoch >= train_cfg.epochs:
                        break
                    batches = data.batches(state.epoch, 0)
                    continue
                sums = self.optimizer_step(micro)
                state.step += 1
                state.batch_in_epoch += accum
                state.samples_seen += train_cfg.batch_size
                state.train_seconds = time.monotonic() - started
                window_samples += train_cfg.batch_size
                info = ""
                if state.step % train_cfg.log_every == 0 or state.step == self.total_steps:
                    elapsed = time.monotonic() - window_start
                    rate = window_samples / elapsed if elapsed > 0 else 0.0
                    window_start, window_samples = time.monotonic(), 0
                    self.log({**sums, "lr": self.scheduler.get_last_lr()[0], "samples_per_s": rate}, "train")
                    info = f"loss {sums['loss']:.3f}  lr {self.scheduler.get_last_lr()[0]:.1e}  {rate:.0f} samples/s"
                bar.update(task, completed=state.step, **({"info": info} if info else {}))
                if train_cfg.eval_every and state.step % train_cfg.eval_every == 0:
                    last_metrics = self.validate() or last_metrics
                if train_cfg.checkpoint_every and state.step % train_cfg.checkpoint_every == 0:
                    self.save_state()
                if train_cfg.max_minutes is not None and self.clock_seconds > train_cfg.max_minutes * 60:
                    stopped = "time limit"
                    break
        if stopped == "finished" and state.step < train_cfg.epochs * data.steps_per_epoch:
            stopped = "max_steps"
        if stopped != "stop_after":
            last_metrics = self.validate() or last_metrics
            if data.val is None and self.main:
                from gadms_cli.model.checkpoint import save_checkpoint

                self.require_finite("saving last/")
                save_checkpoint(self.model, self.run_dir / "last", recipe=recipe, metrics=None, step=state.step)
        if latest_checkpoint(self.run_dir) != self.run_dir / "checkpoints" / f"step-{state.step}":
            self.save_state()
        self.accelerator.end_training()
        table = self.accelerator.unwrap_model(self.objective).table_state().get("scores")
        return TrainResult(self.run_dir, state, last_metrics, stopped, model=self.model, score_table=table)


def train(
    recipe: Recipe | None = None,
    *,
    resume: str | Path | None = None,
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    expected_processes: int | None = None,
    cpu: bool = False,
    stop_after: int | None = None,
) -> TrainResult:
    """Run a recipe, or resume a run (``resume`` = run dir or checkpoint dir; ``overrides``
    then apply to the run's saved recipe, e.g. ``train.max_minutes``)."""
    checkpoint: Path | None = None
    if resume:
        resumed_dir, checkpoint = resolve_resume(str(resume))
        recipe = load_recipe(resumed_dir / "recipe.yaml", overrides)
        run_dir = resumed_dir
    elif recipe is None:
        raise ValueError("train() needs a recipe or resume")

    use_cpu = cpu or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not torch.cuda.is_available()
    # bf16 autocast works on CPU; fp16 needs a GPU.
    mixed = "no" if use_cpu and recipe.train.mixed_precision == "fp16" else recipe.train.mixed_precision
    launch = PartialState(cpu=use_cpu)
    mismatch = launch_mismatch(launch.num_processes, expected_processes)
    if mismatch:
        raise GadmsError(mismatch)
    names = [str(run_dir or new_run_dir(recipe))]  # every process must agree: the main one names it
    if launch.num_processes > 1:
        broadcast_object_list(names)
    run_dir = Path(names[0])
    created = not run_dir.exists()
    if launch.is_main_process:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        with atomic_write(run_dir / "recipe.yaml") as handle:
            handle.write(dump_recipe(recipe))
    launch.wait_for_everyone()
    accelerator = Accelerator(
        mixed_precision=mixed,
        cpu=use_cpu,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
    )
    try:
        trainer = Trainer(recipe, run_dir, accelerator, checkpoint)
    except BaseException:
        if created and launch.is_main_process:  # a new run that could not start leaves nothing behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        return trainer.run(stop_after=stop_after)
    except KeyboardInterrupt:
        if launch.is_main_process:
            last = latest_checkpoint(run_dir)
            print(
                f"interrupted at step {trainer.state.step}; continue with: gadms pretrain {run_dir / 'recipe.yaml'} --resume {run_dir} "
                f"(or finetune; from {last or 'the start: no checkpoint yet'})",
                file=sys.stderr,
            )
        raise
