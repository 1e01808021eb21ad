"""The ``openai`` captioner: an OpenAI-compatible chat-completions endpoint over plain HTTP.

Works with vLLM (``vllm serve Qwen/Qwen2.5-VL-7B-Instruct`` serves ``http://HOST:8000/v1``),
SGLang, llama.cpp's server, or OpenAI itself. Standard library only (``urllib``), so no client
package is needed.

* Images go inline as base64 ``data:`` URLs; each request carries a ``seed``.
* ``--concurrency`` requests are in flight at once (threads; the server does the batching).
* Each request has a ``--timeout`` (seconds). Timeouts, connection errors, HTTP 408/409/429/5xx
  and malformed answers are retried ``--retries`` times with exponential backoff (1 s, 2 s, 4 s,
  ... capped at 30 s; a numeric ``Retry-After`` header is honoured). When retries run out the
  run stops with one line (resume it later), for malformed answers too (a server that
  answers HTML is a wrong ``--base-url``, not a bad image); HTTP 400/413/422 (the server
  refusing this one request, e.g. an image it cannot read) becomes a ``server_rejected``
  rejection.
* The API key is read from the environment variable named by ``--api-key-env`` and sent as a
  bearer token. It is never printed, logged or written anywhere.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Sequence

from gadms_cli.curate.captioners import ChatReply, ChatRequest, GenerationSettings
from gadms_cli.errors import GadmsError

RETRIED_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
REJECTED_STATUS = frozenset({400, 413, 415, 422})
MAX_BACKOFF_S = 30.0
_DETAIL_CHARS = 200


class _Transient(Exception):
    """A failure worth retrying (``malformed`` says whether the server did answer, but unusably)."""

    def __init__(self, reason: str, *, malformed: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.malformed = malformed
        self.retry_after = retry_after


def image_data_url(image: bytes) -> str:
    """``data:image/<jpeg|png|webp>;base64,...`` for encoded image bytes (type from the file signature)."""
    if image.startswith(b"\x89PNG"):
        mime = "image/png"
    elif image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        mime = "image/webp"
    else:
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_DETAIL_CHARS]


def _error_detail(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's start."""
    try:
        payload = json.loads(body)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        message = error.get("message") if isinstance(error, dict) else None
        return _one_line(str(message if message else payload))
    except (ValueError, AttributeError):
        return _one_line(body.decode("utf-8", "replace"))


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def reply_text(payload: object) -> tuple[str, str | None]:
    """(text, finish_reason) of a chat-completions answer; raises ValueError when it has no text."""
    if not isinstance(payload, dict) or not isinstance(payload.get("choices"), list) or not payload["choices"]:
        raise ValueError("no 'choices' in the answer")
    choice = payload["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise ValueError("no text in choices[0].message.content")
    return content, choice.get("finish_reason")


class OpenAICaptioner:
    """Chat completions over HTTP; see the module docstring for retries and errors."""

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        generation: GenerationSettings = GenerationSettings(),
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 1.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise GadmsError(f"--base-url {base_url!r} must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)")
        if concurrency < 1:
            raise GadmsError(f"--concurrency must be 1 or more, got {concurrency}")
        if timeout <= 0:
            raise GadmsError(f"--timeout must be more than 0 seconds, got {timeout}")
        if retries < 0:
            raise GadmsError(f"--retries must be 0 or more, got {retries}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model_name = model
        self.generation = generation
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or None
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def __repr__(self) -> str:  # keeps the key out of any repr
        return f"OpenAICaptioner(url={self.url!r}, model={self.model_name!r}, api_key_env={self.api_key_env!r})"

    @property
    def identity(self) -> dict:
        return {"backend": self.backend, "model": self.model_name, **asdict(self.generation)}

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Replies in request order, ``--concurrency`` requests at a time."""
        if len(requests) <= 1 or self.concurrency == 1:
            replies = [self._request(request) for request in requests]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
                replies = list(pool.map(self._request, requests))
        rejected = [reply for reply in replies if reply.problem == "server_rejected"]
        if len(requests) >= 4 and len(rejected) == len(requests):
            # Every request refused: a setting is wrong (e.g. a text-only model), not the images.
            raise GadmsError(f"{self.url}: the server refused every request ({rejected[0].detail}); check --model {self.model_name}")
        return replies

    def body(self, request: ChatRequest) -> dict:
        """The JSON body of one chat-completions request."""
        user: list[dict] = []
        if request.image is not None:
            user.append({"type": "image_url", "image_url": {"url": image_data_url(request.image)}})
        user.append({"type": "text", "text": request.prompt.user})
        return {
            "model": self.model_name,
            "messages": [{"role": "system", "content": request.prompt.system}, {"role": "user", "content": user}],
            "max_tokens": self.generation.max_tokens,
            "temperature": self.generation.temperature,
            "top_p": self.generation.top_p,
            "seed": request.seed,
            "n": 1,
        }

    def _request(self, request: ChatRequest) -> ChatReply:
        data = json.dumps(self.body(request)).encode("utf-8")
        failure: _Transient | None = None
        for attempt in range(self.retries + 1):
            if failure is not None:
                delay = min(MAX_BACKOFF_S, self.backoff * 2 ** (attempt - 1))
                if failure.retry_after is not None:
                    delay = min(MAX_BACKOFF_S, max(0.0, failure.retry_after))
                time.sleep(delay)
            try:
                return self._post(data)
            except _Transient as exc:
                failure = exc
        assert failure is not None
        if failure.malformed:
            # A server that keeps answering with something other than a chat completion (an HTML
            # page, a proxy's error) is a wrong setting, not a bad image: stop like a dead server.
            raise GadmsError(
                f"{self.url}: {self.retries + 1} answers in a row were not chat completions ({failure}); check that "
                "--base-url points at an OpenAI-compatible server (usually ending in /v1), then run the same command again to resume"
            )
        raise GadmsError(
            f"{self.url}: no answer after {self.retries + 1} attempts ({failure}); check that the server runs and --base-url, "
            f"then run the same command again to resume"
        )

    def _post(self, data: bytes) -> ChatReply:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        http_request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http_request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc.read() or b"")
            if exc.code in RETRIED_STATUS:
                raise _Transient(f"HTTP {exc.code}: {detail}", retry_after=_retry_after(exc.headers)) from None
            if exc.code in REJECTED_STATUS:
                return ChatReply(None, "server_rejected", f"HTTP {exc.code}: {detail}")
            if exc.code in (401, 403):
                state = "set" if self._api_key else "not set"
                raise GadmsError(
                    f"{self.url}: HTTP {exc.code}, the server refused the API key; put the key in the environment variable "
                    f"named by --api-key-env (now {self.api_key_env}, {state})"
                ) from None
            if exc.code == 404:
                raise GadmsError(f"{self.url}: HTTP 404 ({detail}); check --base-url (usually ending in /v1) and --model {self.model_name}") from None
            raise GadmsError(f"{self.url}: HTTP {exc.code} ({detail})") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # refused, reset, timed out
            reason = getattr(exc, "reason", None) or exc
            raise _Transient(_one_line(f"{type(exc).__name__}: {reason}")) from None
        try:
            text, finish_reason = reply_text(json.loads(body))
        except ValueError as exc:  # JSONDecodeError is a ValueError
            raise _Transient(f"malformed answer: {_one_line(str(exc))}", malformed=True) from None
        if finish_reason == "length":
            return ChatReply(text, "truncated", "the reply reached --max-tokens")
        return ChatReply(text)
