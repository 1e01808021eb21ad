"""A training run's folder on disk: its name, its full-state checkpoints ``checkpoints/step-N``
(complete when ``trainer_state.json`` is in them; incomplete ones carry hidden temporary names)
and what ``--resume`` points at."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from gadms_cli.errors import GadmsError

STATE_FILE = "trainer_state.json"


def new_run_dir(recipe) -> Path:
    """``<train.output_dir>/<train.run_name>-<time>`` of a recipe."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(recipe.train.output_dir) / f"{recipe.train.run_name}-{stamp}"


def step_of(checkpoint: Path) -> int:
    """N of a ``step-N`` folder."""
    return int(checkpoint.name.split("-", 1)[1])


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """The complete ``step-N`` folders under ``checkpoints_dir``, oldest first (incomplete ones are hidden temp names)."""
    found = [p for p in checkpoints_dir.glob("step-*") if p.name.split("-", 1)[1].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=step_of)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete ``checkpoints/step-N`` of a run."""
    steps = complete_checkpoints(run_dir / "checkpoints")
    return steps[-1] if steps else None


def resolve_resume(resume: str) -> tuple[Path, Path]:
    """``resume`` = a run dir (latest checkpoint) or a ``checkpoints/step-N`` dir -> (run_dir, checkpoint)."""
    path = Path(resume)
    if (path / STATE_FILE).is_file() and path.parent.name == "checkpoints":
        return path.parent.parent, path
    if not (path / "recipe.yaml").is_file():
        raise GadmsError(f"--resume '{resume}': not a run directory (no recipe.yaml); pass runs/<name>-<time>")
    checkpoint = latest_checkpoint(path)
    if checkpoint is None:
        raise GadmsError(f"--resume '{resume}': no complete checkpoint under {path / 'checkpoints'}; start a new run")
    return path, checkpoint
