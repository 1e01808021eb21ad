"""``gadms eval``: text-to-image retrieval metrics of a model on a benchmark (IRRA protocol)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from gadms_cli.commands.common import cli_command, console, err_console, print_load_report

ALL = ("cuhk-pedes", "icfg-pedes", "rstpreid")


def parse_image_size(text: Optional[str], flag: str = "--image-size") -> Optional[tuple[int, int]]:
    """'384x128' -> (384, 128)."""
    from gadms_cli.errors import GadmsError

    if not text:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise GadmsError(f"{flag} '{text}': expected HEIGHTxWIDTH, e.g. 384x128") from None
    if height <= 0 or width <= 0:
        raise GadmsError(f"{flag} '{text}': both sizes must be positive pixel counts")
    return height, width


@cli_command
def eval_command(
    bench: str = typer.Option(..., "--bench", help="cuhk-pedes, icfg-pedes, rstpreid, all, or a benchmark folder (SketchPedes too)."),
    model: Optional[str] = typer.Option(None, "--model", help="Run or checkpoint dir, IRRA-family .pth, weights file, or open_clip architecture. Default: $GADMS_MODEL, then the quickstart's model."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="With an architecture name: open_clip tag (e.g. openai) or local weights file."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture of a plain open_clip weights file given as --model (default ViT-B-16)."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="HEIGHTxWIDTH for an architecture or weights file, e.g. 384x128 (checkpoints keep theirs)."),
    source_image_size: Optional[str] = typer.Option(None, "--source-image-size", help="HEIGHTxWIDTH an IRRA-family .pth was trained at, when its patch grid does not tell (e.g. 384x192)."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: test or val."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Folder holding CUHK-PEDES/, ICFG-PEDES/, RSTPReid/ (default $GADMS_DATA, then ./data)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON to this file."),
    save_ranking: Optional[Path] = typer.Option(None, "--save-ranking", help="Write every query's top-k gallery items (JSON lines)."),
    top_k: int = typer.Option(10, "--top-k", help="How many gallery items --save-ranking keeps per query."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per encoding batch."),
    workers: int = typer.Option(2, "--workers", help="Image decoding processes."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Leave out gallery images that are missing or unreadable."),
    interpolation: str = typer.Option("bilinear", "--interpolation", help="Resize filter: bilinear (IRRA, the public GA-DMS code) or bicubic (CLIP)."),
    clean_annotations: bool = typer.Option(
        False, "--clean-annotations", help="Merge repeated image records and drop empty captions (default: count them as IRRA does)."
    ),
) -> None:
    """Evaluate text-to-image retrieval (R@1/5/10, mAP, mINP) exactly as the field does."""
    import torch
    from rich.table import Table

    from gadms_cli.data.benchmark_files import resolve_benchmark
    from gadms_cli.evaluate import evaluate_benchmark
    from gadms_cli.fileio import atomic_write, require_writable
    from gadms_cli.model.resolve import load_model

    from gadms_cli.errors import GadmsError

    if interpolation not in ("bilinear", "bicubic"):
        raise GadmsError(f"--interpolation {interpolation}: choose bilinear or bicubic")
    for flag, target in (("--json", json_out), ("--save-ranking", save_ranking)):
        if target:
            require_writable(target, flag)
    names = list(ALL) if bench.strip().lower() == "all" else [bench]
    roots = [resolve_benchmark(name, data_root) for name in names]  # fail before loading a model
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = load_model(
        model, pretrained=pretrained, arch=arch, image_size=parse_image_size(image_size), device=device,
        source_image_size=parse_image_size(source_image_size, "--source-image-size"),
    )
    print_load_report(net)
    results = []
    for name, root in zip(names, roots):
        results.append(
            evaluate_benchmark(
                net, root, split, skip_missing=skip_missing, image_batch_size=batch_size, num_workers=workers,
                ranking_k=top_k if save_ranking else 0, name=name.lower() if name.lower() in ALL else None,
                clean=clean_annotations, interpolation=interpolation,
            )
        )
    table = Table(title=f"text-to-image retrieval ({split} split)")
    for column in ("benchmark", "R@1", "R@5", "R@10", "mAP", "mINP", "queries", "gallery"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    for r in results:
        table.add_row(r["bench"], *(f"{r[k]:.2f}" for k in ("R1", "R5", "R10", "mAP", "mINP")), str(r["queries"]), str(r["gallery"]))
    console.print(table)
    for r in results:
        for problem in r["problems"]:
            err_console.print(f"warning: {r['bench']}: {problem}", markup=False, highlight=False, soft_wrap=True)
    rankings = [r.pop("ranking", None) for r in results]
    if json_out:
        with atomic_write(json_out) as handle:
            json.dump(results[0] if len(results) == 1 else results, handle, indent=1)
        console.print(f"results: {json_out}")
    if save_ranking:
        with atomic_write(save_ranking) as handle:
            for result, ranking in zip(results, rankings):
                for line in ranking or []:
                    handle.write(json.dumps({"bench": result["bench"], **line}) + "\n")
        console.print(f"rankings: {save_ranking}")
