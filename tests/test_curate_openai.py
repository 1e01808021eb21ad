"""The ``openai`` captioner against a chat-completions server started here on 127.0.0.1.

The server (http.server in a thread) plays a script of behaviours per request: a good answer,
HTTP errors, a slow answer (the client times out), malformed answers. The end-to-end test runs
``gadms curate`` and ``gadms curate templates`` through the command line against it.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from gadms_cli.curate.captioner_openai import OpenAICaptioner, image_data_url, reply_text
from gadms_cli.curate.captioners import ChatRequest, GenerationSettings
from gadms_cli.curate.prompts import Prompt, caption_prompt
from gadms_cli.errors import GadmsError

SECRET = "sk-test-not-a-real-key-123"
FILL = {
    "person": ["A young woman", "An older man"], "pronoun": ["She", "He"], "hair": ["short black hair", "long brown hair"],
    "headwear": ["a grey cap"], "top": ["a white T-shirt", "a red sweater"], "outerwear": ["a navy jacket"],
    "bottom": ["blue jeans", "black trousers"], "shoes": ["white sneakers"], "belongings": ["a black backpack"],
    "accessories": ["glasses"], "pose": ["walking"],
}  # fmt: skip


def fill_template(user_text: str, seed: int) -> str:
    """What a well-behaved captioner answers: the prompt's template with placeholders filled from the seed."""
    template = user_text.split("template:\n", 1)[1].split("\n", 1)[0]
    rng = random.Random(seed)
    return re.sub(r"\[(\w+)\]", lambda m: rng.choice(FILL[m.group(1)]), template)


class ChatServer:
    """A chat-completions server on 127.0.0.1; ``script`` is consumed one behaviour per request
    (then ``default``). Behaviours: "ok", "hold" (ok after 0.1 s, so concurrent requests overlap), "slow",
    "malformed", "no_content", "length", or an HTTP status."""

    def __init__(self, default="ok"):
        self.script: list = []
        self.default = default
        self.received: list[dict] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    behaviour = server.script.pop(0) if server.script else server.default
                    server.received.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(behaviour, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _send(self, status, payload: bytes, headers=()):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def _answer(self, behaviour, body):
                if isinstance(behaviour, int):
                    error = json.dumps({"error": {"message": f"scripted {behaviour}", "type": "test"}}).encode()
                    self._send(behaviour, error, [("Retry-After", "0")] if behaviour == 429 else [])
                    return
                if behaviour == "malformed":
                    self._send(200, b"{this is not json")
                    return
                if behaviour == "no_content":
                    self._send(200, json.dumps({"choices": [{"message": {"role": "assistant"}}]}).encode())
                    return
                if behaviour == "slow":
                    time.sleep(1.0)
                if behaviour == "hold":
                    time.sleep(0.1)
                user = body["messages"][-1]["content"]
                text_part = user[-1]["text"] if isinstance(user, list) else user
                if "template:\n" in text_part:
                    text = fill_template(text_part, body.get("seed", 0))
                else:  # a template request: the caption rewritten
                    text = "[person] with [hair] wears [top] and [bottom]."
                    if "coat" in text_part.rsplit("Description: ", 1)[1]:
                        text = "[person] in [outerwear] carries [belongings] and wears [shoes]."
                reason = "length" if behaviour == "length" else "stop"
                payload = {"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}]}  # fmt: skip
                try:
                    self._send(200, json.dumps(payload).encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    chat = ChatServer()
    yield chat
    chat.close()


TEMPLATE = "[person] with [hair] is wearing [top], [bottom] and [shoes]."
IMAGE = b"\xff\xd8\xff\xe0 fake jpeg bytes"


def captioner(server, **options) -> OpenAICaptioner:
    defaults = {"timeout": 5.0, "retries": 3, "backoff": 0.01, "concurrency": 4}
    return OpenAICaptioner(server.base_url, "qwen-test", **{**defaults, **options})


def request(seed=7) -> ChatRequest:
    return ChatRequest(caption_prompt(TEMPLATE), IMAGE, seed)


def test_request_body_and_answer(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)
    client = captioner(server, api_key_env="MY_KEY", generation=GenerationSettings(max_tokens=50, temperature=0.2, top_p=0.8))
    [reply] = client.generate([request(seed=11)])
    assert reply.problem is None and reply.text == fill_template(caption_prompt(TEMPLATE).user, 11)
    [sent] = server.received
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == f"Bearer {SECRET}"
    body = sent["body"]
    assert (body["model"], body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == ("qwen-test", 50, 0.2, 0.8, 11)
    system, user = body["messages"]
    assert system == {"role": "system", "content": caption_prompt(TEMPLATE).system}
    image_part, text_part = user["content"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,") and base64.b64decode(url.split(",", 1)[1]) == IMAGE
    assert text_part == {"type": "text", "text": caption_prompt(TEMPLATE).user}
    assert SECRET not in repr(client) and SECRET not in str(client.identity)


def test_no_key_means_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    captioner(server).generate([request()])
    assert server.received[0]["auth"] is None


def test_retries_transient_errors_then_succeeds(server):
    server.script = [503, 429, 500]
    [reply] = captioner(server, retries=3).generate([request(seed=5)])
    assert reply.problem is None and reply.text == fill_template(caption_prompt(TEMPLATE).user, 5)
    assert len(server.received) == 4


def test_gives_up_after_retries_with_one_line_naming_the_server(server):
    server.default = 503
    with pytest.raises(GadmsError) as caught:
        captioner(server, retries=2).generate([request()])
    assert len(server.received) == 3
    message = str(caught.value)
    assert "no answer after 3 attempts" in message and server.base_url in message and "HTTP 503" in message


def test_timeout_is_retried(server):
    server.script = ["slow"]
    start = time.perf_counter()
    [reply] = captioner(server, timeout=0.3, retries=2).generate([request(seed=3)])
    assert reply.problem is None and reply.text == fill_template(caption_prompt(TEMPLATE).user, 3)
    assert len(server.received) == 2
    assert time.perf_counter() - start < 1.0  # did not wait for the slow answer


def test_timeout_every_time_fails_the_run(server):
    server.default = "slow"
    with pytest.raises(GadmsError, match="no answer after 2 attempts .*(timed out|TimeoutError)"):
        captioner(server, timeout=0.2, retries=1).generate([request()])


def test_malformed_answers(server):
    server.script = ["malformed", "no_content"]
    [reply] = captioner(server, retries=2).generate([request(seed=9)])
    assert reply.problem is None and reply.text == fill_template(caption_prompt(TEMPLATE).user, 9)
    assert len(server.received) == 3
    server.default = "malformed"
    with pytest.raises(GadmsError, match=r"2 answers in a row were not chat completions \(malformed answer.*check that --base-url"):
        captioner(server, retries=1).generate([request()])


def test_truncated_and_rejected_requests(server):
    server.script = ["length", 400]
    client = captioner(server, concurrency=1)
    truncated, rejected = client.generate([request(), request()])
    assert truncated.problem == "truncated" and truncated.text
    assert rejected.problem == "server_rejected" and "HTTP 400: scripted 400" in rejected.detail
    server.default = 400
    with pytest.raises(GadmsError, match="refused every request .*--model qwen-test"):
        client.generate([request(seed) for seed in range(4)])


def test_auth_and_not_found_errors_are_one_line_and_keep_the_key_secret(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)
    server.default = 401
    with pytest.raises(GadmsError) as caught:
        captioner(server, api_key_env="MY_KEY").generate([request()])
    assert "--api-key-env (now MY_KEY, set)" in str(caught.value) and SECRET not in str(caught.value)
    server.default = 404
    with pytest.raises(GadmsError, match="HTTP 404 .*--base-url .*--model qwen-test"):
        captioner(server).generate([request()])


def test_server_down_is_retried_then_one_line(server):
    url = server.base_url
    server.close()
    client = OpenAICaptioner(url, "m", retries=1, backoff=0.01, timeout=1.0)
    with pytest.raises(GadmsError, match=r"no answer after 2 attempts .*Connection ?[Rr]efused"):
        client.generate([request()])


def test_concurrency_and_order(server):
    # each answer waits 0.1 s: an instant fake server can finish a request before the next starts
    server.default = "hold"
    client = captioner(server, concurrency=4)
    seeds = list(range(12))
    replies = client.generate([request(seed) for seed in seeds])
    assert [r.text for r in replies] == [fill_template(caption_prompt(TEMPLATE).user, s) for s in seeds]
    assert server.max_in_flight >= 2


def test_helpers():
    assert image_data_url(b"\x89PNG....").startswith("data:image/png;base64,")
    assert reply_text({"choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]}) == ("ab", None)
    with pytest.raises(ValueError):
        reply_text({"choices": []})
    with pytest.raises(GadmsError, match="--base-url"):
        OpenAICaptioner("127.0.0.1:8000/v1", "m")
    assert Prompt("s", "u").user == "u"


def test_cli_end_to_end(server, tmp_path, monkeypatch):
    """`gadms curate` (no sub-command) and `gadms curate templates` through the command line."""
    from gadms_cli.cli import app
    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
    from gadms_cli.data.webperson import open_webperson

    monkeypatch.setenv("CURATE_KEY", SECRET)
    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=3, val_ids=0, test_ids=0, images_per_id=2, height=96, width=32))
    runner = CliRunner()
    common = ["--model", "qwen-test", "--base-url", server.base_url, "--api-key-env", "CURATE_KEY", "--retries", "1"]
    result = runner.invoke(app, ["curate", str(tmp_path / "sp" / "imgs"), "--out", str(tmp_path / "out"), "--detector", "none", "--shard-size", "4", *common])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and SECRET not in result.output
    records = list(open_webperson(tmp_path / "out"))
    assert len(records) == 6 and all(r.caption1 and r.caption2 and r.caption1 != r.caption2 for r in records)
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    captions = tmp_path / "captions.txt"
    captions.write_text("A man in a long grey coat.\nA woman with a red bag.\n")
    result = runner.invoke(app, ["curate", "templates", str(captions), "--out", str(tmp_path / "t.txt"), "--count", "5", *common])
    assert result.exit_code == 0, result.output
    lines = [line for line in (tmp_path / "t.txt").read_text().splitlines() if not line.startswith("#")]
    assert sorted(lines) == ["[person] in [outerwear] carries [belongings] and wears [shoes].", "[person] with [hair] wears [top] and [bottom]."]
    # the new bank drives a run
    result = runner.invoke(app, ["curate", "run", str(tmp_path / "sp" / "imgs"), "--out", str(tmp_path / "out2"), "--detector", "none",
                                 "--templates", str(tmp_path / "t.txt"), *common])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {r.template_id1 for r in _rows(tmp_path / "out2")} | {r.template_id2 for r in _rows(tmp_path / "out2")} == {0, 1}

    server.default = 401
    result = runner.invoke(app, ["curate", str(tmp_path / "sp" / "imgs"), "--out", str(tmp_path / "out3"), "--detector", "none", *common])
    assert result.exit_code == 1 and "--api-key-env" in result.output and SECRET not in result.output


def _rows(out):
    from types import SimpleNamespace

    import pyarrow.parquet as pq

    return [SimpleNamespace(**row) for row in pq.read_table(out / "data", columns=["template_id1", "template_id2"]).to_pylist()]


def test_cli_server_answering_html_stops_then_resumes(server, tmp_path, monkeypatch):
    """A server answering 200 with a non-JSON page: non-zero exit with one line, no unit marked
    finished; the same command against a working server then captions every image."""
    from gadms_cli.cli import app
    from gadms_cli.data.synth import SynthConfig, generate_sketchpedes
    from gadms_cli.data.webperson import open_webperson

    generate_sketchpedes(tmp_path / "sp", SynthConfig(train_ids=3, val_ids=0, test_ids=0, images_per_id=2, height=96, width=32))
    runner = CliRunner()
    args = ["curate", str(tmp_path / "sp" / "imgs"), "--out", str(tmp_path / "out"), "--detector", "none", "--shard-size", "4",
            "--model", "qwen-test", "--base-url", server.base_url, "--retries", "1"]
    server.default = "malformed"
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "were not chat completions" in result.output and "--base-url" in result.output
    assert not list((tmp_path / "out").rglob("*.parquet"))  # nothing written, so nothing counts as finished
    server.default = "ok"
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(list(open_webperson(tmp_path / "out"))) == 6
