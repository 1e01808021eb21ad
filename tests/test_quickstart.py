"""`gadms quickstart` end to end with a small data set and a few seconds of training."""

import json

import pytest
from typer.testing import CliRunner

from gadms_cli.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_quickstart_runs_end_to_end_and_reuses_its_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["quickstart", "--dir", "qs", "--train-ids", "40", "--minutes", "0.05", "--base-ids", "40", "--base-steps", "3",
            "--set", "model.arch=gadms-tiny", "--set", "train.batch_size=32"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "qs"
    metrics = json.loads((folder / "eval.json").read_text())
    # 100 test identities x 4 images, 2 captions each (the quickstart's SketchPedes settings).
    assert (metrics["gallery"], metrics["queries"]) == (400, 800)
    # eval.json is what the saved model gives: evaluating the folder again reproduces it exactly
    again_eval = runner.invoke(app, ["eval", "--bench", "qs/sketchpedes", "--model", "qs/model", "--json", "again.json"])
    assert again_eval.exit_code == 0, again_eval.output
    recomputed = json.loads((tmp_path / "again.json").read_text())
    assert {k: recomputed[k] for k in ("R1", "R5", "R10", "mAP")} == {k: metrics[k] for k in ("R1", "R5", "R10", "mAP")}
    assert (folder / "model" / "model.safetensors").is_file()
    html = (folder / "search.html").read_text()
    assert "a woman wearing a red coat" in html and html.count("<img") >= 10

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "reusing" in again.output and "run:" not in again.output
