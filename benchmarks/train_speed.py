"""Seconds per optimiser step of the quickstart's stage 1 (recipe ``sketchpedes-base`` with the
quickstart's short-query options) under recipe overrides, measured side by side.

Each setting trains ``--steps`` steps, ``--repeats`` times, the settings interleaved (A B A B ...)
so that a machine whose speed drifts (shared cores, CPU steal) affects all of them alike; the
first ``--skip`` steps of every run (start-up, first batches) are left out of its figure. Prints
the median s/step of each setting and its ratio to the first one.

    python benchmarks/train_speed.py --sketchpedes gadms-quickstart/base-sketchpedes \
        --setting data.num_workers=1 --setting data.num_workers=0
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: see cli.py

import argparse  # noqa: E402
import re  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gadms_cli.errors import GadmsError  # noqa: E402


def seconds_per_step(data: Path, overrides: list[str], steps: int, skip: int) -> float:
    """Train ``steps`` steps of the quickstart's stage 1 on ``data``; seconds per step after ``skip``."""
    from accelerate.state import AcceleratorState

    from gadms_cli.commands.quickstart import short_query_overrides
    from gadms_cli.recipe import load_recipe
    from gadms_cli.train import train

    short_query = short_query_overrides(load_recipe("quickstart").method)
    with tempfile.TemporaryDirectory() as out:
        recipe = load_recipe("sketchpedes-base", [
            f"data.path={data}", f"train.output_dir={out}", f"train.max_steps={steps}", "train.eval_every=0",
            "train.checkpoint_every=0", "train.log_every=1", *short_query, *overrides,
        ])
        AcceleratorState._reset_state(True)
        result = train(recipe)
        AcceleratorState._reset_state(True)
        # With log_every=1 each train line's samples_per_s is one step's batch over that step's time.
        lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        step_seconds = [recipe.train.batch_size / line["samples_per_s"] for line in lines if line["split"] == "train"]
    if len(step_seconds) <= skip:
        raise GadmsError(f"--steps {steps} leaves no steps to time after --skip {skip}")
    return statistics.fmean(step_seconds[skip:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sketchpedes", type=Path, required=True, help="a SketchPedes folder (e.g. the quickstart's base-sketchpedes)")
    parser.add_argument("--setting", action="append", required=True, metavar="KEY=VALUE[,KEY=VALUE]",
                        help="one setting to time: recipe overrides separated by commas (repeat for each setting; the first is the reference)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--skip", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not (args.sketchpedes / "reid_raw.json").is_file():
        sys.exit(f"error: --sketchpedes {args.sketchpedes}: no reid_raw.json; pass a folder written by 'gadms synth'")
    # commas inside [...] belong to a list value (model.image_size=[144,48])
    settings = [[item for item in re.split(r",(?![^\[]*\])", setting) if item] for setting in args.setting]
    figures: list[list[float]] = [[] for _ in settings]
    try:
        for repeat in range(args.repeats):
            for index, overrides in enumerate(settings):
                started = time.monotonic()
                figures[index].append(seconds_per_step(args.sketchpedes, overrides, args.steps, args.skip))
                print(f"repeat {repeat + 1}, {args.setting[index]}: {figures[index][-1]:.4f} s/step "
                      f"({time.monotonic() - started:.0f} s wall)", flush=True)
    except GadmsError as error:
        sys.exit(f"error: {error}")
    reference = statistics.median(figures[0])
    print(f"\nmedian s/step over {args.repeats} interleaved runs of {args.steps} steps (first {args.skip} left out):")
    for name, values in zip(args.setting, figures):
        median = statistics.median(values)
        print(f"  {name:40s} {median:.4f} s/step   ratio to the first {median / reference:.3f}   runs {', '.join(f'{v:.4f}' for v in values)}")


if __name__ == "__main__":
    main()
