"""``gadms pretrain`` and ``gadms finetune``: run a recipe with the shared training loop."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from gadms_cli.commands.common import cli_command, console

RECIPE_ARG = typer.Argument(..., help="Recipe YAML file, e.g. recipes/webperson.yaml (ignored with --resume).")
SET_OPT = typer.Option([], "--set", help="Override a recipe value: --set train.epochs=10 (repeatable).")
RESUME_OPT = typer.Option(
    None,
    "--resume",
    help="Continue a run: its directory (latest checkpoint) or a checkpoints/step-N directory; "
    "--set then changes the run's saved recipe (e.g. train.max_minutes).",
)
PROCESSES_OPT = typer.Option(
    None, "--processes", help="Expected number of processes; stop if the launcher started another number."
)
CPU_OPT = typer.Option(False, "--cpu", help="Train on CPU even when a GPU is present.")


def _run(command: str, recipe_path: Path, overrides: list[str], resume: Optional[str], processes: Optional[int], cpu: bool) -> None:
    from gadms_cli.errors import GadmsError
    from gadms_cli.recipe import load_recipe
    from gadms_cli.train import train

    recipe = None
    if not resume:
        recipe = load_recipe(recipe_path, overrides)
        if command == "finetune" and recipe.data.kind != "benchmark":
            raise GadmsError(f"{recipe_path}: 'data.kind' must be 'benchmark' for finetune (got '{recipe.data.kind}'); use gadms pretrain")
    result = train(recipe, resume=resume, overrides=overrides if resume else None, expected_processes=processes, cpu=cpu)
    from accelerate.state import PartialState

    if not PartialState().is_main_process:
        return
    state = result.state
    console.print(f"[bold]{command}[/] {result.stopped_because} after {state.step} steps ({state.train_seconds / 60:.1f} min)")
    if state.skipped_images:
        console.print(f"[yellow]warning:[/] {state.skipped_images} unreadable images were replaced by others in their batch")
    if result.last_metrics:
        m = result.last_metrics
        console.print(
            "validation: " + "  ".join(f"{k} {m[k]:.2f}" for k in ("R1", "R5", "R10", "mAP", "mINP") if k in m)
        )
    console.print(f"run directory: {result.run_dir}")
    best = result.run_dir / "best"
    target = best if best.is_dir() else result.run_dir / "last"
    console.print(f"next: gadms eval --bench <folder> --model {target}")


@cli_command
def pretrain(
    recipe: Path = RECIPE_ARG,
    overrides: List[str] = SET_OPT,
    resume: Optional[str] = RESUME_OPT,
    processes: Optional[int] = PROCESSES_OPT,
    cpu: bool = CPU_OPT,
) -> None:
    """GA-DMS pretraining from a recipe (WebPerson or any benchmark-format folder)."""
    _run("pretrain", recipe, overrides, resume, processes, cpu)


@cli_command
def finetune(
    recipe: Path = RECIPE_ARG,
    overrides: List[str] = SET_OPT,
    resume: Optional[str] = RESUME_OPT,
    processes: Optional[int] = PROCESSES_OPT,
    cpu: bool = CPU_OPT,
) -> None:
    """Fine-tune on CUHK-PEDES, ICFG-PEDES, RSTPReid (or SketchPedes) from a recipe."""
    _run("finetune", recipe, overrides, resume, processes, cpu)
