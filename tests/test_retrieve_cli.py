"""`gadms retrieve` end to end: rankings against a by-hand brute force, reports, warnings, one-line errors."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from gadms_cli.cli import app
from gadms_cli.data.transforms import eval_transform
from gadms_cli.model.checkpoint import save_checkpoint
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer

runner = CliRunner()
COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60), "yellow": (230, 220, 40), "black": (20, 20, 20)}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    model = create_person_clip(arch="gadms-tiny")
    path = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(model, path)
    return path, model.eval()


@pytest.fixture
def gallery(tmp_path):
    root = tmp_path / "gallery"
    for i, (name, rgb) in enumerate(COLOURS.items()):
        image = Image.new("RGB", (32, 96), rgb)
        image.paste((255 - rgb[0], 255 - rgb[1], 255 - rgb[2]), (4, 8 + 10 * i, 28, 40 + 10 * i))
        folder = root / ("people" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{name}.jpg")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    return root


def brute_force_ranking(model, gallery, query_feature):
    """Independent reference: every readable image encoded by hand, ranked with Python's stable sort."""
    transform = eval_transform((96, 32))
    paths = sorted(p for p in gallery.rglob("*.jpg"))
    with torch.no_grad():
        feats = F.normalize(model.encode_image(torch.stack([transform(Image.open(p)) for p in paths])), dim=-1)
    scores = (feats @ query_feature).tolist()
    order = sorted(range(len(paths)), key=lambda i: -scores[i])
    return [str(paths[i].resolve()) for i in order], [scores[i] for i in order]


def text_feature(model, text):
    with torch.no_grad():
        return F.normalize(model.encode_text(Tokenizer(77)([text])), dim=-1)[0]


def invoke(*args):
    return runner.invoke(app, ["retrieve", *map(str, args)])


def test_text_queries_rank_like_brute_force_and_write_json_and_html(checkpoint, gallery, tmp_path):
    path, model = checkpoint
    queries = tmp_path / "queries.txt"
    queries.write_text("a man in a blue shirt\n\n<script>alert('x')</script> red coat\n", encoding="utf-8")
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    result = invoke("a woman wearing a red coat", "--gallery", gallery, "--model", path, "--queries", queries,
                    "--top-k", 3, "--json", out_json, "--html", out_html, "--explain", "--workers", 0)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "1 unreadable image(s) skipped: corrupt.png" in output
    assert "5 images (5 encoded, 0 reused, 0 dropped)" in output

    data = json.loads(out_json.read_text(encoding="utf-8"))
    texts = ["a woman wearing a red coat", "a man in a blue shirt", "<script>alert('x')</script> red coat"]
    assert [q["query"] for q in data["queries"]] == texts
    for query in data["queries"]:
        paths, scores = brute_force_ranking(model, gallery, text_feature(model, query["query"]))
        assert [r["path"] for r in query["results"]] == paths[:3]
        assert [r["score"] for r in query["results"]] == pytest.approx(scores[:3], abs=1e-5)
        tokens = query["explanation"]["tokens"]
        assert tokens[0]["token"] == "<start_of_text>" and tokens[0]["score"] == 0 and tokens[-1]["score"] == 0
    assert data["index"]["unreadable_files"] == ["corrupt.png"] and data["index"]["images"] == 5
    assert data["model_fingerprint"] and data["search"] == {"backend": "torch-exact", "top_k": 3}

    page = out_html.read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; red coat" in page
    assert page.count('src="data:image/jpeg;base64,') == 9  # 3 queries x top 3, thumbnails embedded


def test_second_run_reuses_the_index_and_an_image_query_finds_itself(checkpoint, gallery, tmp_path):
    path, model = checkpoint
    assert invoke("anyone", "--gallery", gallery, "--model", path, "--workers", 0).exit_code == 0
    example = gallery / "people" / "blue.jpg"
    out = tmp_path / "image.json"
    result = invoke("--image", example, "--gallery", gallery, "--model", path, "--top-k", 2, "--workers", 0, "--json", out)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "(0 encoded, 5 reused, 0 dropped)" in output and "image query" in output
    query = json.loads(out.read_text())["queries"][0]
    assert query["kind"] == "image" and query["explanation"] is None
    assert query["results"][0]["path"] == str(example.resolve()) and query["results"][0]["score"] == pytest.approx(1, abs=1e-5)


def test_model_from_the_environment_variable(checkpoint, gallery, monkeypatch):
    monkeypatch.setenv("GADMS_MODEL", str(checkpoint[0]))
    result = invoke("a person", "--gallery", gallery, "--workers", 0)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gallery", "{missing}"], "nothing to search for"),
        (["q", "--gallery", "{missing}"], "not a folder"),
        (["--image", "{gallery}/red.jpg", "--gallery", "{gallery}", "--explain"], "--explain needs a text query"),
        (["q", "--gallery", "{gallery}", "--queries", "{missing}"], "--queries"),
        (["q", "--gallery", "{gallery}", "--backend", "annoy"], "--backend annoy"),
    ],
)
def test_bad_input_gives_a_one_line_error(gallery, tmp_path, args, message):
    filled = [a.format(missing=tmp_path / "nope", gallery=gallery) for a in args]
    result = invoke(*filled)
    assert result.exit_code == 1 and message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_no_model_anywhere_names_the_options(gallery, tmp_path, monkeypatch):
    monkeypatch.delenv("GADMS_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)  # no gadms-quickstart/model here
    result = invoke("a person", "--gallery", gallery)
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "--model" in text and "GADMS_MODEL" in text and "quickstart" in text
