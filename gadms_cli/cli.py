"""The ``gadms`` command line: one Typer app, one module per command in ``commands/``.

Command modules import heavy libraries (torch, open_clip) inside the command
body so that ``gadms --help`` stays fast.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting make torch many times slower as soon as another
# process (a DataLoader worker, a second job) shares the cores; sleeping waits cost little.
# Set before torch is imported (the command modules import it lazily). A user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402

from gadms_cli import __version__  # noqa: E402
from gadms_cli.commands.common import fail  # noqa: E402

app = typer.Typer(
    name="gadms",
    help="Text-based person retrieval with GA-DMS: curate, pretrain, fine-tune, evaluate, search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gadms {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
) -> None:
    """Text-based person retrieval with GA-DMS."""


def _register_not_built(name: str, summary: str, issue: str) -> None:
    """Register a command that is planned but not built: it says so in one line and exits 2."""

    @app.command(
        name,
        help=f"{summary} (not built yet)",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _command(ctx: typer.Context) -> None:
        fail(f"'gadms {name}' is not built yet ({issue}); see CHANGELOG.md for what is available", code=2)


# --- commands -------------------------------------------------------------------
# Each line below wires one command module; replace a _register_not_built line
# when its module lands.
_register_not_built("curate", "Turn web image-text data into WebPerson-style person-centric pairs.", "curation issue")
from gadms_cli.commands.train import finetune, pretrain  # noqa: E402

app.command("pretrain")(pretrain)
app.command("finetune")(finetune)
from gadms_cli.commands.eval import eval_command  # noqa: E402

app.command("eval")(eval_command)
_register_not_built("retrieve", "Search a photo folder with a sentence.", "retrieval issue")
from gadms_cli.commands.synth import synth  # noqa: E402
app.command("synth")(synth)
_register_not_built("quickstart", "The offline end-to-end demo.", "quickstart issue")
from gadms_cli.commands.data import app as data_app  # noqa: E402
app.add_typer(data_app, name="data")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
