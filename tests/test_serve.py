"""`gadms serve`: every endpoint of a real server on 127.0.0.1 against a brute-force ranking,
the error codes, the token, path traversal and symlink escapes, reindexing, concurrency."""

from __future__ import annotations

import http.client
import io
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from PIL import Image
from typer.testing import CliRunner

from gadms_cli.cli import app as cli_app
from gadms_cli.data.transforms import eval_transform
from gadms_cli.model.factory import create_person_clip
from gadms_cli.model.tokenizer import Tokenizer
from gadms_cli.retrieve import Retriever
from gadms_cli.serve.app import MAX_UPLOAD_BYTES, create_app
from gadms_cli.serve.service import SearchService, image_id

QUERY = "a woman in a red dress"


class LiveServer:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, application) -> None:
        self.server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def raw_get(self, path: str) -> int:
        """Status of a GET sent byte for byte (no client-side URL normalisation of '..')."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        status = connection.getresponse().status
        connection.close()
        return status

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes

    root = tmp_path_factory.mktemp("serve")
    generate_sketchpedes(root / "sp", SynthConfig(train_ids=0, val_ids=0, test_ids=6, images_per_id=2, height=96, width=32, seed=4))
    photos = root / "photos"
    shutil.copytree(root / "sp" / "imgs" / "test", photos / "people")
    secret = root / "secret.jpg"  # outside the gallery
    shutil.copy(next((photos / "people").iterdir()), secret)
    (photos / "escape.jpg").symlink_to(secret)
    return photos


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_person_clip(arch="gadms-tiny").eval()


@pytest.fixture(scope="module")
def service(gallery, model, one_thread):
    service = SearchService(Retriever(model, num_workers=0), gallery)
    service.reindex()
    return service


@pytest.fixture(scope="module")
def server(service):
    live = LiveServer(create_app(service))
    yield live
    live.stop()


def _brute_force(model, gallery: Path, query: torch.Tensor) -> list[tuple[str, float]]:
    """Every gallery file (links resolved to their target's pixels) ranked by cosine with ``query`` [D]."""
    transform = eval_transform(tuple(model.config.image_size))
    files = sorted(p for p in gallery.rglob("*.jpg"))
    with torch.no_grad():
        pixels = torch.stack([transform(Image.open(p).convert("RGB")) for p in files])
        images = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
    scores = images @ torch.nn.functional.normalize(query.float(), dim=-1)
    order = sorted(range(len(files)), key=lambda i: (-float(scores[i]), files[i].relative_to(gallery).as_posix()))
    return [(files[i].relative_to(gallery).as_posix(), float(scores[i])) for i in order]


def _text_embedding(model, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(Tokenizer(model.config.context_length)([text]))[0]


def test_health_and_info(server, gallery, service):
    health = httpx.get(f"{server.url}/api/health").json()
    assert health == {"status": "ok", "images": len(list(gallery.rglob("*.jpg"))) - 1} == {"status": "ok", "images": 12}
    info = httpx.get(f"{server.url}/api/info").json()
    assert info["images"] == 12 and info["gallery"] == "photos" and info["indexing"] is False
    assert info["model_fingerprint"] == service.retriever.fingerprint and len(info["model_fingerprint"]) == 64
    assert 0 <= info["index_age_s"] < 600 and info["limits"]["max_k"] == 100


def test_text_search_matches_a_brute_force_ranking(server, model, gallery):
    body = httpx.get(f"{server.url}/api/search", params={"q": QUERY, "k": 5}).json()
    expected = [item for item in _brute_force(model, gallery, _text_embedding(model, QUERY)) if item[0] != "escape.jpg"][:5]
    assert [r["path"] for r in body["results"]] == [path for path, _ in expected]
    assert [r["score"] for r in body["results"]] == pytest.approx([score for _, score in expected], abs=1e-4)
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
    for r in body["results"]:
        assert r["id"] == image_id(r["path"]) and r["thumbnail"] == f"/thumb/{r['id']}" and r["image"] == f"/image/{r['id']}"
    assert [w["word"] for w in body["explanation"]["words"]] == QUERY.split()
    assert max(w["score"] for w in body["explanation"]["words"]) == pytest.approx(1.0)


def test_search_by_an_indexed_image_and_by_an_upload(server, model, gallery):
    first = httpx.get(f"{server.url}/api/search", params={"q": QUERY, "k": 1}).json()["results"][0]
    picture = gallery / first["path"]
    with torch.no_grad():
        pixels = eval_transform(tuple(model.config.image_size))(Image.open(picture).convert("RGB"))[None]
        embedding = model.encode_image(pixels)[0]
    expected = [path for path, _ in _brute_force(model, gallery, embedding) if path != "escape.jpg"]
    by_id = httpx.get(f"{server.url}/api/search/image", params={"id": first["id"], "k": 4}).json()["results"]
    assert first["path"] not in [r["path"] for r in by_id]  # the image itself is left out
    assert [r["path"] for r in by_id] == [p for p in expected if p != first["path"]][:4]
    upload = httpx.post(f"{server.url}/api/search/image", params={"k": 4},
                        files={"image": ("query.jpg", picture.read_bytes(), "image/jpeg")}).json()["results"]
    assert [r["path"] for r in upload] == expected[:4] and upload[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_thumbnails_and_images_come_from_the_gallery(server, gallery):
    hit = httpx.get(f"{server.url}/api/search", params={"q": QUERY, "k": 1}).json()["results"][0]
    full = httpx.get(server.url + hit["image"])
    assert full.status_code == 200 and full.content == (gallery / hit["path"]).read_bytes()
    thumb = httpx.get(server.url + hit["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as picture:
        assert picture.format == "JPEG" and picture.size[0] <= 128 and picture.size[1] <= 256


@pytest.mark.parametrize("path", [
    "/image/../../../etc/passwd", "/thumb/..%2f..%2fetc%2fpasswd", "/image/%2e%2e/%2e%2e/etc/passwd",
    "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/image//etc/passwd", "/image/%2fetc%2fpasswd", "/thumb/people%2f0001_01.jpg",
    "/image/0123456789abcdef", "/static/../../pyproject.toml", "/static/%2e%2e/app.py",
])  # fmt: skip
def test_path_traversal_gets_404(server, path):
    assert server.raw_get(path) == 404


def test_a_symlink_out_of_the_gallery_is_never_returned_or_served(server, service):
    snapshot = service.current()
    assert "escape.jpg" in [entry.path for entry in snapshot.index.entries]  # indexed (links to files count) ...
    escape = image_id("escape.jpg")
    assert httpx.get(f"{server.url}/image/{escape}").status_code == 404  # ... but never served
    assert httpx.get(f"{server.url}/thumb/{escape}").status_code == 404
    results = httpx.get(f"{server.url}/api/search", params={"q": QUERY, "k": 100}).json()["results"]
    assert len(results) == 12 and "escape.jpg" not in [r["path"] for r in results]  # ... nor returned


@pytest.mark.parametrize("params, status, words", [
    ({"q": ""}, 400, "q is empty"), ({"q": "x" * 501}, 400, "at most 500"), ({"q": "a man", "k": "0"}, 400, "k must be"),
    ({"q": "a man", "k": "101"}, 400, "k must be"), ({"q": "a man", "k": "ten"}, 400, "whole number"),
    ({"q": "a man", "explain": "maybe"}, 400, "explain"),
])  # fmt: skip
def test_bad_search_requests_are_400_with_a_json_error(server, params, status, words):
    response = httpx.get(f"{server.url}/api/search", params=params)
    assert response.status_code == status and words in response.json()["error"]


def test_bad_uploads_and_unknown_ids(server):
    url = f"{server.url}/api/search/image"
    assert httpx.post(url, files={"image": ("a.txt", b"not a picture", "text/plain")}).status_code == 415
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    assert httpx.post(url, files={"image": ("a.gif", gif.getvalue(), "image/gif")}).status_code == 415
    assert httpx.post(url, files={"image": ("big.jpg", b"\xff" * (MAX_UPLOAD_BYTES + 1), "image/jpeg")}).status_code == 413
    assert httpx.post(url).status_code == 400
    assert httpx.get(url, params={"id": "0123456789abcdef"}).status_code == 404
    assert httpx.get(url).status_code == 400


def test_concurrent_queries_get_the_sequential_answers(server):
    queries = ["a man in blue jeans", "a woman with long hair", QUERY, "a person carrying a backpack"] * 4
    sequential = {q: httpx.get(f"{server.url}/api/search", params={"q": q, "k": 5}).json()["results"] for q in set(queries)}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: httpx.get(f"{server.url}/api/search", params={"q": q, "k": 5}, timeout=60).json()["results"], queries))
    assert all(answer == sequential[q] for q, answer in zip(queries, answers))


def test_token_guards_the_api_and_the_images(service):
    live = LiveServer(create_app(service, token="s3cret"))
    try:
        assert httpx.get(f"{live.url}/api/health").status_code == 401
        assert httpx.get(f"{live.url}/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{live.url}/api/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        body = httpx.get(f"{live.url}/api/search", params={"q": QUERY, "k": 1, "token": "s3cret"}).json()
        thumbnail = body["results"][0]["thumbnail"]
        assert thumbnail.endswith("?token=s3cret") and httpx.get(live.url + thumbnail).status_code == 200
        assert httpx.get(live.url + thumbnail.split("?")[0]).status_code == 401
        assert httpx.get(f"{live.url}/").status_code == 200  # the page itself holds no data
    finally:
        live.stop()


def test_503_until_the_first_index_then_reindex_picks_up_new_photos(gallery, model, tmp_path):
    from fastapi.testclient import TestClient

    photos = tmp_path / "photos"
    shutil.copytree(gallery / "people", photos)
    service = SearchService(Retriever(model, num_workers=0), photos, tmp_path / "index")
    client = TestClient(create_app(service))
    assert client.get("/api/health").status_code == 503
    assert client.get("/api/search", params={"q": QUERY}).status_code == 503
    response = client.post("/api/reindex")
    assert response.status_code == 202
    deadline = time.monotonic() + 60
    while client.get("/api/health").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("/api/health").json() == {"status": "ok", "images": 12}
    shutil.copy(photos / "0001_01.jpg", photos / "new-photo.jpg")
    assert client.post("/api/reindex").status_code == 202
    deadline = time.monotonic() + 60
    while client.get("/api/health").json().get("images") != 13 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get("/api/health").json() == {"status": "ok", "images": 13}
    assert image_id("new-photo.jpg") in service.current().rows_by_id


def test_cli_refuses_a_public_address_without_a_token_and_a_missing_gallery(tmp_path, monkeypatch):
    monkeypatch.delenv("GADMS_SERVE_TOKEN", raising=False)
    (tmp_path / "photos").mkdir()
    result = CliRunner().invoke(cli_app, ["serve", "--gallery", str(tmp_path / "photos"), "--host", "0.0.0.0", "--model", "gadms-tiny"])
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1 and "--token" in result.output
    missing = CliRunner().invoke(cli_app, ["serve", "--gallery", str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "--gallery" in missing.output and "not a folder" in missing.output
