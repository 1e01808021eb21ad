"""``gadms export``: a model as an open_clip folder or a Hugging Face Hub repo folder."""

from __future__ import annotations

from pathlib import Path

import typer

from gadms_cli.commands.common import cli_command, console


@cli_command
def export(
    model: str = typer.Argument(..., help="A gadms model or run folder (or anything --model takes elsewhere)."),
    out: Path = typer.Argument(..., help="Folder to write."),
    fmt: str = typer.Option("open_clip", "--format", help="open_clip (open_clip's local-dir: layout) or hf (the same + a model card)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Export a model for open_clip (``local-dir:OUT``) or the Hugging Face Hub (``hf-hub:ORG/NAME``)."""
    from gadms_cli.export import FORMATS, export_model
    from gadms_cli.errors import GadmsError
    from gadms_cli.model.resolve import load_model

    if fmt not in FORMATS:
        raise GadmsError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    written = export_model(load_model(model), out, fmt, overwrite)
    console.print(f"wrote {written}; load it with open_clip.create_model_and_transforms('local-dir:{written}')", highlight=False)
