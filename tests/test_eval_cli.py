"""`gadms eval` end to end: numbers against an independent brute-force computation, JSON, bad input."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from gadms_cli.cli import app
from gadms_cli.model.checkpoint import save_checkpoint
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer

runner = CliRunner()

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (230, 220, 40)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A hand-written CUHK-PEDES folder: 4 identities x 2 images, 2 captions each, test split."""
    root = tmp_path_factory.mktemp("cuhk")
    records = []
    for pid, (name, rgb) in enumerate(COLOURS.items(), start=1):
        for shot in range(2):
            path = root / "imgs" / "test" / f"{pid:04d}_{shot}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 96), tuple(max(0, c - 40 * shot) for c in rgb)).save(path)
            records.append({
                "split": "test", "id": pid, "file_path": f"test/{path.name}",
                "captions": [f"a person in a {name} coat", f"someone wearing {name} clothes"],
            })
    (root / "reid_raw.json").write_text(json.dumps(records))
    return root, records


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = create_person_clip(arch="gadms-tiny", image_size=(96, 32))
    path = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(model, path)
    return path, model.eval()


def brute_force(model, records, root):
    """Independent reference: encode by hand, rank every query with a stable sort, count in loops."""
    from gadms_cli.data.transforms import eval_transform

    transform = eval_transform((96, 32))
    with torch.no_grad():
        images = torch.stack([transform(Image.open(root / "imgs" / r["file_path"])) for r in records])
        image_feats = F.normalize(model.encode_image(images), dim=-1)
        captions = [c for r in records for c in r["captions"]]
        text_feats = F.normalize(model.encode_text(Tokenizer(77)(captions)), dim=-1)
    query_ids = [r["id"] for r in records for _ in r["captions"]]
    gallery_ids = [r["id"] for r in records]
    r1 = ap_sum = 0.0
    for q, row in enumerate((text_feats @ image_feats.t()).tolist()):
        order = sorted(range(len(row)), key=lambda g: -row[g])  # Python's sort is stable
        matches = [gallery_ids[g] == query_ids[q] for g in order]
        r1 += matches[0]
        hits, precision_sum = 0, 0.0
        for k, m in enumerate(matches, start=1):
            if m:
                hits += 1
                precision_sum += hits / k
        ap_sum += precision_sum / hits
    n = len(query_ids)
    return 100 * r1 / n, 100 * ap_sum / n


def test_eval_matches_a_brute_force_computation_and_writes_json(bench, checkpoint, tmp_path):
    root, records = bench
    path, model = checkpoint
    out = tmp_path / "result.json"
    ranking = tmp_path / "ranking.jsonl"
    result = runner.invoke(app, ["eval", "--bench", str(root), "--model", str(path), "--json", str(out),
                                 "--save-ranking", str(ranking), "--top-k", "3", "--workers", "0"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["queries"] == 16 and data["gallery"] == 8 and data["split"] == "test"
    r1, map_ = brute_force(model, records, root)
    assert data["R1"] == pytest.approx(r1, abs=1e-6) and data["mAP"] == pytest.approx(map_, abs=1e-4)
    lines = [json.loads(line) for line in ranking.read_text().splitlines()]
    assert len(lines) == 16 and all(len(line["top"]) == 3 for line in lines)
    assert lines[0]["query"] == records[0]["captions"][0]
    scores = [t["score"] for t in lines[0]["top"]]
    assert scores == sorted(scores, reverse=True)


def test_named_benchmark_not_found_says_where_it_looked(tmp_path):
    result = runner.invoke(app, ["eval", "--bench", "rstpreid", "--data-root", str(tmp_path), "--model", "gadms-tiny"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) <= 3  # one message, possibly wrapped by the terminal width
    text = " ".join(result.output.split())
    assert str(tmp_path / "RSTPReid") in text and "github.com/NjtechCVLab/RSTPReid-Dataset" in text
    assert "Traceback" not in result.output


def test_missing_split_and_mismatched_checkpoint_are_one_line_errors(bench, checkpoint, tmp_path):
    root, _ = bench
    path, model = checkpoint
    result = runner.invoke(app, ["eval", "--bench", str(root), "--model", str(path), "--split", "val"])
    assert result.exit_code == 1 and "no 'val' split" in " ".join(result.output.split())

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((path / "config.json").read_text())
    weights = load_file(str(path / "model.safetensors"))
    weights.pop("clip.text_projection")
    weights["clip.unexpected_extra"] = torch.zeros(1)
    save_file(weights, str(broken / "model.safetensors"))
    result = runner.invoke(app, ["eval", "--bench", str(root), "--model", str(broken)])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "clip.text_projection" in text and "clip.unexpected_extra" in text
