"""``gadms synth``: generate the SketchPedes synthetic benchmark.

A thin layer over :func:`gadms_cli.data.synth.generate_sketchpedes`: parse the
options, run the generator with a progress bar, print a short summary.
The defaults make the quick-demo set (800/50/100 identities x 4 images at
384x128, about 3,800 images, ~15 s on one core).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from gadms_cli.commands.common import cli_command, console


@cli_command
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write (must be empty or new, unless --overwrite)."),
    train_ids: int = typer.Option(800, "--train-ids", min=0, help="Identities in the train split."),
    val_ids: int = typer.Option(50, "--val-ids", min=0, help="Identities in the val split."),
    test_ids: int = typer.Option(100, "--test-ids", min=0, help="Identities in the test split."),
    images_per_id: int = typer.Option(4, "--images-per-id", min=1, help="Images drawn per identity."),
    height: int = typer.Option(384, "--height", help="Image height in pixels."),
    width: int = typer.Option(128, "--width", help="Image width in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives byte-identical files."),
    noise: float = typer.Option(0.0, "--noise", help="Fraction of TRAIN captions corrupted like web captions (0..1); val/test stay clean."),
    workers: int = typer.Option(1, "--workers", min=1, help="Processes drawing images in parallel (output is identical for any count)."),
    caption_mix: str = typer.Option("full=1", "--caption-mix", help="How often a TRAIN caption is full (whole outfit), partial (3-5 attributes) or short (a query-like 2-3), e.g. full=0.5,partial=0.3,short=0.2; val/test captions are full."),
    twin_fraction: float = typer.Option(0.0, "--twin-fraction", help="Fraction of identities that wear an earlier identity's clothes and differ only in gender, hair, hat or bag (0..1)."),
    test_include: str = typer.Option("", "--test-include", help="Attributes the first --test-include-count test identities must have, e.g. gender=female,top.type=coat,top.colour=red."),
    test_include_count: int = typer.Option(3, "--test-include-count", help="How many test identities --test-include applies to."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier SketchPedes in a non-empty --out."),
) -> None:
    """Generate the SketchPedes synthetic benchmark (CUHK-PEDES + WebPerson formats)."""
    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes

    config = SynthConfig(
        train_ids=train_ids,
        val_ids=val_ids,
        test_ids=test_ids,
        images_per_id=images_per_id,
        height=height,
        width=width,
        seed=seed,
        noise=noise,
        workers=workers,
        caption_mix=caption_mix,
        twin_fraction=twin_fraction,
        test_include=test_include,
        test_include_count=test_include_count,
    )
    summary = generate_sketchpedes(out, config, overwrite=overwrite)

    table = Table(title=f"SketchPedes {height}x{width}, seed {seed}  ->  {summary.out_dir}", title_justify="left")
    for header in ("split", "ids", "images", "captions", "corrupted captions"):
        table.add_column(header, justify="left" if header == "split" else "right")
    for split, counts in summary.counts.items():
        corrupted = f"{summary.corrupted_captions:,}" if split == "train" else "0"
        table.add_row(split, f"{counts['ids']:,}", f"{counts['images']:,}", f"{counts['captions']:,}", corrupted)
    console.print(table)
    if summary.corruption_kinds:
        kinds = ", ".join(f"{kind} {count:,}" for kind, count in summary.corruption_kinds.items())
        console.print(f"caption noise: {kinds} (details per caption in attributes.jsonl)")
    shards = ", ".join(str(path.relative_to(summary.out_dir)) for path in summary.parquet_files) or "none (no train split)"
    console.print(f"wrote reid_raw.json, attributes.jsonl, sketchpedes.json, imgs/ and {shards}")
    console.print(f"{summary.images:,} images in {summary.seconds:.1f} s ({summary.images_per_second:,.0f} images/s)")
