"""``gadms data``: look at dataset folders before training on them.

``gadms data inspect DIR`` prints per-split counts (identities, images, captions, words per
caption) and the problems found, as a table or, with ``--json``, as one JSON object on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from gadms_cli.commands.common import cli_command, console

app = typer.Typer(
    name="data",
    help="Inspect benchmark and web-data folders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _report_table(report: dict) -> Table:
    table = Table(title=f"{report['format']}  {report['root']}", title_justify="left")
    for header in ("split", "ids", "images", "captions", "words/caption (mean)", "min", "max"):
        table.add_column(header, justify="left" if header == "split" else "right")
    for name, split in report["splits"].items():
        words = split["caption_words"]
        table.add_row(
            name,
            f"{split['ids']:,}",
            f"{split['images']:,}",
            f"{split['captions']:,}",
            f"{words['mean']:.1f}",
            str(words["min"]),
            str(words["max"]),
        )
    return table


@app.command("inspect")
@cli_command
def inspect(
    path: Path = typer.Argument(
        ..., help="Dataset folder (CUHK-PEDES, ICFG-PEDES, RSTPReid, WebPerson parquet or GA-DMS JSON), a .parquet or a .json."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout, nothing else."),
    skip_missing: bool = typer.Option(
        False, "--skip-missing", help="Skip missing or unreadable images (listed under problems) instead of failing."
    ),
    decode: bool = typer.Option(False, "--decode", help="Decode every benchmark image whole (finds truncated files; slower)."),
) -> None:
    """Count identities, images and captions per split and list what looks wrong."""
    from gadms_cli.data.inspect import inspect_dataset

    report = inspect_dataset(path, skip_missing=skip_missing, decode=decode)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console.print(_report_table(report))
    for problem in report["problems"]:
        console.print(f"[yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)
    if not report["problems"]:
        console.print("no problems found", style="green")
