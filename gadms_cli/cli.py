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


# --- commands: one module each, in the order `gadms --help` lists them ---------------
from gadms_cli.commands.curate import app as curate_app  # noqa: E402
from gadms_cli.commands.data import app as data_app  # noqa: E402
from gadms_cli.commands.eval import eval_command  # noqa: E402
from gadms_cli.commands.export import export  # noqa: E402
from gadms_cli.commands.quickstart import quickstart  # noqa: E402
from gadms_cli.commands.retrieve import retrieve  # noqa: E402
from gadms_cli.commands.serve import serve  # noqa: E402
from gadms_cli.commands.synth import synth  # noqa: E402
from gadms_cli.commands.train import finetune, pretrain  # noqa: E402

app.add_typer(curate_app, name="curate")
app.command("pretrain")(pretrain)
app.command("finetune")(finetune)
app.command("eval")(eval_command)
app.command("retrieve")(retrieve)
app.command("serve")(serve)
app.command("export")(export)
app.command("synth")(synth)
app.command("quickstart")(quickstart)
app.add_typer(data_app, name="data")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
