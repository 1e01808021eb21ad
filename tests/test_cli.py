"""The command line as a whole: the commands exist, unbuilt ones refuse, docs/cli.md is current."""

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gadms_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_every_command_is_registered_and_answers_help():
    """Each command runs its own --help (the app's description mentions these words too, so listing
    them in the top-level help proves nothing)."""
    for command in ("curate", "pretrain", "finetune", "eval", "retrieve", "export", "synth", "quickstart", "data"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, command
        assert f"Usage: gadms {command}" in result.output.replace("\n", " "), command
    unknown = runner.invoke(app, ["evaluate"])
    assert unknown.exit_code != 0


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("gadms ")


def test_cli_reference_is_current(tmp_path):
    """docs/cli.md is generated from the Typer app (`make docs`); regenerate and compare."""
    out = tmp_path / "cli.md"
    typer_bin = Path(sys.executable).with_name("typer")
    subprocess.run(
        [str(typer_bin), "gadms_cli.cli", "utils", "docs", "--name", "gadms", "--title", "gadms command line reference", "--output", str(out)],
        check=True, capture_output=True, cwd=ROOT,
    )
    assert (ROOT / "docs" / "cli.md").read_text() == out.read_text(), "docs/cli.md is stale: run `make docs`"
