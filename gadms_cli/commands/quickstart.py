"""``gadms quickstart``: the offline end-to-end demo on 2 CPU cores.

SketchPedes with caption noise -> GA-DMS pretraining of the tiny ``gadms-small`` model
(the shipped ``quickstart`` recipe) -> evaluation on the test split -> a search of the
test gallery with a sentence, written as an HTML report. Everything lands in one
folder; running it again reuses what is there unless ``--fresh``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import List, Optional

import typer

from gadms_cli.commands.common import cli_command, console

QUERY = "a woman wearing a red coat"
TEST_IDS = 100  # chance R@1 is about 1 / TEST_IDS


def _copy_atomically(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


@cli_command
def quickstart(
    folder: Path = typer.Option(Path("gadms-quickstart"), "--dir", help="Where the demo writes everything."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over: delete the folder's data, run and model first."),
    minutes: Optional[float] = typer.Option(
        None, "--minutes", help="Training time cap in minutes (default: the recipe's train.max_minutes, 4)."
    ),
    train_ids: int = typer.Option(800, "--train-ids", help="SketchPedes training identities (4 images each)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a value of the quickstart recipe (repeatable)."),
) -> None:
    """The offline end-to-end demo: synth data, GA-DMS pretraining, evaluation, search."""
    from accelerate.state import AcceleratorState

    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
    from gadms_cli.evaluate import evaluate_benchmark
    from gadms_cli.fileio import atomic_write
    from gadms_cli.model.checkpoint import load_checkpoint
    from gadms_cli.recipe import load_recipe
    from gadms_cli.train import train

    started = time.monotonic()
    data_dir, model_dir = folder / "sketchpedes", folder / "model"
    if fresh:
        for path in (data_dir, model_dir, folder / "runs"):
            shutil.rmtree(path, ignore_errors=True)

    console.rule("[bold]1/4  SketchPedes (synthetic pedestrians, 30% noisy training captions)")
    if (data_dir / "reid_raw.json").is_file():
        console.print(f"reusing {data_dir}")
    else:
        summary = generate_sketchpedes(
            data_dir, SynthConfig(train_ids=train_ids, val_ids=50, test_ids=TEST_IDS, images_per_id=4, height=192, width=64, noise=0.3)
        )
        console.print(f"{summary.images:,} images in {summary.seconds:.0f} s -> {data_dir}")

    console.rule("[bold]2/4  GA-DMS pretraining of a small CLIP (recipe: quickstart)")
    if (model_dir / "config.json").is_file():
        console.print(f"reusing the model in {model_dir} (--fresh retrains)")
    else:
        cap = [] if minutes is None else [f"train.max_minutes={minutes}"]
        recipe = load_recipe("quickstart", [f"data.path={data_dir}", f"train.output_dir={folder / 'runs'}", *cap, *overrides])
        result = train(recipe)
        AcceleratorState._reset_state(True)
        best = result.run_dir / "best" if (result.run_dir / "best").is_dir() else result.run_dir / "last"
        _copy_atomically(best, model_dir)
        console.print(f"run: {result.run_dir}  ({result.state.step} steps, {result.state.train_seconds / 60:.1f} min)")

    console.rule("[bold]3/4  Evaluation on the SketchPedes test split")
    model = load_checkpoint(model_dir).eval()
    metrics = evaluate_benchmark(model, data_dir, "test", name="sketchpedes")
    with atomic_write(folder / "eval.json") as handle:
        json.dump(metrics, handle, indent=1)
    console.print(
        "text-to-image  " + "  ".join(f"{k.replace('R', 'R@')} {metrics[k]:.1f}" if k.startswith("R") else f"{k} {metrics[k]:.1f}"
                                     for k in ("R1", "R5", "R10", "mAP", "mINP"))
        + f"   ({metrics['queries']} queries, {metrics['gallery']} images; chance R@1 about {100 / TEST_IDS:.0f}%)"
    )

    console.rule(f"[bold]4/4  Search: \"{QUERY}\"")
    html = _search(model_dir, data_dir / "imgs" / "test", folder)

    console.rule("[bold]done")
    console.print(f"quickstart took {(time.monotonic() - started) / 60:.1f} min. Everything is in {folder}/:")
    console.print(f"  data   {data_dir}   (reid_raw.json in CUHK-PEDES format, attributes.jsonl)")
    console.print(f"  model  {model_dir}   (safetensors + config.json)")
    console.print(f"  eval   {folder / 'eval.json'}")
    if html:
        console.print(f"  search {html}")
    console.print("next:")
    console.print(f"  gadms retrieve \"man with a black backpack\" --gallery {data_dir / 'imgs' / 'test'} --model {model_dir} --explain")
    console.print(f"  gadms eval --bench {data_dir} --model {model_dir} --split val")
    console.print(f"  gadms pretrain quickstart --set data.path={data_dir} --set method.name=clip   # the baseline without GA-DMS")


def _search(model_dir: Path, gallery: Path, folder: Path) -> Path:
    """Search the test gallery with :data:`QUERY`, print the top 5 with the explanation, write an HTML report."""
    from gadms_cli.retrieve import Retriever
    from gadms_cli.retrieve.report import explanation_text, results_payload, results_table, write_html

    retriever = Retriever(str(model_dir), num_workers=0)
    report = retriever.index(gallery, index_dir=folder / "index")
    result = retriever.search(QUERY, top_k=10, explain=True)
    console.print(results_table(result))
    if result.explanation is not None:
        console.print(explanation_text(result.explanation))
    payload = results_payload(
        [result], gallery=gallery, model=str(model_dir), fingerprint=retriever.fingerprint,
        index_report=report, backend="exact", top_k=10,
    )
    html = folder / "search.html"
    write_html(html, payload)
    return html
